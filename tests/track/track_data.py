"""Helpers and fixtures of the tracking tests: a summary shaped like the runner's (built by hand: three models,
four held-out trials), a small fitted prognostic pipeline on simulated data, and an sqlite store per module."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

HELD_OUT = ["T01", "T02", "T03", "T04"]
PROGNOSTIC = ["r2", "rmse", "mae", "calibration_slope", "calibration_intercept"]
EFFECT = ["rate_autoc", "benefit_calibration_slope", "c_for_benefit", "dr_loss_vs_constant", "ate"]
FEATURES = ["age", "gender", "baseline_distress", "arm"]


def _pooled(value: float, tau2: float = 0.01) -> dict:
    return {"estimate": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "pi_low": value - 0.2,
            "pi_high": value + 0.2, "tau2": tau2, "k": len(HELD_OUT), "scale": "identity", "excluded": []}


def _block(task: str, estimator: str, metrics: list[str], offset: float, best: list[dict]) -> dict:
    per_trial = []
    for i, trial in enumerate(HELD_OUT):
        row = {"trial_id": trial, "n": 50 + i, "n_randomised": 60 + i, "n_missing_outcome": 10}
        row.update({m: offset + 0.01 * i + 0.1 * j for j, m in enumerate(metrics)})
        row["gates_3"] = None  # the runner writes None for a metric a trial cannot give
        row["variances"] = {m: 0.01 for m in metrics}
        per_trial.append(row)
    return {"task": task, "estimator": estimator, "outcome_type": "continuous", "features": FEATURES,
            "per_trial": per_trial, "pooled": {m: _pooled(offset + 0.1 * j) for j, m in enumerate(metrics)},
            "timing": {"fit_seconds": 1.0 + offset, "predict_seconds": 0.1, "tune_seconds": 0.0, "shap_seconds": 0.0},
            "best_params": dict(zip(HELD_OUT, best)), "tuning": None}


def make_summary() -> dict:
    xgb_best = [{"n_estimators": 40, "max_depth": 2 + (i % 2), "learning_rate": 0.05} for i in range(len(HELD_OUT))]
    models = {
        "reference": _block("prognostic", "reference", PROGNOSTIC, 0.7, [{}] * len(HELD_OUT)),
        "xgboost": _block("prognostic", "xgboost", PROGNOSTIC, 0.6, xgb_best),
        "t_learner": _block("effect", "t_learner_enet", EFFECT, 0.3, [{}] * len(HELD_OUT)),
    }
    models["xgboost"]["final_model_params"] = {"max_depth": 3}
    models["t_learner"]["heterogeneity"] = {"verdict": "no_evidence", "tests": [
        {"name": "rate_autoc", "p_value": 0.4, "decisive": True}]}
    models["t_learner"]["ate_clustered"] = {"estimate": -0.3, "se": 0.1, "ci_low": -0.5, "ci_high": -0.1}
    config_models = [
        {"name": "reference", "kind": "prognostic", "estimator": "reference", "params": {}, "imputer": "simple",
         "tuning": {"n_trials": 0, "timeout": None, "search_space": {}}, "explain": None},
        {"name": "xgboost", "kind": "prognostic", "estimator": "xgboost", "params": {"n_estimators": 40},
         "imputer": "simple", "tuning": {"n_trials": 2, "timeout": None, "search_space": {
             "max_depth": {"type": "int", "low": 2, "high": 3}}}, "explain": None},
        {"name": "t_learner", "kind": "effect", "estimator": "t_learner_enet", "params": {}, "imputer": "simple",
         "tuning": {"n_trials": 0, "timeout": None, "search_space": {}}, "explain": None},
    ]
    return {
        "mlflow_run_id": None, "experiment": "track_test", "outcome": "distress_fu1_6", "outcome_type": "continuous",
        "control_type": "passive", "covariates": ["age", "gender", "baseline_distress"],
        "data": {"source": "simulated", "simulate": {"scenario": "galante2023", "seed": 5},
                 "sha256": "3cea5717df5b3693f49b83986a8193f2f7142a8c81a7e22b03849756987fa97e",
                 "missingness": {"age": 0.0, "gender": 0.05, "distress_fu1_6": 0.2},
                 "n_participants": 400, "n_trials": 5,
                 "analysed": {"n_participants": 320, "n_trials": 4, "n_missing_outcome": 80},
                 "trials": [{"trial_id": t, "n": 80} for t in HELD_OUT]},
        "validation": {"scheme": "loto", "held_out": list(HELD_OUT), "skipped": [], "primary_metric": "rmse"},
        "models": models, "seed": 3, "package_version": "0.1.0", "git_commit": None,
        "config": {"experiment": "track_test", "outcome": "distress_fu1_6", "models": config_models,
                   "validation": {"bootstrap": 20, "hksj": True, "n_jobs": 1},
                   "tracking": {"enabled": True, "uri": "sqlite:///x.db", "experiment": None}, "seed": 3},
        "comparison_to_reference": {"reference_model": "reference", "metric": "rmse", "models": {
            "xgboost": {"difference": -0.1, "ci_low": -0.2, "ci_high": 0.0, "beats_reference": False}}},
        "heterogeneity": {"verdict": "no_evidence", "method": "permutation calibration (test)", "alpha": 0.05,
                          "rule": "primary", "primary_model": "t_learner", "models": {}, "reason": "not shown"},
    }


@pytest.fixture()
def summary() -> dict:
    return copy.deepcopy(make_summary())


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="session")
def ipd_frame() -> pd.DataFrame:
    from mbi_predict.data.simulate import simulate_latent

    return simulate_latent("galante2023", seed=1, n_trials=4, n=300).ipd


@pytest.fixture(scope="session")
def fitted(ipd_frame):
    """(pipeline, X, envelope): an elastic net on four covariates and the arm."""
    from mbi_predict.deploy import envelope_from_training
    from mbi_predict.models.preprocess import FeatureSpec, categorical_as_object
    from mbi_predict.models.prognostic import make_prognostic_model

    frame = categorical_as_object(ipd_frame, ["gender"])
    X = frame[FEATURES].copy()
    X["arm"] = X["arm"].astype(float)
    spec = FeatureSpec.from_frame(X, FEATURES[:-1], "baseline_distress")
    y = frame["distress_post"].to_numpy(dtype=float)
    observed = np.isfinite(y)
    pipeline = make_prognostic_model("elastic_net", "continuous", None, 0, features=spec).fit(X[observed], y[observed])
    return pipeline, X, envelope_from_training(X)
