"""summary.json follows its JSON Schema (``mbi_predict/resources/summary.schema.json``, draft 2020-12)."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from mbi_predict.pipeline.summary import SCHEMA_VERSION, schema_errors, summary_schema, validate_summary, with_tracking
from pinned_run import PINNED


def test_the_schema_is_valid_draft_2020_12_and_ships_with_the_package():
    text = resources.files("mbi_predict.resources").joinpath("summary.schema.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema == summary_schema()


def test_a_fresh_run_follows_the_schema(pinned_summary):
    assert pinned_summary["schema_version"] == SCHEMA_VERSION
    assert schema_errors(pinned_summary) == []


def test_the_pinned_summary_follows_the_schema():
    assert schema_errors(json.loads(PINNED.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("break_it, where", [
    (lambda s: s.pop("schema_version"), "(top level)"),
    (lambda s: s.update(schema_version="2.0"), "schema_version"),
    (lambda s: s.update(finished_at="2024-01-01"), "(top level)"),       # a key readers guessed at
    (lambda s: s["models"]["xgboost"].update(params={}), "models.xgboost"),
    (lambda s: s["models"]["xgboost"].pop("pooled"), "models.xgboost"),
    (lambda s: s["heterogeneity"].update(verdict="maybe"), "heterogeneity.verdict"),
])
def test_the_schema_catches_a_broken_summary(break_it, where):
    summary = json.loads(PINNED.read_text(encoding="utf-8"))
    break_it(summary)
    errors = schema_errors(summary)
    assert errors and errors[0].startswith(where), errors
    with pytest.raises(ValueError, match="breaks summary.schema.json"):
        validate_summary(summary)


def test_tracking_facts_make_a_new_summary():
    summary = json.loads(PINNED.read_text(encoding="utf-8"))
    before = copy.deepcopy(summary)
    tracked = with_tracking(summary, "a" * 32, {name: "b" * 32 for name in summary["models"]},
                            {"xgboost": ("models:/m-1", {"max_depth": 3})})
    assert summary == before                                  # the results are not written into
    assert tracked["mlflow_run_id"] == "a" * 32
    assert tracked["models"]["xgboost"]["final_model_uri"] == "models:/m-1"
    assert tracked["models"]["xgboost"]["final_model_params"] == {"max_depth": 3}
    assert "final_model_uri" not in tracked["models"]["reference"]
    assert list(tracked) == list(summary)                     # keys keep their place
    assert schema_errors(tracked) == []
