"""SHAP in the runner (rankings for every model, additivity recorded, the permutation null for effect models,
timing beside fit time, plots) and `explain_run` on a finished run folder (stored and recomputed)."""

import json

import pytest

from mbi_predict.errors import ConfigError
from mbi_predict.explain.compare import RANKING_KEYS
from mbi_predict.cli.explain_run import explain_run
from mbi_predict.runner import run_experiment

pytest.importorskip("mbi_predict.models.effect")


def _config(make_config, enabled=True):
    return make_config(
        data={"simulate": {"scenario": "strong", "seed": 2, "n_trials": 4, "n": 700}},
        models=[{"name": "reference", "estimator": "reference"},
                {"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 30}},
                {"name": "t_enet", "kind": "effect", "estimator": "t_learner_enet"},
                {"name": "path_effect", "kind": "effect", "estimator": "path_risk"}],
        explain={"enabled": enabled, "max_rows": 80, "max_background": 30, "null_B": 2, "dependence_top": 2},
        validation={"bootstrap": 10, "n_jobs": 2}, heterogeneity={"null_B": 5})


@pytest.fixture(scope="module")
def explained(tmp_path_factory, make_config):
    return run_experiment(_config(make_config), out_dir=tmp_path_factory.mktemp("explained"), progress=False)


def test_every_model_has_a_shap_block(explained):
    models = explained.summary["models"]
    for name in ("reference", "xgboost", "t_enet"):
        shap = models[name]["shap"]
        assert shap["ranking"], name
        assert all(set(RANKING_KEYS) <= set(r) for r in shap["ranking"])
        importances = [r["importance"] for r in shap["ranking"]]
        assert importances == sorted(importances, reverse=True)
        assert shap["additivity"]["max_error"] < 1e-3 and set(shap["additivity"]["per_fold"]) == set(
            explained.summary["validation"]["held_out"])
        assert models[name]["timing"]["shap_seconds"] > 0
    assert "arm" in {r["feature"] for r in models["xgboost"]["shap"]["ranking"]}
    effect = models["t_enet"]["shap"]
    assert effect["null"]["B"] == 2 and effect["rule"] and "classical" in effect
    assert models["reference"]["shap"]["null"] is None  # the null is for effect models only
    assert models["path_effect"]["shap"]["skipped"].startswith("skipped")
    text = json.dumps(explained.summary)
    assert "participant_id" not in text  # aggregates only


def test_shap_plots_are_written(explained):
    names = {p.name for p in explained.plot_paths}
    assert {"shap_xgboost_beeswarm.png", "shap_xgboost_importance.png", "shap_xgboost_dependence.png",
            "shap_t_enet_benefit-profile.png", "shap_t_enet_importance.png"} <= names


def test_explain_run_reads_the_stored_rankings(explained):
    out = explain_run(explained.out_dir)
    assert set(out["models"]) == set(explained.summary["models"]) and not out["recomputed"]
    assert out["models"]["t_enet"]["ranking"] == explained.summary["models"]["t_enet"]["shap"]["ranking"]
    assert any(p.endswith("shap_t_enet_importance.png") for p in out["models"]["t_enet"]["plots"])
    only = explain_run(explained.out_dir, model="t_enet", features=["baseline_distress"])
    assert [r["feature"] for r in only["models"]["t_enet"]["ranking"]] == ["baseline_distress"]
    with pytest.raises(ConfigError, match="shoe_size"):
        explain_run(explained.out_dir, model="t_enet", features=["shoe_size"])
    with pytest.raises(ConfigError, match="not in this run"):
        explain_run(explained.out_dir, model="nope")


def test_the_explain_command_prints_the_stored_rankings(explained):
    from typer.testing import CliRunner

    from mbi_predict.cli import app

    done = CliRunner().invoke(app, ["explain", str(explained.out_dir), "--model", "t_enet", "--json"])
    assert done.exit_code == 0, done.output
    records = json.loads(done.stdout)
    assert {r["model"] for r in records} == {"t_enet"}
    assert [r["feature"] for r in records] == [r["feature"] for r in
                                               explained.summary["models"]["t_enet"]["shap"]["ranking"]]
    shown = CliRunner().invoke(app, ["explain", str(explained.out_dir), "--model", "t_enet"])
    assert shown.exit_code == 0 and "shap_t_enet_importance.png" in shown.output.replace("\n", "")  # a long path may wrap
    bad = CliRunner().invoke(app, ["explain", str(explained.out_dir), "--model", "nope"])
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "not in this run" in lines[0]


def test_explain_run_recomputes_into_the_run_folder(tmp_path, make_config):
    config = _config(make_config, enabled=False)
    config["models"] = config["models"][:1] + config["models"][2:3]
    config["figures"] = {"format": "svg"}   # the recomputed SHAP figures follow the run's figures: block
    result = run_experiment(config, out_dir=tmp_path, progress=False)
    assert "shap" not in result.summary["models"]["t_enet"]
    out = explain_run(tmp_path, recompute=True)
    assert out["recomputed"] and out["models"]["t_enet"]["ranking"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["models"]["t_enet"]["shap"]["ranking"] == out["models"]["t_enet"]["ranking"]
    assert on_disk["models"]["t_enet"]["pooled"] == result.summary["models"]["t_enet"]["pooled"]
    assert b"<svg" in (tmp_path / "plots" / "shap_t_enet_importance.svg").read_bytes()[:2000]
    assert not list((tmp_path / "plots").glob("*.png"))
    assert not list(tmp_path.glob(".*staging*"))
