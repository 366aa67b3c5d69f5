"""Small experiment configs on the simulated consortium, and an MLflow store under pytest's tmp folder."""

import copy

import pytest


def small_config(**overrides):
    config = {
        "experiment": "runner_test",
        "data": {"simulate": {"scenario": "galante2023", "seed": 5, "n_trials": 6, "n": 900}},
        "outcome": "distress_fu1_6",
        "study_traits": ["setting"],
        "models": [
            {"name": "reference", "estimator": "reference"},
            {"name": "elastic_net", "estimator": "elastic_net", "tuning": {"n_trials": 2}},
            {"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 40},
             "tuning": {"n_trials": 2, "search_space": {"max_depth": {"type": "int", "low": 2, "high": 3}}}},
            {"name": "path_risk", "estimator": "path_risk"},
        ],
        "validation": {"bootstrap": 20, "n_jobs": 1, "hksj": True},
        "tracking": {"enabled": False},
        # the smallest calibrated verdict (the runner tests are not about its power; tests/validate/test_verdict_null)
        "heterogeneity": {"null_B": 5},
        "seed": 3,
    }
    merged = copy.deepcopy(config)
    merged.update(copy.deepcopy(overrides))
    return merged


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="session")
def make_config():
    """``make_config(**overrides)``: the small config with top-level keys replaced."""
    return small_config
