"""The effect model's card: three answers to "who benefits" side by side, and the run-level verdict first."""

from __future__ import annotations

import copy
import json

import pytest

from card_helpers import card_and_markdown
from mbi_predict.report.card import build_card, write_card
from mbi_predict.report.card_text import agreement_sentence


def _term(term, estimate, low, high, p):
    return {"term": term, "estimate": estimate, "se": (high - low) / 4, "ci_low": low, "ci_high": high, "pvalue": p}


BLP = {"terms": [_term("intercept", -0.3, -0.4, -0.2, 0.001), _term("baseline_distress", -0.3, -0.42, -0.18, 0.002),
                 _term("age", 0.001, -0.004, 0.006, 0.6), _term("gender=male", 0.05, -0.1, 0.2, 0.4)],
       "clusters": "trial_id", "n_clusters": 8, "n": 1200, "df": 7, "method": "best linear projection (test)",
       "note": "0 rows with a missing outcome dropped"}

SHAP = {"ranking": [
    {"feature": "baseline_distress", "importance": 0.12, "ci_low": 0.08, "ci_high": 0.16, "null_p": 0.01,
     "top_k_frequency": 1.0, "beats_null": True, "null_status": "tested"},
    {"feature": "age", "importance": 0.05, "ci_low": 0.02, "ci_high": 0.08, "null_p": 0.03, "top_k_frequency": 0.8,
     "beats_null": True, "null_status": "tested"},
    {"feature": "gender", "importance": 0.01, "ci_low": 0.0, "ci_high": 0.02, "null_p": 0.6, "top_k_frequency": 0.2,
     "beats_null": False, "null_status": "tested"}],
    "null": {"test_status": "tested", "reason": None}, "rule": "family-wise: adjusted p <= alpha = 0.05; B = 99"}

INTERACTIONS = {"method": "within-trial interaction, pooled by REML", "note": None, "records": [
    {"modifier": "baseline_distress", "variable": "baseline_distress", "estimate": -0.28, "ci_low": -0.4,
     "ci_high": -0.16, "pvalue": 0.001, "k": 8, "trials": [{"trial_id": "T01", "estimate": -0.3}]},
    {"modifier": "age", "variable": "age", "estimate": 0.002, "ci_low": -0.003, "ci_high": 0.007, "pvalue": 0.4,
     "k": 8, "trials": []}]}

MODEL_VERDICT = {
    "verdict": "evidence", "reason": "pooled RATE and benefit-calibration slope positive", "p_value": 0.004,
    "method": "permutation-calibrated", "beats_constant": True, "rule": {"alpha": 0.05, "rate_metric": "rate_autoc"},
    "tests": [{"name": "rate_positive", "metric": "rate_autoc", "estimate": 0.08, "se": 0.02, "ci_low": 0.04,
               "ci_high": 0.12, "p_value": 0.004, "alpha": 0.05, "passed": True, "decisive": True, "naive_p": 0.001,
               "p_monte_carlo": 0.01, "note": None}],
    "interactions": INTERACTIONS["records"]}

RUN_VERDICT = {"verdict": "evidence", "method": "permutation-calibrated", "alpha": 0.05, "rule": "primary",
               "primary_model": "cf", "reason": "primary model cf: pooled RATE and slope positive",
               "models": {"cf": {"verdict": "evidence", "p_value": 0.004, "p_rate": 0.004, "p_slope": 0.002,
                                 "beats_constant": True, "calibrated": True}}}


@pytest.fixture
def effect_summary(run_summary):
    summary = copy.deepcopy(run_summary)
    summary["models"]["cf"] = {"task": "effect", "estimator": "causal_forest", "outcome_type": "continuous",
                               "per_trial": [], "pooled": {}, "shap": copy.deepcopy(SHAP),
                               "heterogeneity": copy.deepcopy(MODEL_VERDICT)}
    summary["classical_interactions"] = copy.deepcopy(INTERACTIONS)
    summary["best_linear_projection"] = copy.deepcopy(BLP)
    summary["heterogeneity"] = copy.deepcopy(RUN_VERDICT)
    return summary


_card = card_and_markdown


def test_three_answers_side_by_side(tmp_path, effect_summary):
    card, md = _card(tmp_path, effect_summary)
    who = card["explanations"]["who_benefits"]
    rows = {row["covariate"]: row for row in who["rows"]}
    assert list(rows) == ["baseline_distress", "age", "gender"]
    assert rows["baseline_distress"]["flags"] == {"shap": True, "blp": True, "interactions": True}
    assert rows["age"]["flags"] == {"shap": True, "blp": False, "interactions": False}
    assert rows["gender"]["blp"][0]["term"] == "gender=male" and rows["gender"]["interactions"] is None
    assert who["agreement"] == "baseline_distress is flagged by all three; age only by SHAP."
    assert "### Who benefits: three answers" in md
    assert "| baseline_distress | 1 | 0.12 (0.08 to 0.16) | yes | -0.3 (-0.42 to -0.18) |" in md
    assert "gender=male: 0.05 (-0.1 to 0.2)" in md
    # the per-trial interaction rows of the summary do not travel into the card
    assert "T01" not in json.dumps(card["explanations"])


def test_model_level_blp_is_preferred_and_missing_blocks_say_not_run(tmp_path, effect_summary):
    model_blp = copy.deepcopy(BLP)
    model_blp["terms"][1]["estimate"] = -0.99
    effect_summary["models"]["cf"]["best_linear_projection"] = model_blp
    card, _ = _card(tmp_path, effect_summary)
    row = card["explanations"]["who_benefits"]["rows"][0]
    assert row["blp"][0]["estimate"] == -0.99
    assert card["explanations"]["who_benefits"]["methods"]["blp"]["source"] == "model"

    del effect_summary["models"]["cf"]["best_linear_projection"], effect_summary["best_linear_projection"]
    del effect_summary["classical_interactions"], effect_summary["models"]["cf"]["shap"]
    card, md = _card(tmp_path, effect_summary)
    who = card["explanations"]["who_benefits"]
    assert who["rows"] == [] and all(m["status"] == "not run" for m in who["methods"].values())
    assert "None of the three answers" in who["agreement"]
    assert "Best linear projection: not run" in md


def test_not_tested_null_is_never_yes(tmp_path, effect_summary):
    for record in effect_summary["models"]["cf"]["shap"]["ranking"]:
        record.update(beats_null=None, null_status="not_tested")
    effect_summary["models"]["cf"]["shap"]["null"] = {"test_status": "not_tested", "reason": "B = 9 too small"}
    card, md = _card(tmp_path, effect_summary)
    rows = {row["covariate"]: row for row in card["explanations"]["who_benefits"]["rows"]}
    assert rows["age"]["flags"]["shap"] is None and rows["age"]["shap"]["test_status"] == "not_tested"
    assert "not tested (B too small)" in md
    shap_section = md.split("### SHAP feature importance")[1]
    assert "| yes |" not in shap_section and "not tested (B too small)" in shap_section
    assert card["explanations"]["who_benefits"]["agreement"] == ("baseline_distress is flagged by both the BLP and the "
                                                                   "interactions (SHAP not tested).")


def test_run_level_verdict_comes_first_and_tests_are_a_table(tmp_path, effect_summary):
    card, md = _card(tmp_path, effect_summary)
    section = md.split("### Heterogeneity of treatment effect")[1]
    assert section.index("Run-level verdict: evidence of heterogeneity") < section.index("Verdict of cf")
    assert "| cf | evidence of heterogeneity | 0.004 | 0.004 | 0.002 |" in section
    assert "Reason: primary model cf" in section
    assert "| ranking by predicted benefit (RATE) above 0 | RATE (AUTOC) | 0.08 | 0.04 to 0.12 | 0.004 |" in section
    assert "{" not in section.split("### Who benefits")[0]   # no raw dict dump


def test_old_runs_without_run_verdict_and_not_tested_model(tmp_path, effect_summary):
    del effect_summary["heterogeneity"]
    effect_summary["models"]["cf"]["heterogeneity"].update(verdict="not_tested", naive_verdict="evidence",
                                                           reason="no effect models calibrated")
    card, md = _card(tmp_path, effect_summary)
    assert card["explanations"]["run_heterogeneity"] is None
    assert "Run-level verdict: not recorded in this run" in md
    assert "Verdict of cf: not tested. no effect models calibrated" in md
    assert "Uncalibrated (naive) verdict, for information only: evidence of heterogeneity" in md


def test_not_tested_run_verdict_adds_a_caveat(tmp_path, effect_summary):
    effect_summary["heterogeneity"].update(verdict="not_tested", reason="no effect model has a calibrated test")
    card, md = _card(tmp_path, effect_summary)
    assert any("'not tested'" in note for note in card["caveats_and_recommendations"])
    for fmt in ("md", "html", "json"):
        write_card(card, tmp_path / f"card.{fmt}", fmt=fmt)


def test_prognostic_card_has_no_effect_sections(run_folder):
    card = build_card(run_folder, model="elastic_net")
    assert card["explanations"]["who_benefits"] is None and card["explanations"]["run_heterogeneity"] is None


def test_agreement_sentence_wording():
    rows = [{"covariate": "a", "flags": {"shap": True, "blp": True}},
            {"covariate": "b", "flags": {"shap": False, "blp": True}},
            {"covariate": "c", "flags": {"shap": False, "blp": True}}]
    assert agreement_sentence(rows, ["shap", "blp"]) == ("a is flagged by both SHAP and the BLP; b and c only by "
                                                        "the BLP (the interactions not run).")
    assert agreement_sentence([{"covariate": "a", "flags": {"shap": False}}], ["shap"]) == \
        "No covariate is flagged by the one method run."
