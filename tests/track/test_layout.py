"""The MLflow layout of an experiment run, read back with MLflow's own client: one child run per model with one
metric vocabulary, real hyper-parameters, per-held-out-trial steps, the dataset (no rows), the artifacts a reader
needs, LoggedModels with metrics and params, the Model Registry, and the leaderboard."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from mbi_predict.errors import ConfigError
from mbi_predict.track import ExperimentRun, compare, register_model, ui_command
from mbi_predict.track.run import held_out_metrics, model_metrics, model_params

from track_data import EFFECT, FEATURES, HELD_OUT, PROGNOSTIC, make_summary

BOUNDS = ("ci_low", "ci_high", "pi_low", "pi_high", "tau2")


@pytest.fixture(scope="module")
def logged(store, tmp_path_factory, fitted, ipd_frame):
    """One experiment run logged the way the runner logs it; returns (summary, parent run id)."""
    pipeline, X, envelope = fitted
    summary = make_summary()
    folder = tmp_path_factory.mktemp("out")
    plots = {name: [] for name in summary["models"]}
    for name in ("xgboost", "reference"):
        for kind in ("forest", "calibration"):
            path = folder / f"{kind}_{name}_rmse.png"
            path.write_bytes(b"\x89PNG fake")
            plots[name].append(path)
    card = folder / "card_xgboost.md"
    card.write_text("# Model card: xgboost\n")
    report = folder / "harmonisation_report.md"
    report.write_text("# Harmonisation\n")
    with ExperimentRun(store, "track_test", config=summary["config"]) as run:
        assert MlflowClient(store).get_run(run.run_id).info.status == "RUNNING"
        run.log_dataset(summary, columns=ipd_frame)
        uri = run.log_final_model("xgboost", pipeline, kind="prognostic", features=FEATURES, task="continuous",
                                  envelope=envelope)
        summary["models"]["xgboost"]["final_model_uri"] = uri  # the runner's job: the tracker never writes into it
        run.log_results(summary)
        (folder / "summary.json").write_text(json.dumps(summary))
        run.log_artifacts(summary_path=folder / "summary.json", cards={"xgboost": [card]}, plots=plots,
                          harmonisation_report=[report])
    return summary, run.run_id, run.model_runs


def _children(client, parent_id, **kwargs):
    experiment = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", **kwargs)


def test_parent_run_facts_and_tags(logged, store):
    summary, parent_id, _ = logged
    client = MlflowClient(store)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert re.fullmatch(r"track_test-\d{8}-\d{6}", parent.info.run_name)
    tags = parent.data.tags
    assert tags["mbi_predict.data_sha256"] == summary["data"]["sha256"]
    assert tags["mbi_predict.heterogeneity"] == "no_evidence" and tags["mbi_predict.outcome"] == "distress_fu1_6"
    assert {"mlflow.source.name", "mbi_predict.version", "mbi_predict.config_sha256"} <= set(tags)
    assert re.fullmatch(r"[0-9a-f]{40}", tags.get("mlflow.source.git.commit", "0" * 40))
    assert parent.data.metrics["heterogeneity_evidence"] == 0.0
    assert parent.data.metrics["n_participants"] == 400 and parent.data.metrics["n_trials"] == 5
    params = parent.data.params
    assert params["run.heterogeneity_method"].startswith("permutation") and params["validation.hksj"] == "True"
    assert not any(k.startswith("models.") for k in params) and "tracking.uri" not in params
    assert all(v not in ("", "{}", "[]", "None") for v in params.values())
    assert not any("." in k and k.split(".")[0] in summary["models"] for k in parent.data.metrics)


def test_one_child_per_model_is_the_leaderboard(logged, store):
    summary, parent_id, model_runs = logged
    client = MlflowClient(store)
    children = _children(client, parent_id, order_by=["metrics.rmse ASC"])
    assert [c.info.run_name for c in children][:2] == ["xgboost", "reference"]  # pooled rmse 0.7 < 0.8
    assert {c.info.run_name for c in children} == set(summary["models"])
    by_name = {c.info.run_name: c for c in children}
    for name, child in by_name.items():
        assert child.info.status == "FINISHED" and child.info.run_id == model_runs[name]
        kind = summary["config"]["models"][[m["name"] for m in summary["config"]["models"]].index(name)]["kind"]
        assert child.data.tags["mbi_predict.model_kind"] == kind
        assert child.data.tags["mbi_predict.estimator"] == summary["models"][name]["estimator"]
        expected = {m for m in (PROGNOSTIC if kind == "prognostic" else EFFECT)}
        expected |= {f"{m}_{b}" for m in expected for b in BOUNDS}
        assert expected <= set(child.data.metrics), name
        assert not any(".pooled." in k or k.startswith(f"{name}.") for k in child.data.metrics)
        assert all(v not in ("", "{}", "[]", "None") for v in child.data.params.values())
        assert child.data.params["held_out_trials"] == ",".join(HELD_OUT)
    pooled = summary["models"]["xgboost"]["pooled"]["rmse"]
    xgb = by_name["xgboost"]
    assert xgb.data.metrics["rmse"] == pytest.approx(pooled["estimate"])
    assert xgb.data.metrics["rmse_pi_high"] == pytest.approx(pooled["pi_high"])
    assert xgb.data.metrics["rmse_vs_reference"] == pytest.approx(-0.1)
    # real hyper-parameters: config value, the tuned values the folds agreed on, the final model's tuned value
    assert xgb.data.params["n_estimators"] == "40" and xgb.data.params["learning_rate"] == "0.05"
    assert xgb.data.params["max_depth"] == "3" and xgb.data.params["estimator"] == "xgboost"
    assert by_name["t_learner"].data.metrics["heterogeneity_evidence"] == 0.0
    assert by_name["t_learner"].data.metrics["ate_clustered_ci_low"] == pytest.approx(-0.5)


def test_held_out_trials_are_steps_of_the_model_run(logged, store):
    summary, _, model_runs = logged
    client = MlflowClient(store)
    history = client.get_metric_history(model_runs["reference"], "held_out/rmse")
    rows = {r["trial_id"]: r["rmse"] for r in summary["models"]["reference"]["per_trial"]}
    assert sorted((m.step, m.value) for m in history) == [(i, pytest.approx(rows[t])) for i, t in enumerate(HELD_OUT)]
    # a tuned value that differs between folds is charted per held-out trial
    depths = client.get_metric_history(model_runs["xgboost"], "held_out/param_max_depth")
    assert sorted(int(m.value) for m in depths) == [2, 2, 3, 3]
    assert "held_out/gates_3" not in client.get_run(model_runs["t_learner"]).data.metrics  # None is not logged


def test_dataset_input_has_schema_and_counts_but_no_rows(logged, store, ipd_frame):
    summary, parent_id, model_runs = logged
    client = MlflowClient(store)
    for run_id in (parent_id, model_runs["xgboost"]):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        assert dataset.digest == summary["data"]["sha256"][:32]
        profile = json.loads(dataset.profile)
        assert profile["num_rows"] == 400 and profile["n_trials"] == 5 and profile["n_missing"]["gender"] == 20
        columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert set(FEATURES) <= columns
        stored = json.dumps([dataset.name, dataset.source, dataset.schema, dataset.profile])
        ids = ipd_frame["participant_id"].astype(str)
        assert not any(pid in stored for pid in ids)
        assert str(ipd_frame["age"].iloc[0]) not in dataset.profile


def test_artifacts_by_model(logged, store):
    _, parent_id, _ = logged
    client = MlflowClient(store)
    top = {a.path for a in client.list_artifacts(parent_id)}
    assert {"summary.json", "config.yaml", "cards", "plots", "data"} <= top
    assert [a.path for a in client.list_artifacts(parent_id, "cards/xgboost")] == ["cards/xgboost/card_xgboost.md"]
    assert {a.path for a in client.list_artifacts(parent_id, "plots")} == {"plots/reference", "plots/xgboost"}
    assert len(client.list_artifacts(parent_id, "plots/xgboost")) == 2
    config = client.download_artifacts(parent_id, "config.yaml")
    text = open(config).read()
    assert "xgboost" in text and "sqlite:///x.db" not in text


def test_refuses_participant_level_files(store, summary, tmp_path):
    rows = tmp_path / "predictions.parquet"
    rows.write_bytes(b"PAR1")
    table = tmp_path / "export.csv"
    table.write_text("participant_id,age\nT01-0001,30\n")
    with ExperimentRun(store, "track_refuse", models=[]) as run:
        for path in (rows, table):
            with pytest.raises(ValueError, match="participant-level"):
                run.log_artifacts(extra={"x": [path]})
        assert MlflowClient(store).list_artifacts(run.run_id) == []


def test_logged_model_carries_metrics_params_and_code(logged, store):
    summary, _, model_runs = logged
    client = MlflowClient(store)
    uri = summary["models"]["xgboost"]["final_model_uri"]
    model = client.get_logged_model(uri.removeprefix("models:/"))
    assert model.source_run_id == model_runs["xgboost"]
    assert model.tags["mbi_predict.model_kind"] == "prognostic"
    metrics = {m.key: m.value for m in model.metrics}
    assert metrics["rmse"] == pytest.approx(summary["models"]["xgboost"]["pooled"]["rmse"]["estimate"])
    assert model.params["max_depth"] == "3"
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location)
    requirements = open(f"{local}/requirements.txt").read().split()
    assert not any(r.startswith("mbi-predict") for r in requirements)
    assert not any(r.startswith(("xgboost", "econml")) for r in requirements)  # an elastic net needs neither
    assert any(r.startswith("scikit-learn==") for r in requirements)
    import os

    # the code that loads the model travels with it (deploy: a module, now a package)
    assert os.path.isfile(f"{local}/code/mbi_predict/deploy.py") or \
        os.path.isfile(f"{local}/code/mbi_predict/deploy/__init__.py")
    assert not any("__pycache__" in d for d, _, _ in os.walk(f"{local}/code"))


def test_register_model_with_card_alias_and_kind_guard(logged, store, fitted):
    summary, _, _ = logged
    uri = summary["models"]["xgboost"]["final_model_uri"]
    version = register_model(uri, "mbi_distress", description="# Model card\nvalidated across 4 trials",
                             tracking_uri=store)
    client = MlflowClient(store)
    assert client.get_model_version_by_alias("mbi_distress", "candidate").version == version.version
    assert version.description.startswith("# Model card")
    assert client.get_registered_model("mbi_distress").tags["mbi_predict.model_kind"] == "prognostic"
    client.create_registered_model("mbi_cate", tags={"mbi_predict.model_kind": "effect"})
    with pytest.raises(ConfigError, match="'mbi_cate' holds effect models") as info:
        register_model(uri, "mbi_cate", tracking_uri=store)
    assert "\n" not in str(info.value)
    assert client.search_model_versions("name = 'mbi_cate'") == []
    with pytest.raises(ConfigError, match="is a prognostic model, not effect"):
        register_model(uri, "mbi_distress", kind="effect", tracking_uri=store)
    assert len(client.search_model_versions("name = 'mbi_distress'")) == 1
    import mlflow

    from mbi_predict.deploy import synthetic_example

    loaded = mlflow.pyfunc.load_model(client.get_model_version("mbi_distress", version.version).source)
    assert "prediction" in loaded.predict(synthetic_example(fitted[2], FEATURES)).columns


def test_compare_reads_the_model_runs(logged, store):
    summary, parent_id, _ = logged
    board = compare("track_test", store, metric="rmse")
    mine = board[board["run_id"] == parent_id]
    assert list(mine["model"])[:2] == ["xgboost", "reference"]
    assert {"rmse", "rmse_ci_low", "rmse_ci_high", "r2", "kind", "estimator"} <= set(board.columns)
    assert not any(c.startswith("held_out/") for c in board.columns)
    assert list(compare("track_test", store, metric="r2")["model"])[0] == "reference"  # higher is better
    with pytest.raises(ConfigError, match="unknown metric 'rmsee'") as info:
        compare("track_test", store, metric="rmsee")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="no MLflow experiment"):
        compare("no_such_experiment", store)
    argv = ui_command(store, host="0.0.0.0", port=5123)
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and argv[argv.index("--port") + 1] == "5123"
    assert ui_command(store)[ui_command(store).index("--host") + 1] == "127.0.0.1"


def test_unit_mapping_has_one_vocabulary():
    summary = make_summary()
    a, b = model_metrics("reference", summary), model_metrics("xgboost", summary)
    shared = {k for k in a if not k.startswith("rmse_vs")}
    assert shared <= set(b)
    assert "max_depth" not in model_params("reference", summary)
    steps = held_out_metrics("xgboost", summary)
    assert [s for s, _ in steps] == [0, 1, 2, 3]


def test_harm_and_policy_tests_are_model_metrics():
    summary = make_summary()
    block = summary["models"]["xgboost"]
    block["harm"] = {"tested": True, "flagged": True, "p_value": 0.01}
    block["gates"] = {"top_minus_bottom": {"p_value": 0.2}}
    block["policy"] = {"beats_offer_to_all": False}
    metrics = model_metrics("xgboost", summary)
    assert metrics["harm_flagged"] == 1.0 and metrics["harm_p"] == 0.01
    assert metrics["gates_top_minus_bottom_p"] == 0.2 and metrics["policy_beats_offer_to_all"] == 0.0
    block["harm"] = {"tested": False, "flagged": False, "p_value": None}
    assert "harm_flagged" not in model_metrics("xgboost", summary)


def test_format_leaderboard_for_the_terminal(logged, store):
    from mbi_predict.track.compare import format_leaderboard

    text = format_leaderboard(compare("track_test", store, metric="rmse"), metric="rmse")
    assert list(text.columns) == ["experiment", "run_id", "run_name", "status", "model", "kind", "outcome",
                                  "rmse"]
    assert text["rmse"].iloc[0] == "0.7 (0.6 to 0.8)"
