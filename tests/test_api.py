"""The public Python API: the names `mbi_predict` exports (lazily), `validate_across_trials` (equal to the runner on
the shared code path), `load_run`, and the README's Python API example, which must run as written."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import mbi_predict
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError

PUBLIC = ["TLearner", "SLearner", "XLearner", "DRLearner", "CausalForest", "InteractionLinear", "LeaveOneTrialOut",
          "validate_across_trials", "run_experiment", "harmonise", "pool", "load_run"]
README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_names_import_and_all_is_exact():
    assert sorted(mbi_predict.__all__) == sorted(PUBLIC)
    namespace: dict = {}
    exec("from mbi_predict import *", namespace)
    assert {name for name in namespace if not name.startswith("__")} == set(PUBLIC)
    for name in PUBLIC:
        assert callable(getattr(mbi_predict, name)), name
    from mbi_predict.meta.pool import pool
    from mbi_predict.models.effect import TLearner

    assert mbi_predict.pool is pool and mbi_predict.TLearner is TLearner
    with pytest.raises(AttributeError):
        mbi_predict.no_such_name  # noqa: B018


def test_import_is_light():
    code = ("import sys, mbi_predict; heavy = [m for m in ('sklearn', 'mlflow', 'matplotlib', 'econml', 'pandas') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_readme_python_api_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md#python-api", "exec"), {})
    printed = capsys.readouterr().out
    assert "benefit_calibration_slope:" in printed and "rate_autoc:" in printed and "not held out:" in printed


@pytest.fixture(scope="module")
def galante():
    return simulate_latent("galante2023", seed=5, n_trials=6, n=900)


def _runner_config(**overrides):
    config = {"experiment": "api_equality",
              "data": {"simulate": {"scenario": "galante2023", "seed": 5, "n_trials": 6, "n": 900}},
              "outcome": "distress_fu1_6", "validation": {"bootstrap": 20, "n_jobs": 1, "hksj": True},
              "heterogeneity": {"calibration": "none"}, "tracking": {"enabled": False}, "seed": 3}
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def runner_run(tmp_path_factory):
    """run_experiment with one untuned prognostic and one effect model (no verdict calibration: not compared)."""
    from mbi_predict.runner import run_experiment

    models = [{"name": "elastic_net", "estimator": "elastic_net"},
              {"name": "cate", "kind": "effect", "estimator": "t_learner_enet"}]
    out = tmp_path_factory.mktemp("run")
    run_experiment(_runner_config(models=models), out_dir=out, progress=False)
    return out


def test_prognostic_validation_equals_the_runner(galante, runner_run):
    from sklearn.linear_model import ElasticNet

    from mbi_predict import load_run, validate_across_trials

    # the elastic_net family's defaults for a continuous outcome (models.prognostic.FAMILIES)
    result = validate_across_trials(ElasticNet(alpha=0.01, l1_ratio=0.5, max_iter=5000), galante.ipd,
                                    outcome="distress_fu1_6", seed=3, name="elastic_net", bootstrap=20, hksj=True)
    summary = load_run(runner_run)
    block = summary["models"]["elastic_net"]
    assert result.kind == "prognostic" and result.scheme == "loto"
    assert list(result.per_trial["trial_id"]) == summary["validation"]["held_out"]
    assert [s["trial_id"] for s in result.skipped] == [s["trial_id"] for s in summary["validation"]["skipped"]]
    for metric in ("rmse", "r2", "calibration_slope"):
        assert result.pooled[metric]["estimate"] == pytest.approx(block["pooled"][metric]["estimate"], rel=1e-10)
        assert result.pooled[metric]["pi_high"] == pytest.approx(block["pooled"][metric]["pi_high"], rel=1e-10)


def test_effect_validation_equals_the_runner(galante, runner_run):
    from mbi_predict import TLearner, load_run, validate_across_trials

    result = validate_across_trials(TLearner(base_learner="elasticnet"), galante.ipd, outcome="distress_fu1_6",
                                    seed=3, name="cate", bootstrap=20, hksj=True, truth=galante.truth)
    block = load_run(runner_run / "summary.json")["models"]["cate"]
    assert result.kind == "effect" and result.higher_is_better is False
    for metric in ("rate_autoc", "benefit_calibration_slope", "ate", "dr_loss_vs_constant", "pehe"):
        assert result.pooled[metric]["estimate"] == pytest.approx(block["pooled"][metric]["estimate"], rel=1e-10)
    per_trial = {row["trial_id"]: row for row in block["per_trial"]}
    for row in result.per_trial.to_dict(orient="records"):
        assert row["n"] == per_trial[row["trial_id"]]["n"]
        assert row["rate_autoc"] == pytest.approx(per_trial[row["trial_id"]]["rate_autoc"], rel=1e-10)


def test_result_is_aggregates_only_and_json_safe(galante):
    from sklearn.linear_model import Ridge

    from mbi_predict import validate_across_trials

    result = validate_across_trials(Ridge(), galante.ipd, outcome="distress_fu1_6", bootstrap=10)
    record = result.to_dict()
    text = json.dumps(record, allow_nan=False)
    assert "participant_id" not in text and len(record["per_trial"]) == len(result.per_trial)
    assert set(record["pooled"]["rmse"]) >= {"estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "k"}
    assert np.all(result.per_trial["n"] <= result.per_trial["n_randomised"])
    with pytest.raises(Exception):
        result.model = "other"  # frozen


def test_any_sklearn_splitter_and_one_line_errors(galante):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold

    from mbi_predict import validate_across_trials

    result = validate_across_trials(Ridge(), galante.ipd, GroupKFold(n_splits=2), outcome="distress_fu1_6",
                                    bootstrap=10)
    assert result.scheme == "custom:GroupKFold" and len(result.per_trial) == 2
    with pytest.raises(ConfigError, match="use a regressor"):
        validate_across_trials(RandomForestClassifier(), galante.ipd, outcome="distress_fu1_6")
    with pytest.raises(ConfigError, match="outcome"):
        validate_across_trials(Ridge(), galante.ipd)
    with pytest.raises(ConfigError, match="pooling"):
        validate_across_trials(Ridge(), galante.ipd, outcome="distress_fu1_6", pooling="XX")
    with pytest.raises(ConfigError, match="neither"):
        validate_across_trials(object(), galante.ipd, outcome="distress_fu1_6")


def test_load_run_errors_name_the_path(tmp_path):
    from mbi_predict import load_run

    missing = tmp_path / "no_such_run"
    with pytest.raises(ConfigError) as info:
        load_run(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no summary.json"):
        load_run(tmp_path)


def test_an_econml_estimator_validates_too(galante):
    """Any object with fit(Y, T, X=, groups=) and effect(X) is an effect model, econml's included (deep-copied
    per fold: econml estimators have no get_params)."""
    dml = pytest.importorskip("econml.dml")
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from mbi_predict import validate_across_trials

    model = dml.LinearDML(model_y=LinearRegression(), model_t=LogisticRegression(), discrete_treatment=True, cv=2,
                          random_state=0)
    with warnings.catch_warnings():  # econml's own note on its covariance with few clusters; not ours
        warnings.simplefilter("ignore", UserWarning)
        result = validate_across_trials(model, galante.ipd, outcome="distress_fu1_6", bootstrap=10)
    assert result.kind == "effect" and result.model == "LinearDML"
    assert result.pooled["rate_autoc"]["k"] == len(result.per_trial) >= 3
