"""run_experiment end to end: summary.json shape, MLflow parent/child runs, the comparison with the reference model,
predictions only on request, reproducibility."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError
from mbi_predict.pipeline.summary import SCHEMA_VERSION, schema_errors
from mbi_predict.runner import canonical_sha256, run_experiment
from mbi_predict.track import compare, ui_command
from mbi_predict.validate.metrics import CONTINUOUS_METRICS, rmse


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tracking_uri, make_config):
    out = tmp_path_factory.mktemp("run")
    config = make_config(tracking={"enabled": True, "uri": tracking_uri, "experiment": "runner_test_mlflow"})
    return run_experiment(config, out_dir=out, save_predictions=True, progress=False)


def test_summary_json_shape(tracked):
    on_disk = json.loads(tracked.summary_path.read_text())
    assert on_disk["mlflow_run_id"] == tracked.mlflow_run_id and tracked.mlflow_run_id
    assert on_disk["schema_version"] == SCHEMA_VERSION and schema_errors(on_disk) == []
    assert on_disk["experiment"] == "runner_test" and on_disk["outcome"] == "distress_fu1_6"
    sim = simulate_latent("galante2023", seed=5, n_trials=6, n=900).ipd
    assert on_disk["data"]["sha256"] == canonical_sha256(check_ipd(sim))
    assert on_disk["data"]["n_participants"] == len(sim) and on_disk["data"]["n_trials"] == 6
    validation = on_disk["validation"]
    assert validation["scheme"] == "loto" and "itt_note" in validation
    assert {s["trial_id"] for s in validation["skipped"]}.isdisjoint(validation["held_out"])
    assert set(on_disk["models"]) == {"reference", "elastic_net", "xgboost", "path_risk"}
    for name, block in on_disk["models"].items():
        assert block["task"] == "prognostic"
        assert set(block["timing"]) == {"fit_seconds", "predict_seconds", "tune_seconds", "shap_seconds"}
        assert [row["trial_id"] for row in block["per_trial"]] == validation["held_out"]
        for row in block["per_trial"]:
            assert {"trial_id", "n", "n_missing_outcome", *CONTINUOUS_METRICS} <= set(row)
        for metric in CONTINUOUS_METRICS:
            pooled = block["pooled"][metric]
            assert {"estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2"} <= set(pooled)
            assert pooled["ci_low"] <= pooled["estimate"] <= pooled["ci_high"]
            assert pooled["pi_low"] <= pooled["ci_low"] + 1e-12
        assert set(block["best_params"]) == set(validation["held_out"])
    assert on_disk["models"]["xgboost"]["timing"]["tune_seconds"] > 0
    assert on_disk["models"]["xgboost"]["tuning"][validation["held_out"][0]]["n_trials"] == 2
    assert on_disk["control_type"] == "passive" and validation["primary_metric"] == "rmse"
    trials = {t["trial_id"]: t for t in on_disk["data"]["trials"]}
    assert sorted(trials) == sorted(sim["trial_id"].unique())
    assert all(t["n"] == t["n_mbi"] + t["n_control"] and "setting" in t for t in trials.values())
    features = {name: block["features"] for name, block in on_disk["models"].items()}
    assert features["reference"] == ["baseline_distress", "arm"]
    assert "arm" not in features["path_risk"] and features["xgboost"][-1] == "arm"
    subgroups = on_disk["models"]["elastic_net"]["subgroups"]
    assert {"gender", "education"} <= {row["variable"] for row in subgroups}
    evaluated = sum(row["n"] for row in on_disk["models"]["elastic_net"]["per_trial"])
    assert sum(row["n"] for row in subgroups if row["variable"] == "gender") == evaluated
    assert "NaN" not in tracked.summary_path.read_text()
    assert (tracked.out_dir / "plots" / "forest_xgboost_rmse.png").is_file()
    assert (tracked.out_dir / "plots" / "calibration_reference.png").is_file()
    assert not list(tracked.out_dir.glob(".*staging*"))


def test_comparison_to_reference_block_is_right(tracked):
    summary, predictions = tracked.summary, pd.read_parquet(tracked.predictions_path)
    block = summary["comparison_to_reference"]
    assert block["reference_model"] == "reference" and block["metric"] == "rmse"
    assert set(block["models"]) == {"elastic_net", "xgboost"} and "path_risk" in block["not_compared"]
    reference = summary["models"]["reference"]["pooled"]["rmse"]["estimate"]
    sim = check_ipd(simulate_latent("galante2023", seed=5, n_trials=6, n=900).ipd).set_index(
        ["trial_id", "participant_id"])["distress_fu1_6"]
    for name, verdict in block["models"].items():
        pooled = summary["models"][name]["pooled"]["rmse"]["estimate"]
        assert verdict["pooled"] == pooled and verdict["reference_pooled"] == reference
        assert verdict["beats_reference"] is (pooled < reference)
        # per-trial paired differences recomputed from the held-out predictions
        differences = []
        for trial in summary["validation"]["held_out"]:
            rows = predictions[(predictions["trial_id"] == trial) & predictions["scored"]]
            mine, ref = rows[rows["model"] == name], rows[rows["model"] == "reference"]
            y = sim.loc[list(zip(mine["trial_id"], mine["participant_id"]))].to_numpy()
            assert np.array_equal(mine["participant_id"].to_numpy(), ref["participant_id"].to_numpy())
            differences.append(rmse(y, mine["prediction"]) - rmse(y, ref["prediction"]))
            row = next(r for r in summary["models"][name]["per_trial"] if r["trial_id"] == trial)
            assert row["rmse"] == pytest.approx(rmse(y, mine["prediction"]))
        assert min(differences) - 1e-12 <= verdict["difference"] <= max(differences) + 1e-12
        assert verdict["ci_low"] <= verdict["difference"] <= verdict["ci_high"]
        assert verdict["significant"] is (verdict["ci_high"] < 0 or verdict["ci_low"] > 0)


def test_predictions_file_only_with_the_flag(tracked, tmp_path, make_config):
    predictions = pd.read_parquet(tracked.predictions_path)
    assert {"trial_id", "participant_id", "model", "prediction"} <= set(predictions.columns)
    n_held_out_rows = sum(r["n_randomised"] for r in tracked.summary["models"]["reference"]["per_trial"])
    assert (predictions["model"] == "reference").sum() == n_held_out_rows
    plain = run_experiment(make_config(models=[{"name": "reference", "estimator": "reference"}]),
                           out_dir=tmp_path, progress=False)
    assert plain.predictions_path is None and not (tmp_path / "predictions.parquet").exists()
    assert plain.mlflow_run_id is None and (tmp_path / "summary.json").is_file()


def test_mlflow_parent_child_runs_and_metric_names(tracked, tracking_uri):
    """One parent run per experiment run, one child run per model carrying the same metric names (the leaderboard
    is a search over the children), held-out trials as steps of the model's run (mbi_predict.track.run)."""
    import re

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(tracked.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert re.fullmatch(r"runner_test-\d{8}-\d{6}", parent.info.run_name)
    assert parent.data.tags["mbi_predict.data_sha256"] == tracked.summary["data"]["sha256"]
    assert parent.data.tags["mbi_predict.outcome"] == "distress_fu1_6"
    assert {"mlflow.source.name", "mbi_predict.version", "mbi_predict.config_sha256"} <= set(parent.data.tags)
    assert parent.data.metrics["n_participants"] == tracked.summary["data"]["n_participants"]
    assert parent.data.params["validation.hksj"] == "True"
    assert all(value not in ("", "{}", "[]", "None") for value in parent.data.params.values())
    assert not any(".pooled." in key for key in parent.data.metrics)
    assert parent.inputs.dataset_inputs[0].dataset.digest == tracked.summary["data"]["sha256"][:32]

    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{tracked.mlflow_run_id}'",
                                  order_by=["metrics.rmse ASC"])
    assert sorted(c.info.run_name for c in children) == sorted(tracked.summary["models"])
    rmse = [c.data.metrics["rmse"] for c in children]
    assert rmse == sorted(rmse)
    held_out = tracked.summary["validation"]["held_out"]
    for child in children:
        name = child.info.run_name
        block = tracked.summary["models"][name]
        assert child.info.status == "FINISHED" and child.data.tags["mbi_predict.model_kind"] == "prognostic"
        pooled = block["pooled"]
        assert child.data.metrics["rmse"] == pytest.approx(pooled["rmse"]["estimate"])
        assert child.data.metrics["rmse_ci_low"] == pytest.approx(pooled["rmse"]["ci_low"])
        assert child.data.metrics["calibration_slope_pi_high"] == pytest.approx(pooled["calibration_slope"]["pi_high"])
        assert child.data.params["held_out_trials"] == ",".join(held_out)
        assert all(value not in ("", "{}", "[]", "None") for value in child.data.params.values())
        history = sorted(client.get_metric_history(child.info.run_id, "held_out/rmse"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(len(held_out)))
        assert history[0].value == pytest.approx(block["per_trial"][0]["rmse"])
    xgb = next(c for c in children if c.info.run_name == "xgboost")
    assert xgb.data.params["n_estimators"] == "40"
    assert "max_depth" in xgb.data.params or "held_out/param_max_depth" in xgb.data.metrics
    artifacts = {a.path for a in client.list_artifacts(tracked.mlflow_run_id)}
    assert {"summary.json", "config.yaml", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(tracked.mlflow_run_id, "plots")}
    assert plots == {f"plots/{name}" for name in tracked.summary["models"]}
    path_risk = [a.path for a in client.list_artifacts(tracked.mlflow_run_id, "plots/path_risk")]
    assert path_risk and all(re.search(r"_path_risk[_.]", p) for p in path_risk)
    assert not any(path.endswith(".parquet") for path in plots | artifacts)


def test_compare_leaderboard_and_ui_command(tracked, tracking_uri):
    board = compare("runner_test_mlflow", tracking_uri)
    mine = board[board["run_id"] == tracked.mlflow_run_id]
    assert set(mine["model"]) == set(tracked.summary["models"])
    xgb = mine.set_index("model").loc["xgboost"]
    assert xgb["rmse"] == pytest.approx(tracked.summary["models"]["xgboost"]["pooled"]["rmse"]["estimate"])
    assert {"rmse_ci_low", "rmse_ci_high", "r2"} <= set(board.columns)
    ranked = compare("runner_test_mlflow", tracking_uri, metric="rmse")
    assert list(ranked["rmse"]) == sorted(ranked["rmse"])
    with pytest.raises(ConfigError, match="unknown metric"):
        compare("runner_test_mlflow", tracking_uri, metric="no_such_metric")
    with pytest.raises(ConfigError, match="no tracking database"):
        compare(tracking_uri=f"sqlite:///{tracked.out_dir}/absent.db")
    assert not (tracked.out_dir / "absent.db").exists()
    with pytest.raises(ConfigError, match="no MLflow experiment"):
        compare("no_such_experiment", tracking_uri)
    argv = ui_command(tracking_uri)
    assert argv[argv.index("--backend-store-uri") + 1] == tracking_uri
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "ui" in argv
    argv = ui_command(tracking_uri, host="0.0.0.0", port=5001)
    assert argv[argv.index("--port") + 1] == "5001"


def test_two_runs_with_the_same_seed_agree(tmp_path, make_config):
    config = make_config(data={"simulate": {"seed": 2, "n_trials": 4, "n": 500}},
                         models=[{"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 20},
                                  "tuning": {"n_trials": 2}}])
    first = run_experiment(config, out_dir=tmp_path / "a", progress=False).summary
    second = run_experiment(config, out_dir=tmp_path / "b", progress=False).summary
    for block in (first, second):
        for model in block["models"].values():
            model.pop("timing")
            for tuning in (model["tuning"] or {}).values():
                tuning.pop("seconds")
    assert first["models"] == second["models"]
    assert first["data"]["sha256"] == second["data"]["sha256"]


def test_binary_outcome_from_a_table_file(tmp_path, make_config):
    ipd = check_ipd(simulate_latent("galante2023", seed=8, n_trials=5, n=900).ipd)
    ipd["deteriorated_distress_fu1_6"] = np.where(
        ipd["distress_fu1_6"].isna(), np.nan, (ipd["distress_fu1_6"] - ipd["baseline_distress"] > 0.0).astype(float))
    path = tmp_path / "ipd.parquet"
    ipd.to_parquet(path, index=False)
    result = run_experiment(make_config(models=[{"name": "reference", "estimator": "reference"},
                                                 {"name": "elastic_net", "estimator": "elastic_net"}]),
                            data=path, outcome="deteriorated_distress_fu1_6", out_dir=tmp_path / "out",
                            progress=False)
    summary = result.summary
    assert summary["outcome_type"] == "binary" and summary["data"]["source"] == "file"
    pooled = summary["models"]["elastic_net"]["pooled"]
    assert pooled["c_statistic"]["scale"] == "logit" and 0.5 < pooled["c_statistic"]["estimate"] < 1
    assert pooled["oe_ratio"]["scale"] == "log" and 0.5 < pooled["oe_ratio"]["estimate"] < 1.5
    assert summary["comparison_to_reference"]["metric"] == "brier"
    assert math.isfinite(pooled["ici"]["estimate"])
    assert (result.out_dir / "plots" / "calibration_elastic_net.png").is_file()


def test_effect_models_run_beside_prognostic_ones(tmp_path, make_config):
    pytest.importorskip("mbi_predict.models.effect")
    pytest.importorskip("mbi_predict.validate.benefit")
    config = make_config(data={"simulate": {"seed": 2, "n_trials": 4, "n": 600}},
                         models=[{"name": "reference", "estimator": "reference"},
                                 {"name": "t_learner", "kind": "effect", "estimator": "t_learner_enet"}])
    summary = run_experiment(config, out_dir=tmp_path, progress=False).summary
    block = summary["models"]["t_learner"]
    assert block["task"] == "effect" and "ate" in block["pooled"] and "benefit_calibration_slope" in block["pooled"]
    assert [row["trial_id"] for row in block["per_trial"]] == summary["validation"]["held_out"]
    assert summary["comparison_to_reference"]["models"] == {}  # effect models are not prognostic competitors


def test_progress_bar_does_not_break_without_a_terminal(tmp_path, make_config, capfd):
    config = make_config(data={"simulate": {"seed": 2, "n_trials": 4, "n": 500}},
                         models=[{"name": "elastic_net", "estimator": "elastic_net", "tuning": {"n_trials": 2}}])
    result = run_experiment(config, out_dir=tmp_path, progress=True)
    err = capfd.readouterr().err
    assert "held-out folds" in err and "tuning trials" in err
    assert "verdict calibration" not in err  # no effect model: no calibration, no bar
    assert result.summary_path.is_file()


def test_the_stages_after_the_folds_show_progress_too(tmp_path, make_config, capfd):
    """The verdict's calibration refits are often most of a run (RESULTS 21: 186 of 260 s); the run-level batch
    (final models, SHAP nulls, interactions) follows the folds. Each has its own bar, counted to the end."""
    config = make_config(data={"simulate": {"seed": 2, "n_trials": 4, "n": 500}},
                         models=[{"name": "reference", "estimator": "reference"},
                                 {"name": "t_enet", "kind": "effect", "estimator": "t_learner_enet"}],
                         heterogeneity={"null_B": 5})
    result = run_experiment(config, out_dir=tmp_path, progress=True)
    err = capfd.readouterr().err
    k = len(result.summary["validation"]["held_out"])
    bar = [line for line in err.splitlines() if line.startswith("verdict calibration: null refits")]
    assert bar and bar[-1].split()[-2] == f"{5 * k}/{5 * k}"  # every refit counted (5 draws x k folds)
    assert "run-level jobs" in err


def test_model_card_builds_from_a_run_folder(tracked):
    card_module = pytest.importorskip("mbi_predict.report.card")
    card = card_module.build_card(tracked.out_dir, model="elastic_net")
    assert card["model_details"]["mlflow_run_id"] == tracked.mlflow_run_id
    assert card["model_details"]["primary_metric"] == "rmse"


def test_final_models_are_logged_for_deployment(tmp_path, make_config):
    deploy = pytest.importorskip("mbi_predict.deploy")
    uri = f"sqlite:///{tmp_path}/final.db"
    config = make_config(data={"simulate": {"seed": 2, "n_trials": 4, "n": 600}},
                         models=[{"name": "reference", "estimator": "reference"},
                                 {"name": "path_risk", "estimator": "path_risk", "tuning": {"n_trials": 2}},
                                 {"name": "t_learner", "kind": "effect", "estimator": "t_learner_enet"}],
                         tracking={"uri": uri, "log_final_models": True})
    import mlflow

    before = mlflow.get_tracking_uri()
    result = run_experiment(config, out_dir=tmp_path / "out", progress=False)
    assert mlflow.get_tracking_uri() == before  # the caller's global MLflow state is restored
    ipd = check_ipd(simulate_latent("galante2023", seed=2, n_trials=4, n=600).ipd).head(20)
    for name, block in result.summary["models"].items():
        assert block["final_model_uri"].startswith(("models:/", "runs:/"))
        model = deploy.load_final_model(block["final_model_uri"], tracking_uri=uri)
        out = model.predict(ipd[block["features"]].astype({c: float for c in block["features"]
                                                             if c in ("age", "arm") or c.startswith("baseline_")}))
        column = "cate" if block["task"] == "effect" else "prediction"
        assert len(out) == 20 and np.isfinite(out[column]).all() and "out_of_distribution" in out
    assert set(result.summary["models"]["path_risk"]["final_model_params"]) == {"alpha", "l1_ratio"}
    assert schema_errors(json.loads(result.summary_path.read_text())) == []
