"""The results contract: what ``summary.json`` holds, its version and its JSON Schema.

``summary.json`` is the one record of a run that the tracker, the model cards, ``mbi-predict explain``, the CLI and
the demo read. Its shape is declared in ``mbi_predict/resources/summary.schema.json`` (JSON Schema draft 2020-12)
and versioned by ``schema_version`` (`SCHEMA_VERSION`: the major number changes when a key is removed or changes
meaning, the minor number when keys are added).

Contract: `summary_header` builds the run-level blocks from the loaded inputs (the ``data`` provenance, the
``validation`` plan, the config) around the per-model blocks; `with_tracking` returns a NEW summary with the facts
the tracker reports (MLflow run ids, final-model URIs), so no sink writes into the results; `validate_summary`
checks a summary against the schema.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.data.schema import STUDY_TRAITS
from mbi_predict.io import json_safe
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import ITT_NOTE
from mbi_predict.validate.metrics import PRIMARY_METRIC

#: the version of the summary.json contract (``resources/summary.schema.json``)
SCHEMA_VERSION = "1.0"
SCHEMA_RESOURCE = "summary.schema.json"


@dataclass(frozen=True)
class CodeProvenance:
    """Which code made the run (given by the caller: the package version and the git commit of its checkout)."""

    package_version: str
    git_commit: str | None


def summary_header(inputs: RunInputs, models: dict[str, dict], code: CodeProvenance) -> dict[str, Any]:
    """The summary's run-level blocks around the per-model blocks (``mlflow_run_id`` None until tracked)."""
    config, frame, data, plan = inputs.config, inputs.frame, inputs.data, inputs.plan
    validation = {
        "scheme": plan.scheme, "note": plan.note, "held_out": [f.label for f in plan.folds],
        "skipped": list(plan.skipped), "trials": list(plan.trials), "min_trial_size": config.validation.min_trial_size,
        "pooling": {"method": config.validation.pooling_method, "hksj": config.validation.hksj,
                    "level": config.validation.level,
                    "scales": "c_statistic pooled on the logit scale, oe_ratio on the log scale (estimates and "
                              "intervals back-transformed; tau2 on the pooling scale); other metrics as they are"},
        "bootstrap": config.validation.bootstrap, "itt_note": ITT_NOTE,
        "primary_metric": PRIMARY_METRIC[data.task],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "mlflow_run_id": None, "experiment": config.experiment, "outcome": config.outcome,
        "outcome_type": data.task, "control_type": data.control_type,
        "comparison": {"control_type": data.control_type},
        "covariates": list(data.covariates),
        "data": {**inputs.provenance, "n_participants": int(len(frame)), "n_trials": int(frame["trial_id"].nunique()),
                 "analysed": {"n_participants": data.n, "n_trials": int(len(np.unique(data.trial))),
                              "n_missing_outcome": int((~np.isfinite(data.y)).sum())},
                 "trials": trial_descriptors(frame)},
        "validation": validation, "models": models, "seed": config.seed,
        "package_version": code.package_version, "git_commit": code.git_commit,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
    }


def trial_descriptors(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-trial design facts for the model card: sizes by arm, control kinds and study-level traits."""
    rows = []
    for trial_id, trial in frame.groupby("trial_id", sort=True):
        row: dict[str, Any] = {"trial_id": str(trial_id), "n": int(len(trial)), "n_mbi": int((trial["arm"] == 1).sum()),
                               "n_control": int((trial["arm"] == 0).sum()),
                               "control_types": sorted({str(c) for c in trial["control_type"].dropna()})}
        for trait in STUDY_TRAITS:
            if trait in trial.columns and trial[trait].notna().any():
                value = trial[trait].dropna().iloc[0]
                row[trait] = value.item() if hasattr(value, "item") else value
        rows.append(row)
    return rows


def with_tracking(summary: dict[str, Any], run_id: str, model_runs: dict[str, str],
                  final_models: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A new summary with the tracker's facts: the parent run id, each model's final-model URI and tuned
    parameters (``final_models``: model -> (URI, params)) and its MLflow run id. ``summary`` is not changed."""
    tracked = {**summary, "mlflow_run_id": run_id, "models": {}}
    for name, block in summary["models"].items():
        block = dict(block)
        if name in final_models:
            block["final_model_uri"], block["final_model_params"] = final_models[name]
        if name in model_runs:
            block["mlflow_run_id"] = model_runs[name]
        tracked["models"][name] = block
    return tracked


@lru_cache(maxsize=1)
def summary_schema() -> dict[str, Any]:
    """The JSON Schema of summary.json shipped with the package."""
    text = resources.files("mbi_predict.resources").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def schema_errors(summary: dict[str, Any]) -> list[str]:
    """Where ``summary`` (as written to summary.json: NaN as null) breaks the schema, one line per problem."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(summary_schema())
    errors = sorted(validator.iter_errors(json_safe(summary)), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message[:300]}"
            for error in errors]


def validate_summary(summary: dict[str, Any]) -> None:
    """Raise ValueError naming the first problems when ``summary`` does not follow the schema."""
    errors = schema_errors(summary)
    if errors:
        raise ValueError(f"summary.json breaks {SCHEMA_RESOURCE} ({len(errors)} problems): " + "; ".join(errors[:5]))
