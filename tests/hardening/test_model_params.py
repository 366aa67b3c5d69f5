"""Model hyper-parameters a model would not use or refuses are one line, exit 2, before any fitting (or, for a tuning
search space, from the first tuning trial that draws them, inside a worker): xgboost used to accept a misspelt
parameter (``max_dept``) with a warning at fit time and fit its default, and its out-of-range values (``subsample``
above 1 drawn by tuning) ended as internal errors from a worker."""

from __future__ import annotations

import pytest

from hardening_helpers import invoke, one_line_error
from mbi_predict.errors import ConfigError
from mbi_predict.models.preprocess import FeatureSpec
from mbi_predict.models.prognostic import check_xgboost_params, make_prognostic_model


def test_the_model_builder_checks_xgboost_parameters():
    features = FeatureSpec(("age",), (), "distress_baseline", all_columns=("age", "distress_baseline"))
    with pytest.raises(ConfigError, match="max_dept"):
        make_prognostic_model("xgboost", "continuous", {"max_dept": 3}, 0, features=features)
    assert make_prognostic_model("xgboost", "continuous", {"max_depth": 3}, 0, features=features) is not None


@pytest.mark.parametrize("task", ["continuous", "binary"])
def test_a_misspelt_xgboost_parameter_is_refused_with_a_suggestion(task):
    hint = r"model xgboost: unknown parameter 'max_dept' \(did you mean 'max_depth'\?\)"
    with pytest.raises(ConfigError, match=hint):
        check_xgboost_params(task, {"max_dept": 3})


@pytest.mark.parametrize(("params", "needle"), [({"subsample": 1.5}, "parameter subsample"),
                                                ({"max_depth": "deep"}, "parameter max_depth"),
                                                ({"objective": "reg:nonsense"}, "reg:nonsense")])
def test_values_xgboost_refuses_are_config_errors(params, needle):
    with pytest.raises(ConfigError, match="model xgboost") as info:
        check_xgboost_params("continuous", params)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("params", [{}, {"n_estimators": 40, "max_depth": 3}, {"eta": 0.1, "lambda": 2.0},
                                    {"monotone_constraints": "(1,0,0)", "scale_pos_weight": 2.0}])
def test_parameters_xgboost_knows_pass(params):
    check_xgboost_params("binary", params)
    check_xgboost_params("continuous", params)


def _config(tmp_path, model: str, n_jobs: int = 1) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(
        "experiment: bad_params\ndata: {simulate: {n_trials: 3, n: 300, seed: 1}}\noutcome: distress_fu1_6\n"
        f"models:\n{model}"
        f"validation: {{scheme: kfold, folds: 2, n_jobs: {n_jobs}, bootstrap: 5}}\n"
        "tracking: {enabled: false}\n")
    return path


def test_a_misspelt_xgboost_parameter_in_a_config_is_one_line_before_fitting(tmp_path):
    config = _config(tmp_path, "  - name: boosted\n    estimator: xgboost\n    params: {max_dept: 3}\n")
    one_line_error(invoke("run", config, "--out", tmp_path / "out", "--no-progress"), "xgboost", "max_dept")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_search_space_xgboost_refuses_is_one_line_from_a_tuning_worker(tmp_path):
    """The low end passes the runner's check before fitting; a trial drawing subsample > 1 fails in a worker
    process. Run as a command, so that whatever the workers print on their stderr is seen too."""
    import subprocess
    import sys
    from pathlib import Path

    config = _config(tmp_path, "  - name: boosted\n    estimator: xgboost\n    params: {n_estimators: 10}\n"
                               "    tuning:\n      n_trials: 4\n"
                               "      search_space: {subsample: {type: float, low: 0.9, high: 3.0}}\n", n_jobs=2)
    done = subprocess.run([str(Path(sys.executable).with_name("mbi-predict")), "run", str(config), "--out",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "xgboost" in lines[0] and "subsample" in lines[0] and "internal error" not in lines[0]
    assert not (tmp_path / "out").exists()
