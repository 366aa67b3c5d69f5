"""The run-level blocks of `validate.groups` for one effect model: pooled group effects with their tests, the harm
report and the treatment rule, built from the pooled per-trial metrics (aggregates only).

Inference: the top-minus-bottom contrast is tested like the heterogeneity verdict, against its own constant-effect
null draws (`validate.verdict_null`: studentised, t on B - 1 df). Harm is tested one-sided against zero effect
(benefit < 0) in two groups, each against the same null draws centred at the draws' known group effect (each
held-out trial's constant effect), i.e. at the boundary of harm, which carries the dependence between held-out
trials into the test: the predicted-harm group (predicted benefit below -threshold) and the group predicted to
benefit least (GATES group 1). The first is the natural one but is diluted when a learner predicts harm for many
more people than are harmed (seen on the simulator: 23-39% predicted harmed where 14% are); the second has a fixed
size. Harm is flagged when the two tests' Simes combination (``min(2 p_(1), p_(2))``) is below alpha: valid for
positively dependent tests (Sarkar 1998, Ann. Stat. 26:494), which these are (one-sided, same direction,
overlapping groups), and never less powerful than Bonferroni. Without null draws nothing is tested (``p_value``
None, ``tested`` False).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mbi_predict.validate.verdict_null import MIN_NULL_DRAWS, calibrate, observed_statistic

SCALE = "benefit in outcome SD units (positive = the MBI helps; MBI minus control, oriented)"


def _interval(entry: dict | None) -> dict[str, Any]:
    entry = entry or {}
    return {key: entry.get(key) for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "k")}


def harm_pvalue(observed: float, null: np.ndarray | None) -> tuple[float | None, int]:
    """One-sided p of harm (group effect below 0): ``P(t_{B-1} < (T_obs - mean) / (sd sqrt(1 + 1/B)))`` over the
    null statistics, which `verdict_null.run_null` centres at each draw's true group effect (so they are draws of
    ``estimate / se`` at an effect of exactly 0, the boundary of harm); the SD is never taken below 1 (the pooled
    SE itself). (None, B used) when untestable."""
    if null is None or not math.isfinite(observed):
        return None, 0
    finite = np.asarray(null, dtype=float)
    finite = finite[np.isfinite(finite)]
    if len(finite) < MIN_NULL_DRAWS or finite.std(ddof=1) <= 0:
        return None, len(finite)
    scale = max(1.0, float(finite.std(ddof=1)))
    statistic = (observed - float(finite.mean())) / (scale * math.sqrt(1 + 1 / len(finite)))
    return float(stats.t(len(finite) - 1).cdf(statistic)), len(finite)


def describe_group(members: np.ndarray, traits: pd.DataFrame, *, min_leaf: int = 20) -> list[str]:
    """Which traits describe a group: the leaves of a depth-2 classification tree on membership where most are
    members, as rounded rules ("baseline_distress > 1.1 and age <= 26: 78% of 130")."""
    from sklearn.tree import DecisionTreeClassifier

    members = np.asarray(members, dtype=bool)
    if members.sum() < min_leaf or (~members).sum() < min_leaf:
        return []
    tree = DecisionTreeClassifier(max_depth=2, min_samples_leaf=min_leaf, random_state=0)
    tree.fit(traits.to_numpy(dtype=float), members)
    inner, names = tree.tree_, list(traits.columns)
    out = []

    def walk(node: int, conditions: list[str]) -> None:
        if inner.children_left[node] == -1:
            counts = inner.value[node][0] * inner.n_node_samples[node]
            share = counts[1] / counts.sum() if counts.sum() else 0
            if share > 0.5:
                n = int(inner.n_node_samples[node])
                out.append(f"{' and '.join(conditions) or 'everyone'}: {share:.0%} of about {round(n, -1):.0f}")
            return
        name, cut = names[inner.feature[node]], float(f"{inner.threshold[node]:.2g}")
        if "=" in name and 0 < cut < 1:   # a one-hot level ("delivery=online"): is / is not, not "> 0.5"
            variable, level = name.split("=", 1)
            walk(inner.children_left[node], conditions + [f"{variable} is not {level}"])
            walk(inner.children_right[node], conditions + [f"{variable} is {level}"])
            return
        walk(inner.children_left[node], conditions + [f"{name} <= {cut:g}"])
        walk(inner.children_right[node], conditions + [f"{name} > {cut:g}"])

    walk(0, [])
    return out


#: the harm candidates, each tested one-sided for harm: (label, pooled metric, extras key of its members)
HARM_CANDIDATES = (("predicted_harm_group", "harm_group_effect", "harmed"),
                   ("lowest_benefit_group", "gates_1", "lowest"))


def simes(pvalues: list[float]) -> float:
    """Simes' combined p of m tests: ``min_i m p_(i) / i`` (sorted p), at most 1."""
    ordered = np.sort(np.asarray(pvalues, dtype=float))
    m = len(ordered)
    return float(min(1.0, np.min(m * ordered / np.arange(1, m + 1))))


def _deterioration(pooled: dict) -> dict[str, Any] | None:
    """The pooled difference in the share reliably deteriorated (MBI minus control) per described group, or None
    when the data hold no deterioration flag for the outcome."""
    groups = {"predicted_harm_group": "harm_group", "lowest_benefit_group": "lowest_group", "everyone": "everyone"}
    if not any(f"deterioration_rd_{suffix}" in pooled for suffix in groups.values()):
        return None
    return {"groups": {label: _interval(pooled.get(f"deterioration_rd_{suffix}")) for label, suffix in groups.items()},
            "note": "share reliably deteriorated under the MBI minus under control (positive = more deterioration "
                    "with the MBI), observed flags only, pooled across held-out trials; descriptive, not tested"}


def harm_block(config, pooled: dict, forest: dict, null: dict, results: list,
               traits: pd.DataFrame | None) -> dict[str, Any]:
    """The harm report of one effect model: two candidate groups, each tested one-sided for harm with the spread
    of its null draws, flagged when the Simes combination of the tested ones (`simes`; see the module docstring) is
    below alpha; the traits that describe the candidate with the smaller p."""
    settings = config.who_benefits
    alpha = config.heterogeneity.alpha
    tests: dict[str, dict[str, Any]] = {}
    for label, metric, _ in HARM_CANDIDATES:
        p, used = harm_pvalue(observed_statistic(config, forest, metric), null.get(metric))
        tests[label] = {"metric": metric, "effect": _interval(pooled.get(metric)),
                        "effect_complete_case": _interval(pooled.get(f"{metric}_cc")), "p_value": p, "B": used}
    tested = {label: t["p_value"] for label, t in tests.items() if t["p_value"] is not None}
    p_harm = simes(list(tested.values())) if tested else None
    described_group = min(tested, key=tested.get) if tested else HARM_CANDIDATES[0][0]
    key = dict((label, extra) for label, _, extra in HARM_CANDIDATES)[described_group]
    members = [r.extras[key] for r in results if key in r.extras]
    described: list[str] = []
    if traits is not None and members and sum(len(m) for m in members) == len(traits):
        described = describe_group(np.concatenate(members).astype(bool), traits, min_leaf=settings.min_leaf)
    return {"flagged": bool(p_harm is not None and p_harm < alpha), "tested": p_harm is not None,
            "threshold": settings.harm_threshold, "group_share": _interval(pooled.get("harm_group_share")),
            "group_effect": tests["predicted_harm_group"]["effect"],
            "group_effect_complete_case": tests["predicted_harm_group"]["effect_complete_case"],
            "lowest_group_effect": tests["lowest_benefit_group"]["effect"],
            "p_value": p_harm, "alpha": alpha, "B": max((t["B"] for t in tests.values()), default=0),
            "tests": tests, "described_group": described_group, "described_by": described,
            "deterioration": _deterioration(pooled),
            "method": f"one-sided test of harm (benefit < 0) in the predicted-harm group (predicted benefit below "
                      f"{0.0 - settings.harm_threshold:g}) and in the group predicted to benefit least (lowest of "
                      f"{settings.n_groups} by predicted benefit); "
                      + (f"Simes combination over the {len(tested)} tested" if len(tested) > 1 else
                         "only one of them could be tested" if tested else "neither could be tested"),
            "note": "effects on the benefit scale (negative = the MBI made them worse); trials with fewer than 10 "
                    "observed in a group are left out of that group's pooling"}


def groups_block(config, name: str, pooled: dict, forest: dict, null: dict | None, results: list,
                 traits: pd.DataFrame | None) -> dict[str, Any]:
    """``gates``, ``harm`` and ``policy`` of one effect model (see the module docstring)."""
    settings = config.who_benefits
    n_groups = settings.n_groups
    gates = {"scale": SCALE, "groups": [{"group": k, **_interval(pooled.get(f"gates_{k}"))}
                                        for k in range(1, n_groups + 1)],
             "complete_case": [{"group": k, **_interval(pooled.get(f"gates_{k}_cc"))}
                               for k in range(1, n_groups + 1)],
             "note": f"group {n_groups} = most predicted benefit; groups cut at the training trials' quantiles; "
                     "held-out effects weighted by the inverse probability of an observed outcome"}
    contrast = _interval(pooled.get("gates_top_minus_bottom"))
    null = null or {}
    if "gates_top_minus_bottom" in null:
        test = calibrate("gates_top_minus_bottom", observed_statistic(config, forest, "gates_top_minus_bottom"),
                         null["gates_top_minus_bottom"])
        contrast.update(p_value=None if math.isnan(test.p_value) else test.p_value, B=test.B_used,
                        method="permutation-calibrated, one-sided (top > bottom)")
    else:
        contrast.update(p_value=None, method="not tested (no null draws for this model)")
    gates["top_minus_bottom"] = contrast

    harm = harm_block(config, pooled, forest, null, results, traits)

    rules = [r.extras["rule"] for r in results if "rule" in r.extras]
    common = max(dict.fromkeys(rules), key=rules.count) if rules else None  # ties: first seen (stable)
    policy = {"rule": common, "rule_in_folds": f"{rules.count(common)} of {len(rules)} held-out trials" if common
              else None, "value_vs_all": _interval(pooled.get("policy_value_vs_all")),
              "value_vs_none": _interval(pooled.get("policy_value_vs_none")),
              "share_offered": _interval(pooled.get("policy_share_offered")),
              "value_vs_all_complete_case": _interval(pooled.get("policy_value_vs_all_cc"))}
    low = policy["value_vs_all"].get("ci_low")
    policy["beats_offer_to_all"] = None if low is None else bool(low > 0)
    policy["note"] = ("rule learned on the training trials (depth <= 2, the model's predicted benefit as reward) and "
                      "valued on each held-out trial's doubly robust scores; the most frequent rule is shown")
    return {"gates": gates, "harm": harm, "policy": policy}


def harm_flagged(models: dict[str, dict], alpha: float) -> dict[str, Any]:
    """Run-level harm flag: Holm over the effect models' harm p-values (family-wise over models)."""
    from mbi_predict.validate.heterogeneity import holm

    pvalues = {name: block["harm"]["p_value"] for name, block in models.items()
               if (block.get("harm") or {}).get("p_value") is not None}
    if not pvalues:
        return {"flagged": False, "tested": False, "models": {}, "alpha": alpha,
                "reason": "no effect model had a calibrated harm test"}
    adjusted = holm(pvalues)
    flagged = sorted(name for name, p in adjusted.items() if p < alpha)
    family = f"Holm over {len(adjusted)} model{'s' if len(adjusted) != 1 else ''}"
    return {"flagged": bool(flagged), "tested": True, "models": adjusted, "alpha": alpha,
            "reason": (f"harm found by {', '.join(flagged)} ({family})" if flagged else
                       f"no model's harm test is below alpha after {family}")}
