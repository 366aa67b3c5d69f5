"""The effect model's card: group effects, harm and the treatment rule, and harm first when it was flagged."""

from __future__ import annotations

import copy

import pytest

from card_helpers import card_and_markdown
from mbi_predict.report.card import build_card


def _iv(estimate, low, high, k=8):
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "pi_low": low - 0.1, "pi_high": high + 0.1, "k": k}


GATES = {"scale": "benefit in outcome SD units", "note": "group 5 = most predicted benefit",
         "groups": [{"group": k, **_iv(-0.3 + 0.15 * k, -0.5 + 0.15 * k, -0.1 + 0.15 * k)} for k in range(1, 6)],
         "top_minus_bottom": {**_iv(0.6, 0.3, 0.9), "p_value": 0.004, "method": "permutation-calibrated"}}


def _harm(flagged: bool) -> dict:
    p_low, p_pred = (0.004, 0.03) if flagged else (0.6, 0.7)
    return {"flagged": flagged, "tested": True, "threshold": 0.0, "group_share": _iv(0.3, 0.25, 0.35),
            "group_effect": _iv(-0.1, -0.3, 0.1), "lowest_group_effect": _iv(-0.25, -0.4, -0.1),
            "p_value": min(1.0, 2 * p_low, p_pred), "alpha": 0.05, "B": 19,
            "tests": {"predicted_harm_group": {"metric": "harm_group_effect", "effect": _iv(-0.1, -0.3, 0.1),
                                               "p_value": p_pred, "B": 19},
                      "lowest_benefit_group": {"metric": "gates_1", "effect": _iv(-0.25, -0.4, -0.1),
                                               "p_value": p_low, "B": 19}},
            "described_group": "lowest_benefit_group",
            "described_by": ["baseline_distress > 1.1: 81% of about 300"],
            "method": "one-sided test of harm in two groups; Simes combination over the 2 tested", "note": "benefit scale"}


POLICY = {"rule": "offer the MBI unless baseline_distress > 1.1", "rule_in_folds": "7 of 8 held-out trials",
          "value_vs_all": _iv(0.04, 0.01, 0.07), "value_vs_none": _iv(0.3, 0.2, 0.4),
          "share_offered": _iv(0.85, 0.8, 0.9), "beats_offer_to_all": True, "note": "depth <= 2"}


@pytest.fixture
def summary(run_summary):
    def make(flagged: bool) -> dict:
        s = copy.deepcopy(run_summary)
        s["models"]["cf"] = {"task": "effect", "estimator": "t_learner_xgb", "outcome_type": "continuous",
                             "per_trial": [], "pooled": {}, "gates": copy.deepcopy(GATES),
                             "harm": _harm(flagged), "policy": copy.deepcopy(POLICY)}
        s["harm_flagged"] = {"flagged": flagged, "tested": True, "alpha": 0.05, "models": {"cf": 0.008},
                             "reason": "harm found by cf" if flagged else "no harm"}
        return s
    return make


_card = card_and_markdown


def test_groups_harm_and_rule_are_in_the_card(tmp_path, summary):
    card, md = _card(tmp_path, summary(False))
    section = card["who_benefits_groups"]
    assert section["recorded"] and [g["group"] for g in section["groups"]] == [1, 2, 3, 4, 5]
    assert section["groups"][0]["estimate"] == pytest.approx(-0.15)
    assert not section["harm"]["flagged"] and section["harm"]["p_value"] == pytest.approx(0.7)
    assert [t["group"] for t in section["harm"]["tests"]] == ["predicted to be harmed", "predicted to benefit least"]
    assert "Who benefits, who may be harmed, whom to offer it" in md
    assert "offer the MBI unless baseline_distress > 1.1" in md and "beats offering it to everyone" in md
    assert "baseline_distress > 1.1: 81% of about 300" in md
    # not flagged: no alert under the title, the section comes after subgroup performance
    assert "## Harm flagged" not in md
    assert md.index("Who benefits, who may be harmed") > md.index("## Evaluation")


def test_flagged_harm_comes_first(tmp_path, summary):
    card, md = _card(tmp_path, summary(True))
    assert card["who_benefits_groups"]["harm"]["flagged"]
    lines = [line for line in md.splitlines() if line.startswith("## ")]
    assert lines[0] == "## Harm flagged"
    alert = md[md.index("## Harm flagged"):md.index(lines[1])]
    assert "predicted to benefit least" in alert and "p = 0.008" in alert and "baseline_distress > 1.1" in alert


def test_not_recorded_and_prognostic(tmp_path, summary, run_folder):
    old = summary(False)
    for key in ("gates", "harm", "policy"):
        del old["models"]["cf"][key]
    card, md = _card(tmp_path, old)
    assert card["who_benefits_groups"] == {"recorded": False, "note": "group effects, harm and a treatment rule: "
                                                                      "not recorded in this run"}
    assert "not recorded in this run." in md
    assert build_card(run_folder, model="elastic_net")["who_benefits_groups"] is None


def test_risk_harm_of_a_binary_outcome_is_said_not_tabled(tmp_path, summary):
    s = summary(False)
    for key in ("gates", "policy"):
        del s["models"]["cf"][key]
    s["models"]["cf"]["harm"] = {"per_trial": [], "pooled": {}, "note": "risk",
                                 "pooled_share_predicted_harmed": _iv(0.12, 0.08, 0.16)}
    card, md = _card(tmp_path, s)
    section = card["who_benefits_groups"]
    assert section["recorded"] is False and "0.12 (0.08 to 0.16)" in section["note"]
    assert "continuous outcomes only" in md


def test_a_rule_that_offers_to_everyone_says_so_instead_of_dashes(tmp_path, summary):
    s = summary(False)
    empty = {key: None for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "k")}
    s["models"]["cf"]["policy"].update(rule="offer the MBI to everyone", rule_in_folds="8 of 8 held-out trials",
                                       value_vs_all=dict(empty), share_offered=dict(empty), beats_offer_to_all=None)
    _, md = _card(tmp_path, s)
    section = md.split("### Treatment rule")[1]
    assert "a difference of 0 by construction" in section and "was not compared" not in section
    assert "| against offering the MBI to everyone | 0 (by construction) | – | – | 8 |" in section
    assert "| share offered | 100% | – | – | 8 |" in section
