"""Participant-level data never reaches the tracking store: no artifact of a run (summary, plots, SHAP figures,
the final deployable models) holds a participant id, and predictions stay in the run folder, on request only."""

from __future__ import annotations

from pathlib import Path

import mlflow

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.runner import run_experiment


def test_no_participant_row_in_any_artifact_of_the_run(make_config, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = make_config(
        models=[{"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 30}},
                {"name": "t_learner_enet", "kind": "effect", "estimator": "t_learner_enet"}],
        tracking={"uri": uri, "log_final_models": True},
        explain={"enabled": True, "max_rows": 60, "max_background": 30, "null_B": 0},
    )
    result = run_experiment(config, out_dir=tmp_path / "run", save_predictions=True, progress=False)
    assert result.predictions_path is not None and result.predictions_path.exists()

    artifacts = Path(mlflow.artifacts.download_artifacts(run_id=result.mlflow_run_id, dst_path=str(tmp_path / "dl"),
                                                         tracking_uri=uri))
    # MLflow 3 keeps logged models apart from the run's artifact folder: fetch each final model too
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        for name, block in result.summary["models"].items():
            assert block.get("final_model_uri"), name
            mlflow.artifacts.download_artifacts(artifact_uri=block["final_model_uri"],
                                                dst_path=str(artifacts / "final_models" / name))
    finally:
        mlflow.set_tracking_uri(previous)
    files = [p for p in artifacts.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in files)
    assert any(p.suffix == ".png" for p in files)
    assert any(p.name == "MLmodel" for p in files), "the final models are artifacts of the run"
    assert not any(p.suffix == ".parquet" for p in files)

    simulated = config["data"]["simulate"]
    ids = simulate_latent(simulated["scenario"], seed=simulated["seed"], n_trials=simulated["n_trials"],
                          n=simulated["n"]).ipd["participant_id"].astype(str)
    # ids look like "T01-0001": search every artifact's bytes (JSON, PNG text chunks, pickled models) for each one
    needles = [pid.encode() for pid in ids]
    for path in files:
        content = path.read_bytes()
        leaked = [n.decode() for n in needles if n in content]
        assert not leaked, f"{path.relative_to(artifacts)} holds participant ids, e.g. {leaked[:3]}"
