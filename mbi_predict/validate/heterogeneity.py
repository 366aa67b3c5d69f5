"""The pre-declared verdict on heterogeneity of the MBI effect: is there evidence that the model finds who benefits?

The rule (:class:`VerdictRule`, declared in the experiment config before results are seen):

* Primary, model-based evidence needs BOTH, from leave-one-trial-out metrics pooled across held-out trials:
  1. the pooled RATE (AUTOC by default; Yadlowsky et al. 2021) is positive: one-sided test of H0: RATE <= 0;
  2. the pooled benefit-calibration slope is positive: one-sided test of H0: slope <= 0 (the predicted
     differences in effect are borne out, in the right direction, in trials the model never saw).
  Requiring both is an intersection-union test (Berger 1982, Technometrics 24:295): the chance of a false
  "evidence" is at most alpha without any multiplicity correction, since both nulls must be rejected. RATE
  protects against rankings that only fit noise; the slope guards against a RATE driven by a few extreme ranks.
* Classical arm x covariate interaction p-values (e.g. from within-trial two-stage pooling) are optional:
  ``interaction_role="report"`` (default) shows them with Holm-adjusted p-values (Holm 1979) but they do not
  decide; ``"alternative"`` lets them give evidence too, and then alpha is split in half between the two routes
  (Bonferroni), with Holm within the interactions, so the familywise false-positive rate stays <= alpha;
  ``"ignore"`` leaves them out.
* A metric pooled from fewer than ``min_trials`` held-out trials (key ``k``) cannot give evidence.

Input: already pooled numbers as plain dicts ``{metric: {"estimate", "se", "ci_low", "ci_high", "df"?, "k"?}}``
(as ``mbi_predict.meta.pool`` reports them). p-values use a t distribution with ``df`` when given (e.g. HKSJ),
else the normal. Without ``se``, it is recovered from the interval assuming it is a ``ci_level`` interval.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from mbi_predict.errors import ConfigError


class VerdictRule(BaseModel):
    """The declared heterogeneity rule; see the module docstring for its rationale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=0.5, description="familywise false-positive rate of an 'evidence' verdict")
    rate_metric: str = "rate_autoc"
    slope_metric: str = "benefit_calibration_slope"
    require_calibration_slope: bool = True
    interaction_role: Literal["report", "alternative", "ignore"] = "report"
    min_trials: int = Field(3, ge=2)
    ci_level: float = Field(0.95, gt=0, lt=1, description="level of pooled intervals, used only when se is missing")


def _one_sided_p(entry: Mapping, rule: VerdictRule, metric: str) -> tuple[float, float]:
    """(se, p-value of H0: parameter <= 0) from a pooled entry."""
    if "estimate" not in entry:
        raise ConfigError(f"pooled metric {metric!r} has no 'estimate'")
    if entry["estimate"] is None:  # nothing could be pooled (e.g. constant predictions in every trial)
        return float("nan"), float("nan")
    est = float(entry["estimate"])
    se = entry.get("se")
    if se is None:
        if "ci_low" not in entry or "ci_high" not in entry:
            raise ConfigError(f"pooled metric {metric!r} needs 'se' or 'ci_low' and 'ci_high'")
        se = (float(entry["ci_high"]) - float(entry["ci_low"])) / (2 * stats.norm.ppf(0.5 + rule.ci_level / 2))
    se = float(se)
    if not (math.isfinite(est) and math.isfinite(se)) or se <= 0:
        return se, float("nan")
    df = entry.get("df")
    dist = stats.t(float(df)) if df is not None and math.isfinite(float(df)) else stats.norm
    return se, float(dist.sf(est / se))


def _holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, adjusted = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * float(pvalues[name])))
        adjusted[name] = running
    return adjusted


def heterogeneity_verdict(pooled: Mapping[str, Mapping], *, rule: VerdictRule | None = None,
                          interaction_pvalues: Mapping[str, float] | None = None) -> dict:
    """Apply the declared rule. Returns ``dict(verdict="evidence"|"no_evidence", tests=[...], rule={...}, reason)``.

    Each test: name, metric, estimate, se, ci_low, ci_high, p_value (one-sided for model metrics, as given and
    Holm-adjusted for interactions), alpha (level used), passed, decisive. Interaction p-values may also be
    given as ``pooled["interaction_pvalues"]``.
    """
    rule = rule or VerdictRule()
    if interaction_pvalues is None:
        interaction_pvalues = pooled.get("interaction_pvalues")
    use_interactions = bool(interaction_pvalues) and rule.interaction_role != "ignore"
    alternative = use_interactions and rule.interaction_role == "alternative"
    alpha_model = rule.alpha / 2 if alternative else rule.alpha

    metrics = [("rate_positive", rule.rate_metric)]
    if rule.require_calibration_slope:
        metrics.append(("calibration_slope_positive", rule.slope_metric))
    tests = []
    for name, metric in metrics:
        if metric not in pooled:
            raise ConfigError(f"the heterogeneity rule needs pooled {metric!r}; got {sorted(pooled)}")
        entry = pooled[metric]
        se, p = _one_sided_p(entry, rule, metric)
        enough_trials = entry.get("k") is None or int(entry["k"]) >= rule.min_trials
        estimate = float("nan") if entry["estimate"] is None else float(entry["estimate"])
        tests.append(dict(name=name, metric=metric, estimate=estimate, se=se,
                          ci_low=entry.get("ci_low"), ci_high=entry.get("ci_high"), p_value=p, alpha=alpha_model,
                          passed=bool(enough_trials and np.isfinite(p) and p < alpha_model), decisive=True,
                          note=None if enough_trials else f"pooled from {entry['k']} < {rule.min_trials} trials"))
    model_evidence = all(test["passed"] for test in tests)

    interaction_evidence = False
    if use_interactions:
        alpha_inter = rule.alpha / 2 if alternative else rule.alpha
        for name, p_adj in _holm(interaction_pvalues).items():
            passed = bool(np.isfinite(p_adj) and p_adj < alpha_inter)
            interaction_evidence |= passed
            tests.append(dict(name=f"interaction:{name}", metric="interaction_p_holm", estimate=None, se=None,
                              ci_low=None, ci_high=None, p_value=p_adj, alpha=alpha_inter, passed=passed,
                              decisive=alternative, note=f"raw p = {float(interaction_pvalues[name]):.4g}"))

    evidence = model_evidence or (alternative and interaction_evidence)
    if model_evidence:
        reason = "pooled RATE" + (" and benefit-calibration slope" if rule.require_calibration_slope else "") + \
                 f" positive at one-sided alpha {alpha_model:g}"
    elif evidence:
        reason = f"a Holm-adjusted arm x covariate interaction at alpha {rule.alpha / 2:g}"
    else:
        failed = [t["metric"] for t in tests if t["decisive"] and not t["passed"]]
        reason = f"not shown: {', '.join(failed)}"
    return dict(verdict="evidence" if evidence else "no_evidence", tests=tests, rule=rule.model_dump(),
                reason=reason)
