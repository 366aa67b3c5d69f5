"""Through the real runner: a small run logged to sqlite, its card built from the MLflow run id."""

import mlflow
import pytest


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, tracking_uri):
    import os

    from mbi_predict.runner import run_experiment

    folder = tmp_path_factory.mktemp("e2e")
    config = {
        "experiment": "card_e2e",
        "data": {"simulate": {"scenario": "galante2023", "seed": 3, "n_trials": 5, "n": 600}},
        "outcome": "distress_post", "covariates": "all",
        "models": [{"name": "reference", "kind": "prognostic", "estimator": "reference"},
                   {"name": "elastic_net", "kind": "prognostic", "estimator": "elastic_net"}],
        "validation": {"scheme": "loto", "bootstrap": 30, "n_jobs": 1},
        "tracking": {"uri": tracking_uri}, "seed": 1,
    }
    cwd = os.getcwd()
    os.chdir(folder)  # the sqlite store's default artifact root is ./mlruns: keep it in the tmp folder
    try:
        return run_experiment(config, out_dir=folder / "run", tracking_uri=tracking_uri, progress=False)
    finally:
        os.chdir(cwd)


def test_card_from_run_id_equals_the_mlflow_metrics(real_run, tracking_uri, tmp_path):
    from mbi_predict.report.card import build_card, write_card

    card = build_card(real_run.mlflow_run_id, tracking_uri=tracking_uri)
    name = card["model_details"]["name"]
    # every model has its own child run with one metric vocabulary: <metric>, <metric>_ci_low, ...
    model_run = real_run.summary["models"][name]["mlflow_run_id"]
    metrics = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(model_run).data.metrics
    checked = 0
    for row in card["evaluation"]["pooled"]:
        for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2"):
            logged = metrics.get(row["metric"] + ("" if key == "estimate" else f"_{key}"))
            if row.get(key) is not None:
                assert logged == pytest.approx(row[key], rel=1e-12, abs=1e-15)
                checked += 1
    assert checked >= 15
    assert card["model_details"]["mlflow_run_id"] == real_run.mlflow_run_id
    assert card["figures"], "the run's plots should be read from its MLflow artifacts"
    write_card(card, tmp_path / "card.json", fmt="json")  # validates against the schema


def test_card_from_folder_matches_card_from_run_id(real_run, tracking_uri):
    from mbi_predict.report.card import build_card

    from_folder = build_card(real_run.out_dir, model="reference")
    from_mlflow = build_card(real_run.mlflow_run_id, model="reference", tracking_uri=tracking_uri)
    assert from_folder["evaluation"] == from_mlflow["evaluation"]
    assert [f["data_base64"] for f in from_folder["figures"]] == [f["data_base64"] for f in from_mlflow["figures"]]
