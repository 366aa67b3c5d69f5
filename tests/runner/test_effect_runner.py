"""Effect models in the runner against the simulator's truth: benefit calibration, truth metrics, the pre-declared
heterogeneity verdict (evidence on `strong`, none on `null`), the harmed subgroup, harm for a 0/1 worsening
outcome, clustered ATE, predictions with intervals, and SHAP blocks."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.runner import run_experiment

pytest.importorskip("mbi_predict.models.effect")


def effect_config(scenario, estimator="interaction_linear", *, n_trials=8, n=3000, explain=False, **extra):
    config = {
        "experiment": f"effect_{scenario}",
        "data": {"simulate": {"scenario": scenario, "seed": 11, "n_trials": n_trials, "n": n}},
        "outcome": "distress_fu1_6",
        "models": [{"name": "cate", "kind": "effect", "estimator": estimator}],
        "validation": {"bootstrap": 20, "n_jobs": 2, "hksj": True},
        "explain": {"enabled": explain, "max_rows": 120, "max_background": 40, "null_B": 0},
        "tracking": {"enabled": False},
        "heterogeneity": {"null_B": 5},  # the smallest calibrated test: these tests are not about its power
        "seed": 4,
    }
    config.update(extra)
    return config


@pytest.fixture(scope="module")
def strong_run(tmp_path_factory):
    return run_experiment(effect_config("strong", explain=True), out_dir=tmp_path_factory.mktemp("strong"),
                          progress=False, save_predictions=True)


def test_strong_scenario_benefit_is_found_and_calibrated(strong_run):
    block = strong_run.summary["models"]["cate"]
    pooled = block["pooled"]
    assert pooled["benefit_calibration_slope"]["ci_low"] > 0.3
    assert pooled["cate_truth_corr"]["estimate"] > 0.8 and pooled["pehe"]["estimate"] < 0.3
    assert block["heterogeneity"]["verdict"] == "evidence"
    assert {t["name"] for t in block["heterogeneity"]["tests"] if t["decisive"]} == {
        "rate_positive", "calibration_slope_positive", "beats_constant_effect"}
    assert block["heterogeneity"]["calibration"]["B"] == 5
    assert strong_run.summary["heterogeneity"]["verdict"] == "evidence"
    assert block["heterogeneity"]["rule"]["alpha"] == 0.05
    # distress: higher is worse, so a benefit is a negative CATE
    assert block["higher_is_better"] is False
    for row in block["per_trial"]:
        assert {"pehe", "cate_truth_corr", "benefit_calibration_slope", "rate_autoc"} <= set(row)
    ate = block["ate_clustered"]
    assert ate["n_clusters"] == strong_run.summary["data"]["analysed"]["n_trials"] and ate["ci_low"] < ate["estimate"] < ate["ci_high"] < 0
    assert ate["se"] > ate["naive"]["se"] * 0.5
    # the classical interactions are reported beside (role: report), for the continuous covariates
    interactions = strong_run.summary["classical_interactions"]
    assert "baseline_distress" in interactions["modifiers"] and interactions["records"]
    assert any(t["name"].startswith("interaction:") and not t["decisive"] for t in block["heterogeneity"]["tests"])
    assert len(block["calibration_for_benefit"]) == 5


def test_strong_scenario_plots_and_predictions(strong_run):
    names = {p.name for p in strong_run.plot_paths}
    assert {"benefit-calibration_cate_pooled.png", "benefit-calibration_cate_by-trial.png",
            "forest_cate_benefit_calibration_slope.png", "forest_cate_pehe.png",
            "forest_cate_cate_truth_corr.png"} <= names
    predictions = pd.read_parquet(strong_run.predictions_path)
    assert {"cate", "cate_low", "cate_high"} <= set(predictions.columns)
    assert np.isfinite(predictions["cate"]).all()
    assert "true_effect_passive_distress_fu1_6" not in predictions.columns


def test_strong_scenario_shap_ranks_the_true_modifiers(strong_run):
    shap = strong_run.summary["models"]["cate"]["shap"]
    top = [r["feature"] for r in shap["ranking"][:2]]
    assert set(top) == {"baseline_distress", "baseline_mindfulness"}
    for record in shap["ranking"]:
        assert {"feature", "importance", "ci_low", "ci_high", "null_p", "top_k_frequency", "beats_null"} <= set(record)
    assert shap["additivity"]["max_error"] < 1e-6
    assert shap["classical"] and shap["classical"][0]["feature"] in top
    assert strong_run.summary["models"]["cate"]["timing"]["shap_seconds"] > 0
    names = {p.name for p in strong_run.plot_paths}
    assert {"shap_cate_importance.png", "shap_cate_beeswarm.png", "shap_cate_benefit-profile.png"} <= names


def test_null_scenario_gives_no_evidence(tmp_path):
    summary = run_experiment(effect_config("null"), out_dir=tmp_path, progress=False).summary
    block = summary["models"]["cate"]
    assert block["heterogeneity"]["verdict"] == "no_evidence"
    assert block["heterogeneity"]["reason"].startswith("not shown")


def test_harm_scenario_identifies_the_harmed_subgroup(tmp_path):
    result = run_experiment(effect_config("harm", "t_learner_enet", n_trials=6, n=2400), out_dir=tmp_path,
                            progress=False, save_predictions=True)
    predictions = pd.read_parquet(result.predictions_path)
    truth = simulate_latent("harm", seed=11, n_trials=6, n=2400).truth
    merged = predictions.merge(truth[["trial_id", "participant_id", "harmed_subgroup"]],
                               on=["trial_id", "participant_id"])
    harmed = merged.loc[merged["harmed_subgroup"] == 1, "cate"].mean()
    others = merged.loc[merged["harmed_subgroup"] == 0, "cate"].mean()
    assert harmed > others + 0.2  # higher distress under MBI = worse


def test_binary_worsening_outcome_reports_harm(tmp_path):
    latent = simulate_latent("harm", seed=3, n_trials=5, n=1500).ipd
    change = latent["distress_fu1_6"] - 0.6 * latent["baseline_distress"]
    latent["deteriorated_distress_fu1_6"] = np.where(latent["distress_fu1_6"].isna(), np.nan,
                                                     (change > 0.5).astype(float))
    path = tmp_path / "ipd.parquet"
    latent.to_parquet(path, index=False)
    config = effect_config("harm", "t_learner_enet", outcome="deteriorated_distress_fu1_6",
                           data={"path": str(path)})
    result = run_experiment(config, out_dir=tmp_path / "out", progress=False, save_predictions=True)
    block = result.summary["models"]["cate"]
    assert block["higher_is_better"] is False
    harm = block["harm"]
    assert len(harm["per_trial"]) == len(block["per_trial"])
    assert 0 <= harm["pooled_share_predicted_harmed"]["estimate"] <= 1
    assert "observed_effect_predicted_harmed" in block["pooled"]
    predictions = pd.read_parquet(result.predictions_path)
    assert np.allclose(predictions["cate"], predictions["risk_mbi"] - predictions["risk_control"])
    assert "pehe" not in block["pooled"]  # no truth for a 0/1 outcome


def test_higher_is_better_follows_the_construct(tmp_path):
    config = effect_config("galante2023", "interaction_linear", n_trials=4, n=800, outcome="wellbeing_fu1_6")
    summary = run_experiment(config, out_dir=tmp_path, progress=False).summary
    assert summary["models"]["cate"]["higher_is_better"] is True
