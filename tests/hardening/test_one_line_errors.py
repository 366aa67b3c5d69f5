"""Class 5, internal errors where a one-line exit-2 error is promised: odd numeric text, header-only and empty files,
infinite values reaching `predict`, output paths that are folders or cannot be created, an unknown search-space
parameter (whose tuning trial optuna used to log with a traceback)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from hardening_helpers import invoke, one_line_error
from mbi_predict.data.readers import read_raw
from mbi_predict.deploy import check_against_signature, read_table
from mbi_predict.errors import DataError


def test_header_only_raw_file(consortium):
    path = consortium / "raw" / "T01.csv"
    path.write_text(path.read_text().split("\n", 1)[0] + "\n")
    one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", consortium / "ipd.parquet"),
                   "T01.csv", "no data rows")
    with pytest.raises(DataError, match="no data rows"):
        read_raw(path)


@pytest.mark.parametrize("content", ["", "participant_id,age\n"])
def test_empty_prediction_file(tmp_path, content):
    data = tmp_path / "new.csv"
    data.write_text(content)
    with pytest.raises(DataError):
        read_table(data)
    one_line_error(invoke("predict", "--model", tmp_path / "none", "--data", data, "--out", tmp_path / "p.csv"),
                   "new.csv")


def test_infinite_inputs_to_predict_are_refused_without_the_value():
    schema = Schema([ColSpec("double", "age"), ColSpec("string", "gender")])
    frame = pd.DataFrame({"participant_id": ["a", "b"], "age": [30.0, np.inf], "gender": ["female", "male"]})
    with pytest.raises(DataError) as excinfo:
        check_against_signature(frame, schema, file="new.csv")
    assert "column age" in str(excinfo.value) and "inf" not in str(excinfo.value).split(":", 1)[1]


def test_output_paths_that_are_folders_or_cannot_be_created(consortium, tmp_path):
    folder = tmp_path / "table.parquet"
    folder.mkdir()
    one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", folder), "is a folder")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", blocker / "ipd.parquet"),
                   "cannot write")
    assert blocker.read_text() == "x" and not any(folder.iterdir())


def test_an_unknown_search_space_parameter_is_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "experiment: bad_space\ndata: {simulate: {n_trials: 3, n: 300, seed: 1}}\noutcome: distress_fu1_6\n"
        "models:\n  - name: enet\n    estimator: elastic_net\n    tuning:\n      n_trials: 2\n"
        "      search_space: {alphaa: {type: int, low: 2, high: 4}}\n"
        "validation: {scheme: kfold, folds: 2, n_jobs: 1}\n"
        "tracking: {enabled: false}\n")
    one_line_error(invoke("run", config, "--out", tmp_path / "out", "--no-progress"), "alphaa")


def test_brackets_in_a_path_are_printed_as_text_not_markup(tmp_path):
    one_line_error(invoke("describe", tmp_path / "[/bold]x[red].parquet"), "[/bold]x[red].parquet", "not found")
