"""Fixtures: a small simulated consortium, fitted pipelines, and a run folder shaped like the runner's output.

The run folder's numbers are computed with the package's own metric and pooling functions on leave-one-trial-out
predictions, so the card is tested against a realistic summary.json, not a hand-typed one.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

COVARIATES = ["age", "gender", "education", "baseline_distress", "baseline_wellbeing"]
OUTCOME = "distress_post"


@pytest.fixture(scope="session")
def ipd() -> pd.DataFrame:
    from mbi_predict.data.simulate import simulate_latent

    return simulate_latent("galante2023", seed=1, n_trials=5, n=800).ipd


@pytest.fixture(scope="session")
def model_frame(ipd):
    from mbi_predict.models.preprocess import FeatureSpec, categorical_as_object

    frame = categorical_as_object(ipd, ["gender", "education"])
    X = frame[COVARIATES + ["arm"]].copy()
    X["arm"] = X["arm"].astype(float)
    spec = FeatureSpec.from_frame(X, COVARIATES, "baseline_distress")
    return frame, X, spec


def _fit(name, X, y, spec):
    from mbi_predict.models.prognostic import make_prognostic_model

    return make_prognostic_model(name, "continuous", None, 0, features=spec).fit(X, y)


@pytest.fixture(scope="session")
def fitted_pipeline(model_frame):
    frame, X, spec = model_frame
    observed = frame[OUTCOME].notna().to_numpy()
    return _fit("elastic_net", X[observed], frame[OUTCOME].to_numpy()[observed], spec)


@pytest.fixture(scope="session")
def run_summary(model_frame):
    """summary.json of a two-model leave-one-trial-out run, computed with the package's metric/pooling code."""
    from mbi_predict.report.card_subgroups import subgroup_metrics
    from mbi_predict.validate.metrics import trial_metrics
    from mbi_predict.validate.pooling import pool_metric

    frame, X, spec = model_frame
    y = frame[OUTCOME].to_numpy(dtype=float)
    trials = frame["trial_id"].astype(str).to_numpy()
    models = {}
    for name in ("reference", "elastic_net"):
        per_trial, held_out_pred = [], np.full(len(y), np.nan)
        for trial in sorted(set(trials)):
            train = (trials != trial) & np.isfinite(y)
            test = trials == trial
            model = _fit(name, X[train], y[train], spec)
            held_out_pred[test] = model.predict(X[test])
            scored = test & np.isfinite(y)
            metrics = trial_metrics(y[scored], held_out_pred[scored], "continuous", bootstrap=50, seed=1)
            per_trial.append({"trial_id": trial, "n": int(scored.sum()),
                              **{k: v.value for k, v in metrics.items()},
                              "variances": {k: v.variance for k, v in metrics.items()}})
        pooled = {}
        for metric in ("r2", "rmse", "mae", "calibration_slope", "calibration_intercept"):
            pooled[metric], _ = pool_metric(metric, [row[metric] for row in per_trial],
                                            [row["variances"][metric] for row in per_trial],
                                            [row["trial_id"] for row in per_trial])
        models[name] = {"task": "prognostic", "estimator": name, "outcome_type": "continuous",
                        "per_trial": per_trial, "pooled": pooled, "timing": {"fit_seconds": 0.1},
                        "subgroups": subgroup_metrics(y, held_out_pred, frame[COVARIATES], "continuous")}
    counts = frame.groupby("trial_id").agg(n=("arm", "size"), n_mbi=("arm", "sum"), country=("country", "first"),
                                           setting=("setting", "first"))
    data_trials = [{"trial_id": str(t), "n": int(r.n), "n_mbi": int(r.n_mbi), "n_control": int(r.n - r.n_mbi),
                    "control_types": ["passive"], "country": r.country, "setting": r.setting}
                   for t, r in counts.iterrows()]
    return {"mlflow_run_id": None, "experiment": "card_test", "outcome": OUTCOME, "outcome_type": "continuous",
            "covariates": COVARIATES,
            "data": {"sha256": "ab" * 32, "n_participants": int(len(frame)), "n_trials": len(data_trials),
                     "trials": data_trials, "standardisation": "within-trial baseline SD"},
            "validation": {"scheme": "loto", "note": "leave-one-trial-out", "pooling": {"level": 0.95}},
            "models": models, "package_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00"}


@pytest.fixture
def run_folder(tmp_path, run_summary):
    import matplotlib.pyplot as plt

    folder = tmp_path / "run"
    (folder / "plots").mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(run_summary, allow_nan=False, default=float))
    for name in ("calibration_elastic_net", "calibration_reference", "forest_elastic_net_rmse"):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(folder / "plots" / f"{name}.png", dpi=40)
        plt.close(fig)
    return folder


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """One sqlite store for the session: creating its schema costs seconds, so it is made once."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder}/mlflow.db"
