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
* The p-values must account for the dependence between held-out trials (each trained the models that score the
  others); pooled as independent, their false-positive rate was measured at 8-15% per model. The runner therefore
  passes ``calibrated`` p-values from `mbi_predict.validate.verdict_null` (the validation repeated on
  constant-effect draws of the data); a verdict without them is ``naive`` and the runner reports it as
  ``not_tested``.
* A constant-effect yardstick: "evidence" also needs the model's held-out predictions to beat its training average
  effect given to everyone, on the doubly robust loss (``dr_loss_vs_constant`` pooled below 0;
  ``require_beats_constant``). A ranking that finds some signal but predicts worse than one number for all is not
  evidence that the effect differs between people in a usable way. Adding a condition keeps the level.
* One verdict per run (`resolve_run_rule`, `run_verdict`): the declared primary model's, or Holm's step-down over
  all effect models' intersection-union p-values (with 3 and 5 models, "any model says evidence" was measured at
  15% and 26% under the null without it).

Input: already pooled numbers as plain dicts ``{metric: {"estimate", "se", "ci_low", "ci_high", "df"?, "k"?}}``
(as ``mbi_predict.meta.pool`` reports them). p-values use a t distribution with ``df`` when given (e.g. HKSJ),
else the normal. Without ``se``, it is recovered from the interval assuming it is a ``ci_level`` interval.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy import stats

from mbi_predict.config import VerdictRule  # noqa: F401 - declared in the config, used and re-exported here
from mbi_predict.errors import ConfigError


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


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (Holm 1979)."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, adjusted = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * float(pvalues[name])))
        adjusted[name] = running
    return adjusted


def heterogeneity_verdict(pooled: Mapping[str, Mapping], *, rule: VerdictRule | None = None,
                          interaction_pvalues: Mapping[str, float] | None = None,
                          calibrated: Mapping[str, Mapping] | None = None) -> dict:
    """Apply the declared rule. Returns ``dict(verdict="evidence"|"no_evidence", tests=[...], rule={...}, reason,
    p_value, method, beats_constant)``.

    Each test: name, metric, estimate, se, ci_low, ci_high, p_value (one-sided for model metrics, as given and
    Holm-adjusted for interactions), alpha (level used), passed, decisive. Interaction p-values may also be
    given as ``pooled["interaction_pvalues"]``.

    ``calibrated``: ``{metric: CalibratedTest.to_dict()}`` from `mbi_predict.validate.verdict_null`; its ``p_value``
    replaces the naive one (which treats held-out trials as independent and is kept as ``naive_p``). Without it the
    naive p-values decide and ``method`` says ``naive``: callers that need a controlled error rate (the runner) treat
    such a verdict as not tested. ``p_value`` of the result is the model route's intersection-union p-value (the
    largest of its decisive p-values).
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
        naive_p, p_mc = p, None
        if calibrated is not None:
            calibration = calibrated.get(metric) or {}
            p = calibration.get("p_value")
            p = float("nan") if p is None else float(p)
            p_mc = calibration.get("p_monte_carlo")
        enough_trials = entry.get("k") is None or int(entry["k"]) >= rule.min_trials
        estimate = float("nan") if entry["estimate"] is None else float(entry["estimate"])
        tests.append(dict(name=name, metric=metric, estimate=estimate, se=se,
                          ci_low=entry.get("ci_low"), ci_high=entry.get("ci_high"), p_value=p, alpha=alpha_model,
                          passed=bool(enough_trials and np.isfinite(p) and p < alpha_model), decisive=True,
                          naive_p=naive_p, p_monte_carlo=p_mc,
                          note=None if enough_trials else f"pooled from {entry['k']} < {rule.min_trials} trials"))
    p_model = max((t["p_value"] if np.isfinite(t["p_value"]) else 1.0) for t in tests)
    if not all(t["note"] is None for t in tests):
        p_model = 1.0
    beats_constant = None
    constant = pooled.get(rule.constant_metric)
    if constant is not None and constant.get("estimate") is not None:
        beats_constant = bool(float(constant["estimate"]) < 0)
        tests.append(dict(name="beats_constant_effect", metric=rule.constant_metric,
                          estimate=float(constant["estimate"]), se=constant.get("se"), ci_low=constant.get("ci_low"),
                          ci_high=constant.get("ci_high"), p_value=None, alpha=None, passed=beats_constant,
                          decisive=rule.require_beats_constant, naive_p=None, p_monte_carlo=None,
                          note="held-out doubly robust loss of the predictions minus that of the training average "
                               "effect for everyone; below 0 = better than one effect for all"))
    elif rule.require_beats_constant:
        beats_constant = None
    model_evidence = all(test["passed"] for test in tests if test["decisive"])
    if rule.require_beats_constant and beats_constant is False:
        p_model = 1.0

    interaction_evidence = False
    if use_interactions:
        alpha_inter = rule.alpha / 2 if alternative else rule.alpha
        for name, p_adj in holm(interaction_pvalues).items():
            passed = bool(np.isfinite(p_adj) and p_adj < alpha_inter)
            interaction_evidence |= passed
            tests.append(dict(name=f"interaction:{name}", metric="interaction_p_holm", estimate=None, se=None,
                              ci_low=None, ci_high=None, p_value=p_adj, alpha=alpha_inter, passed=passed,
                              decisive=alternative, note=f"raw p = {float(interaction_pvalues[name]):.4g}"))

    evidence = model_evidence or (alternative and interaction_evidence)
    method = "permutation-calibrated" if calibrated is not None else "naive (held-out trials treated as independent)"
    if model_evidence:
        reason = "pooled RATE" + (" and benefit-calibration slope" if rule.require_calibration_slope else "") + \
                 f" positive at one-sided alpha {alpha_model:g} ({method})" + \
                 (", and better than one average effect for everyone" if beats_constant else "")
    elif evidence:
        reason = f"a Holm-adjusted arm x covariate interaction at alpha {rule.alpha / 2:g}"
    else:
        failed = [_failed_words(t, alpha_model) for t in tests if t["decisive"] and not t["passed"]]
        reason = "not shown: " + "; ".join(failed)
    return dict(verdict="evidence" if evidence else "no_evidence", tests=tests, rule=rule.model_dump(),
                reason=reason, p_value=float(p_model), method=method, beats_constant=beats_constant,
                interaction_evidence=bool(alternative and interaction_evidence))



def _failed_words(test: dict, alpha: float) -> str:
    """A failed decisive test of the verdict, in words (the reason a reader sees)."""
    metric = str(test.get("metric"))
    if test.get("name") in ("rate_positive", "calibration_slope_positive") and test.get("note"):
        return f"{metric.replace('_', ' ')} {test['note']}"   # pooled from fewer than min_trials trials
    if test.get("name") == "rate_positive":
        return f"the held-out ranking by predicted benefit (pooled RATE) is not above 0 at one-sided alpha {alpha:g}"
    if test.get("name") == "calibration_slope_positive":
        return f"the held-out benefit-calibration slope is not above 0 at one-sided alpha {alpha:g}"
    if test.get("name") == "beats_constant_effect":
        return "the predictions do not beat one average effect for everyone on held-out data"
    if metric == "interaction_p_holm":
        return f"no arm x {str(test.get('name')).split(':', 1)[-1]} interaction after Holm"
    return f"{metric.replace('_', ' ')} not shown"


def resolve_run_rule(rule: VerdictRule, effect_models: list[str]) -> tuple[str, str | None]:
    """``(run rule, primary model)`` the run uses; a one-line ``ConfigError`` for a rule that cannot apply."""
    if rule.primary_model is not None and rule.primary_model not in effect_models:
        raise ConfigError(f"heterogeneity.primary_model: {rule.primary_model!r} is not an effect model of this "
                          f"config ({', '.join(effect_models) or 'none'})")
    chosen = rule.run_rule
    if chosen == "auto":
        chosen = "primary" if rule.primary_model is not None or len(effect_models) == 1 else "holm"
    if chosen == "holm" and len(effect_models) < 2:
        raise ConfigError("heterogeneity.run_rule: a family-wise (holm) verdict needs at least two effect models; "
                          "with one, use run_rule: primary")
    if chosen == "primary":
        primary = rule.primary_model or (effect_models[0] if len(effect_models) == 1 else None)
        if primary is None:
            raise ConfigError("heterogeneity.primary_model: run_rule primary needs a primary_model when the config "
                              f"has several effect models ({', '.join(effect_models)})")
        return "primary", primary
    return "holm", None


def run_verdict(per_model: Mapping[str, Mapping], *, rule: VerdictRule, run_rule: str, primary: str | None,
                method: str, not_tested_reason: str | None = None) -> dict:
    """The one verdict of a run from the per-model verdicts (each with ``verdict``, ``p_value``, ``beats_constant``).

    ``primary``: the primary model's verdict is the run's. ``holm``: Holm's step-down (Holm 1979) over the models'
    intersection-union p-values (a model that does not beat the constant-effect yardstick, when required, enters with
    p = 1), valid under any dependence between models; evidence when any adjusted p is below alpha (or, with
    ``interaction_role: alternative``, below alpha / 2, the interactions taking the other half). Models whose verdict
    is ``not_tested`` cannot contribute; when none is tested the run's verdict is ``not_tested``.
    """
    def test_p(verdict: Mapping, name: str):
        return next((t.get("p_value") for t in verdict.get("tests") or [] if t.get("name") == name), None)

    models = {name: {"verdict": v.get("verdict"), "p_value": v.get("p_value"),
                     "p_rate": test_p(v, "rate_positive"), "p_slope": test_p(v, "calibration_slope_positive"),
                     "beats_constant": v.get("beats_constant"), "calibrated": v.get("verdict") != "not_tested"}
              for name, v in per_model.items()}
    out = {"rule": run_rule, "primary_model": primary, "alpha": rule.alpha, "method": method, "models": models}
    if not_tested_reason:
        return {**out, "verdict": "not_tested", "reason": not_tested_reason}
    if run_rule == "primary":
        chosen = per_model[primary]
        reason = f"primary model {primary}: {chosen.get('reason', '')}".strip()
        return {**out, "verdict": chosen["verdict"], "reason": reason}
    tested = {name: v for name, v in per_model.items() if v.get("verdict") != "not_tested"}
    if not tested:
        return {**out, "verdict": "not_tested", "reason": "no effect model has a calibrated test"}
    alternative = rule.interaction_role == "alternative"
    alpha_model = rule.alpha / 2 if alternative else rule.alpha
    pvalues = {name: (float(v["p_value"]) if v.get("p_value") is not None and np.isfinite(v["p_value"]) else 1.0)
               for name, v in tested.items()}
    adjusted = holm(pvalues)
    for name, p in adjusted.items():
        models[name]["p_holm"] = p
    winners = sorted((name for name, p in adjusted.items() if p < alpha_model), key=lambda n: adjusted[n])
    interaction = any(v.get("interaction_evidence") for v in tested.values())
    if winners:
        reason = (f"Holm over {len(tested)} effect models at alpha {alpha_model:g}: "
                  + ", ".join(f"{n} (adjusted p {adjusted[n]:.3g})" for n in winners))
        return {**out, "verdict": "evidence", "reason": reason}
    if interaction:
        return {**out, "verdict": "evidence",
                "reason": f"a Holm-adjusted arm x covariate interaction at alpha {rule.alpha / 2:g}"}
    best = min(adjusted, key=adjusted.get)
    return {**out, "verdict": "no_evidence",
            "reason": f"Holm over {len(tested)} effect models: smallest adjusted p {adjusted[best]:.3g} ({best}), "
                      f"not below alpha {alpha_model:g}"}
