"""The model card's "who benefits, who may be harmed, whom to offer it" section of an effect model: the held-out
group effects by predicted benefit, the harm report and the treatment rule, read from the run's summary.json
(``models.<m>.gates / harm / policy`` and the run-level ``harm_flagged``; `mbi_predict.validate.groups_summary`
makes them). Nothing is re-estimated; aggregates only.

`groups_section` builds the card's dict (None for a prognostic model); `groups_blocks` renders it (text cells
through `mbi_predict.numbers`, as the rest of the card). When harm is
flagged the card shows this section first, right under its title (`card_render.card_blocks`).
"""

from __future__ import annotations

from typing import Any

from mbi_predict.numbers import estimate_ci, p_text, percent
from mbi_predict.numbers import interval as _ci
from mbi_predict.numbers import number as fmt
from mbi_predict.numbers import p_value as fmt_p
from mbi_predict.numbers import sentence
from mbi_predict.validate.groups import OFFER_ALL

Block = tuple  # as `card_render.Block` (which imports this module)

_INTERVAL = ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "k")
_CANDIDATES = {"predicted_harm_group": "predicted to be harmed", "lowest_benefit_group": "predicted to benefit least"}


def _interval(entry: dict | None) -> dict[str, Any]:
    entry = entry or {}
    return {key: entry.get(key) for key in _INTERVAL}


def groups_section(summary: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
    """The card's dict of the section (see the module docstring); ``recorded`` False for runs without it."""
    if entry.get("task") != "effect":
        return None
    gates, harm, policy = entry.get("gates") or {}, entry.get("harm") or {}, entry.get("policy") or {}
    if not (gates or policy) and "per_trial" in harm:  # a 0/1 worsening outcome: harm from predicted risks
        share = harm.get("pooled_share_predicted_harmed") or {}
        return {"recorded": False, "note": "group effects and a treatment rule are estimated for continuous outcomes "
                                           "only; share predicted to be harmed (risk under the MBI above the risk "
                                           "under control): " + estimate_ci(share.get("estimate"),
                                                                            share.get("ci_low"), share.get("ci_high"))}
    if not (gates or harm or policy):
        return {"recorded": False, "note": "group effects, harm and a treatment rule: not recorded in this run"}
    tests = [{"group": _CANDIDATES.get(label, label), **_interval(test.get("effect")), "p_value": test.get("p_value")}
             for label, test in (harm.get("tests") or {}).items()]
    run_harm = summary.get("harm_flagged") or {}
    return {
        "recorded": True,
        "scale": gates.get("scale"),
        "groups": [{"group": g.get("group"), **_interval(g)} for g in gates.get("groups") or []],
        "groups_note": gates.get("note"),
        "top_minus_bottom": {**_interval(gates.get("top_minus_bottom")),
                             "p_value": (gates.get("top_minus_bottom") or {}).get("p_value"),
                             "method": (gates.get("top_minus_bottom") or {}).get("method")},
        "harm": {"flagged": bool(harm.get("flagged")), "tested": bool(harm.get("tested")),
                 "p_value": harm.get("p_value"), "alpha": harm.get("alpha"), "threshold": harm.get("threshold"),
                 "share_predicted_harmed": _interval(harm.get("group_share")), "tests": tests,
                 "described_group": _CANDIDATES.get(harm.get("described_group"), harm.get("described_group")),
                 "described_by": list(harm.get("described_by") or []), "method": harm.get("method"),
                 "deterioration": _deterioration_rows(harm.get("deterioration")),
                 "note": harm.get("note")},
        "run_harm": {"flagged": run_harm.get("flagged"), "reason": run_harm.get("reason")} if run_harm else None,
        "policy": {"rule": policy.get("rule"), "rule_in_folds": policy.get("rule_in_folds"),
                   "value_vs_all": _interval(policy.get("value_vs_all")),
                   "value_vs_none": _interval(policy.get("value_vs_none")),
                   "share_offered": _interval(policy.get("share_offered")),
                   "beats_offer_to_all": policy.get("beats_offer_to_all"), "note": policy.get("note")},
    }


def _deterioration_rows(block: dict | None) -> list[dict[str, Any]] | None:
    if not block:
        return None
    labels = {**_CANDIDATES, "everyone": "everyone"}
    return [{"group": labels.get(label, label), **_interval(entry)} for label, entry in block["groups"].items()]


def _est_ci(entry: dict) -> list[str]:
    return [fmt(entry.get("estimate")), _ci(entry.get("ci_low"), entry.get("ci_high")),
            _ci(entry.get("pi_low"), entry.get("pi_high")), fmt(entry.get("k"))]


def harm_alert(section: dict | None) -> list[Block]:
    """The lines shown under the card's title when harm was flagged (empty otherwise)."""
    if not section or not section.get("recorded") or not section["harm"]["flagged"]:
        return []
    harm = section["harm"]
    described = "; ".join(harm["described_by"]) or "no short description was found"
    return [("h", 2, "Harm flagged"),
            ("p", f"In the held-out trials, participants {harm['described_group'] or 'in a predicted group'} were "
                  f"made worse by the MBI ({p_text(harm['p_value'])} against alpha {fmt(harm['alpha'])}, "
                  f"one-sided, adjusted over the groups tested). Described by: {described}. Details in the "
                  "section \"Who benefits, who may be harmed, whom to offer it\".")]


def groups_blocks(section: dict | None) -> list[Block]:
    """The section as card blocks (empty for a prognostic model)."""
    if section is None:
        return []
    blocks: list[Block] = [("h", 2, "Who benefits, who may be harmed, whom to offer it")]
    if not section.get("recorded"):
        return blocks + [("p", section["note"] + ".")]
    blocks.append(("p", f"Observed effect of the MBI in held-out trials by group of predicted benefit "
                        f"({section.get('scale') or 'benefit scale'}); each trial's groups are cut at the quantiles "
                        "of the training trials' predictions and the per-trial effects are pooled."))
    if section["groups"]:
        blocks.append(("table", ["Group", "Effect", "95% CI", "Prediction interval", "Trials"],
                       [[fmt(g["group"]), *_est_ci(g)] for g in section["groups"]]))
    top = section["top_minus_bottom"]
    if top.get("estimate") is not None:
        blocks.append(("p", f"Most minus least predicted benefit: "
                            f"{estimate_ci(top['estimate'], top.get('ci_low'), top.get('ci_high'))}, "
                            f"{p_text(top.get('p_value'))} "
                            f"({fmt(top.get('method'))})."))
    blocks += [("h", 3, "Harm")] + harm_blocks(section)
    policy = section["policy"]
    blocks.append(("h", 3, "Treatment rule"))
    if policy.get("rule"):
        beats = policy.get("beats_offer_to_all")
        # offered to everyone in every held-out trial: the difference from offering to all (0) and the share
        # offered (1) are constant, which pools to nothing; a trial with another rule would have given both a value
        to_all = (policy["rule"] == OFFER_ALL and policy["value_vs_all"].get("estimate") is None
                  and policy["share_offered"].get("estimate") is None)
        verdict = ("offers the MBI to everyone, so its value is that of offering to everyone (a difference of 0 "
                   "by construction)" if to_all else "beats offering it to everyone" if beats else
                   "does not beat offering it to everyone" if beats is False else
                   "was not compared with offering it to everyone")
        blocks.append(("p", f"Rule learned on the training trials: \"{policy['rule']}\" "
                            f"({fmt(policy.get('rule_in_folds'))}). In the held-out trials it {verdict}."))
        rows = [["against offering the MBI to everyone", *_est_ci(policy["value_vs_all"])],
                ["against offering it to no one", *_est_ci(policy["value_vs_none"])],
                ["share offered", *_est_ci(policy["share_offered"])]]
        if to_all:   # zero-variance rows pool to nothing; say what they are
            trials = fmt(policy["value_vs_none"].get("k"))
            rows[0][1:] = ["0 (by construction)", "–", "–", trials]
            rows[2][1:] = ["100%", "–", "–", trials]
        blocks.append(("table", ["Policy value (per participant)", "Estimate", "95% CI", "Prediction interval",
                                 "Trials"], rows))
    else:
        blocks.append(("p", "No treatment rule was learned in this run."))
    notes = [n for n in (section.get("groups_note"), section["harm"].get("note"), policy.get("note")) if n]
    return blocks + ([("ul", notes)] if notes else [])


def harm_blocks(section: dict) -> list[Block]:
    """The harm verdict, the two tested groups and the traits that describe the group (card and study report)."""
    harm = section["harm"]
    blocks: list[Block] = []
    share = harm["share_predicted_harmed"]
    verdict = ("not tested (no calibrated null draws)" if not harm["tested"] else
               f"{'flagged' if harm['flagged'] else 'not flagged'} ({p_text(harm['p_value'])}, alpha "
               f"{fmt(harm['alpha'])})")
    share_text = (f"{percent(share.get('estimate'), 1)} ({percent(share.get('ci_low'), 1)} to "
                  f"{percent(share.get('ci_high'), 1)})" if share.get("ci_low") is not None
                  else percent(share.get("estimate"), 1))
    blocks.append(("p", f"Harm: {verdict}. Share predicted to be harmed: {share_text}. "
                        f"{sentence(fmt(harm.get('method')))}."))
    if harm["tests"]:
        blocks.append(("table", ["Group tested", "Effect", "95% CI", "Prediction interval", "Trials", "One-sided p"],
                       [[t["group"], *_est_ci(t), fmt_p(t["p_value"])] for t in harm["tests"]]))
    if harm.get("deterioration"):
        blocks.append(("p", "Reliable deterioration: share deteriorated under the MBI minus under control (positive = "
                            "more deterioration with the MBI), observed flags only; descriptive, not tested."))
        blocks.append(("table", ["Group", "Difference", "95% CI", "Prediction interval", "Trials"],
                       [[row["group"], *_est_ci(row)] for row in harm["deterioration"]]))
    if harm["described_by"]:
        blocks.append(("p", f"Traits that describe the group {harm['described_group']} (a depth-2 tree on "
                            "membership; rounded):"))
        blocks.append(("ul", harm["described_by"]))
    if section.get("run_harm") and section["run_harm"].get("reason"):
        blocks.append(("p", f"Run-level harm flag: {'raised' if section['run_harm']['flagged'] else 'not raised'} "
                            f"({section['run_harm']['reason']})."))
    return blocks
