"""Dependence-aware inference for the heterogeneity verdict: a permutation calibration of the pooled held-out
statistics.

Why it is needed. The verdict tests the pooled RATE and the pooled benefit-calibration slope of the held-out trials.
Pooling them by random-effects meta-analysis treats the held-out trials as independent, but they are not: every
trial's data trained the models that score the other trials, so the per-trial metrics share noise. On consortia
without any effect modification the pooled t statistics had SD 1.26-1.69 where about 1.1 is expected, and 13% of
one-sided tests had p < 0.05 (the project's issue 14 gives the measurements). The per-trial standard errors are
right; the covariance between trials is missing, and no formula for it is available for arbitrary learners.

The method (a Monte Carlo / "randomisation" calibration of the whole leave-one-trial-out procedure):

1. Impute the data under the null of no effect heterogeneity within trials. For a continuous outcome each trial's
   constant effect is estimated by its difference in means, tau_k; the control potential outcome is
   ``Y0 = Y - tau_k T``; the arm is re-drawn by permuting it within the trial (the trial's size and allocation ratio
   are kept, as its randomisation would; the permutation runs separately among participants with and without an
   observed outcome, so the observed counts per arm are the real ones: a test conditional on the missingness
   pattern); the null outcome is ``Y* = Y0 + tau_k T*``. This is the plug-in
   Fisher randomisation test of a constant treatment effect of Ding, Feller & Miratrix (2016, JRSS B 78:655), trial
   by trial: under the null the imputed data have exactly the structure of the real data, effect level included,
   but no covariate modifies the effect. For a binary outcome, where an additive constant effect would leave {0, 1},
   the arm alone is permuted within trial (the sharp null of no effect).
2. Run the *same* leave-one-trial-out validation of the model on B such data sets (same folds, same learners, same
   pooling) and compute the same pooled statistic ``T = pooled estimate / pooled SE`` for the RATE and the slope.
   This reproduces the dependence between held-out trials, whatever its source, because the whole procedure is
   repeated.
3. Compare the observed statistic with the B null statistics. The decision uses the studentised p-value
   ``p = P(t_{B-1} > (T_obs - mean(T_null)) / (sd(T_null) sqrt(1 + 1/B)))``: if the null statistics are normal
   (pooled statistics are weighted means of many participants), ``T_obs`` is a new draw from the same distribution
   and this ratio is exactly t with B - 1 degrees of freedom (the prediction-interval argument), so the test is
   valid for any B >= 2 and its p-values are continuous (uniform under the null, which the benchmark checks with a
   Kolmogorov-Smirnov test). It also removes any bias of the statistic under the null. The rank-based Monte Carlo
   p-value ``(1 + #{T_null >= T_obs}) / (B + 1)`` (valid without normality, but coarse: never below 1/(B+1)) is
   reported beside it.

Null draws are shared by every model of the run (draw b is the same data set for each model), so a family-wise
rule across models sees the same null. Refits are ordinary fold jobs (``FoldJob(light=True)``: no intervals, SHAP or
predictions kept) and run in the same parallel batch machinery as the main folds.

Why not the alternatives: repeated sample splitting by trial (Chernozhukov, Demirer, Duflo & Fernandez-Val's
generic ML inference) scores each split's main half with a model trained on the other half, which is valid but halves
the trials that score (few clusters, little power with 8-13 trials) and its median-p adjustment is conservative by a
factor of two; an analytic variance correction for overlapping training sets (as Nadeau & Bengio 2003 for
cross-validation) rests on a heuristic correlation that is not known for these learners and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mbi_predict.errors import MBIError
from mbi_predict.parallel import run_in_order
from mbi_predict.validate.loto import FoldJob, FoldPlan, PreparedData, derive_seed, run_fold
from mbi_predict.validate.pooling import pool_metric

#: group statistics calibrated with the same null draws (``validate.groups``): the top-minus-bottom group
#: contrast (tested like the verdict), the predicted-harm group's and the lowest group's effects (tested for harm
#: against 0 with their draws centred at the draws' truth: `CENTRED_STATISTICS`)
GROUP_STATISTICS = ("gates_top_minus_bottom", "harm_group_effect", "gates_1")
#: group effects tested against 0 (harm), not against the null: their null statistics are centred at each draw's
#: known truth (the held-out trial's constant effect tau_k, on the benefit scale) before pooling, so they measure
#: the spread of the statistic at an effect of 0, not at the average benefit (where the random-effects SE's own
#: variability inflated the SD of ``estimate / se`` to 1.7-1.9 in the harm scenario and made the test conservative)
CENTRED_STATISTICS = ("harm_group_effect", "gates_1")
#: fewest finite null statistics for a calibrated test (the t reference needs an SD estimate of some stability)
MIN_NULL_DRAWS = 5


def _trial_effects(y: np.ndarray, t: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """tau_k per trial code: the difference in means over the trial's observed outcomes (0 when it lacks an arm)."""
    observed = np.isfinite(y)
    tau = np.zeros(codes.max() + 1 if len(codes) else 0)
    for code in range(len(tau)):
        rows = (codes == code) & observed
        treated, control = y[rows & (t == 1)], y[rows & (t == 0)]
        if treated.size and control.size:
            tau[code] = treated.mean() - control.mean()
    return tau


def trial_effects(Y, T, groups) -> dict[str, float]:
    """{trial: tau_k}: each trial's constant effect in the null draws (`constant_effect_outcome`)."""
    labels, codes = pd.factorize(np.asarray(groups).reshape(-1))[::-1]
    tau = _trial_effects(np.asarray(Y, dtype=float).reshape(-1), np.asarray(T, dtype=float).reshape(-1), codes)
    return {str(label): float(tau[code]) for code, label in enumerate(labels)}


def constant_effect_outcome(Y, T, T_star, groups) -> np.ndarray:
    """``Y* = Y - tau_k T + tau_k T*``, tau_k the difference in means of trial k over its observed outcomes (0 when
    a trial lacks an arm); missing outcomes stay missing. Shared by this calibration and SHAP's permutation null
    (`mbi_predict.explain.null`)."""
    y = np.asarray(Y, dtype=float).reshape(-1)
    t, t_star = np.asarray(T, dtype=float).reshape(-1), np.asarray(T_star, dtype=float).reshape(-1)
    codes = np.zeros(len(y), dtype=int) if groups is None else pd.factorize(np.asarray(groups).reshape(-1))[0]
    tau = _trial_effects(y, t, codes)
    return y + tau[codes] * (t_star - t)


def constant_effect_draw(data: PreparedData, rng: np.random.Generator) -> PreparedData:
    """One data set drawn under the null of a constant effect within each trial (see the module docstring)."""
    y, arm, trial = data.y.astype(float), data.arm.astype(int), np.asarray(data.trial)
    new_arm = arm.copy()
    observed_outcome = np.isfinite(y)
    for trial_id in pd.unique(trial):
        rows = np.flatnonzero(trial == trial_id)
        # permuted separately among participants with and without an observed outcome, so each trial keeps its
        # number of observed participants per arm (the real data's; the held-out metrics need enough per arm)
        for stratum in (rows[observed_outcome[rows]], rows[~observed_outcome[rows]]):
            new_arm[stratum] = arm[stratum][rng.permutation(len(stratum))]
    new_y = y if data.task == "binary" else constant_effect_outcome(y, arm, new_arm, trial)
    X = data.X
    if "arm" in X.columns:
        X = X.assign(arm=new_arm)
    return replace(data, y=new_y, arm=new_arm, X=X, truth_cate=None, deteriorated=None)


def pooled_statistic(metric: str, values: list[float], variances: list[float], labels: list[str], *,
                     method: str, level: float = 0.95) -> float:
    """``estimate / se`` of the pooled metric on its pooling scale (NaN when nothing could be pooled).

    The SE is the random-effects model's ``sqrt(1 / sum(w))``, never Hartung-Knapp's: HKSJ multiplies it by the
    weighted residual variance, which is often far below 1 with few, agreeing trials, so its ratio has heavy tails
    (measured: a null SD of 7 where the z-type ratio has about 1.5) that a studentised calibration cannot absorb.
    The calibration supplies the reference distribution, so the choice of SE only has to be stable."""
    try:
        _, result = pool_metric(metric, values, variances, labels, method=method, hksj=False, level=level)
    except MBIError:  # a null draw whose pooling fails gives no statistic (counted as B - B_used)
        return math.nan
    if result is None or not (math.isfinite(result.se) and result.se > 0):
        return math.nan
    return float(result.estimate / result.se)


def observed_statistic(config, forest: dict, metric: str) -> float:
    """The real run's ``estimate / se`` of ``metric`` from its per-trial values (``forest[metric]``: values,
    variances, labels), exactly as the null draws' statistics are computed (NaN when the metric is absent)."""
    entry = forest.get(metric)
    if entry is None:
        return math.nan
    return pooled_statistic(metric, entry["values"], entry["variances"], entry["labels"],
                            method=config.validation.pooling_method, level=config.validation.level)


@dataclass(frozen=True)
class CalibratedTest:
    """One pooled statistic against its permutation null."""

    metric: str
    observed: float          # T = pooled estimate / pooled SE of the real data
    null_mean: float
    null_sd: float
    B: int                   # null draws run
    B_used: int              # null draws with a finite statistic
    p_value: float           # studentised (t with B_used - 1 df): the one the verdict uses
    p_monte_carlo: float     # (1 + #{null >= observed}) / (B + 1), beside it
    naive_p: float           # the uncalibrated one-sided p (independent held-out trials), for comparison

    def to_dict(self) -> dict[str, Any]:
        from mbi_predict.io import json_safe

        return json_safe(self.__dict__.copy())


def calibrate(metric: str, observed: float, null: np.ndarray, naive_p: float = math.nan) -> CalibratedTest:
    """Compare an observed pooled statistic with its null draws (one-sided: large = evidence)."""
    null = np.asarray(null, dtype=float)
    finite = null[np.isfinite(null)]
    B, used = len(null), len(finite)
    p = p_mc = math.nan
    mean = sd = math.nan
    if used >= 2:
        mean, sd = float(finite.mean()), float(finite.std(ddof=1))
    if math.isfinite(observed) and used >= MIN_NULL_DRAWS and sd > 0:
        p = float(stats.t(used - 1).sf((observed - mean) / (sd * math.sqrt(1 + 1 / used))))
        # a non-finite null statistic (nothing poolable) counts as no evidence, i.e. below the observed one
        p_mc = float((1 + np.sum(finite >= observed)) / (B + 1))
    return CalibratedTest(metric, float(observed), mean, sd, B, used, p, p_mc, float(naive_p))


def null_fold_jobs(models: list, plan: FoldPlan, *, seed: int, B: int, bootstrap: int,
                   inner_folds: int, groups=None) -> list[tuple[int, FoldJob]]:
    """(draw, job) for every null draw x model x held-out fold, seeds independent of the order they run in."""
    jobs = []
    for b in range(1, B + 1):
        for spec in models:
            for fold in plan.folds:
                job_seed = derive_seed(seed, spec.name, fold.label, "verdict_null", b)
                jobs.append((b, FoldJob(spec, fold, job_seed, bootstrap, inner_folds, light=True, groups=groups)))
    return jobs


def _run_null_job(job: FoldJob, data: PreparedData):
    result = run_fold(job, data)
    return result.held_out, {name: (value.value, value.variance) for name, value in result.metrics.items()}


def run_null(config, data: PreparedData, plan: FoldPlan, models: list, *, B: int, n_jobs: int = 1,
             metrics: tuple[str, ...], on_result: Any = None) -> dict[str, dict[str, np.ndarray]]:
    """``{model: {metric: B null statistics}}``: the leave-one-trial-out validation of each model repeated on B
    constant-effect draws of the data, each pooled as the real run pools (see the module docstring)."""
    if B < 1 or not models:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence([int(config.seed), 0x5EED, 14]))
    draws = {b: constant_effect_draw(data, rng) for b in range(1, B + 1)}
    jobs = null_fold_jobs(models, plan, seed=config.seed, B=B, bootstrap=config.validation.bootstrap,
                          inner_folds=config.tuning.inner_folds, groups=config.group_settings())
    outputs = run_in_order([(_run_null_job, (job, draws[b])) for b, job in jobs],  # in job order
                           1 if len(jobs) <= 1 else n_jobs, on_result)
    collected: dict[tuple[str, int], list] = {}
    for (b, job), output in zip(jobs, outputs):
        collected.setdefault((job.model.name, b), []).append(output)
    validation = config.validation
    sign = -1.0 if data.outcome_higher_is_worse else 1.0
    centres = {k: sign * tau for k, tau in trial_effects(data.y, data.arm, data.trial).items()}
    out: dict[str, dict[str, np.ndarray]] = {}
    for spec in models:
        out[spec.name] = {}
        for metric in metrics:
            statistics = []
            for b in range(1, B + 1):
                folds = collected[(spec.name, b)]
                values = [m[metric][0] if metric in m else math.nan for _, m in folds]
                if metric in CENTRED_STATISTICS:
                    values = [v - centres.get(str(label), math.nan) for v, (label, _) in zip(values, folds)]
                variances = [m[metric][1] if metric in m else math.nan for _, m in folds]
                statistics.append(pooled_statistic(metric, values, variances, [label for label, _ in folds],
                                                   method=validation.pooling_method, level=validation.level))
            out[spec.name][metric] = np.asarray(statistics, dtype=float)
    return out


#: how the runner describes the calibration in summaries
METHOD = ("permutation calibration of the pooled held-out statistics: the leave-one-trial-out validation repeated on "
          "constant-effect draws (each trial's effect kept, the arm permuted within trial), studentised p-value "
          "with t on B - 1 df (mbi_predict.validate.verdict_null)")


@dataclass(frozen=True)
class VerdictCalibration:
    """What the run calibrated: the run rule, the primary model, the null statistics per calibrated model, or why
    the run cannot give a verdict (``not_tested``)."""

    run_rule: str
    primary: str | None
    null: dict[str, dict[str, np.ndarray]]
    not_tested: str | None = None

    def not_calibrated_reason(self, model: str) -> str:
        if self.not_tested:
            return self.not_tested
        return f"not calibrated: only the primary model ({self.primary}) is" if self.primary else "not calibrated"

    @property
    def method(self) -> str:
        return "none" if self.not_tested else METHOD


def calibrate_run(config, data: PreparedData, plan: FoldPlan, *, n_jobs: int = 1,
                  on_result: Any = None) -> VerdictCalibration | None:
    """Run the permutation calibration the config's heterogeneity rule asks for (None without effect models).

    Participant-level K-fold across several trials gives no verdict unless ``internal_validation`` is set: its
    held-out participants share trials (and so trial-level noise) with the training participants, which is the
    dependence the verdict must not feed on. ``calibration: none`` gives no verdict either (the naive test's
    false-positive rate was measured above alpha).
    """
    planned = _calibration_plan(config, data, plan)
    if planned is None or isinstance(planned, VerdictCalibration):
        return planned
    run_rule, primary, models = planned
    rule = config.heterogeneity
    metrics = (rule.rate_metric,) + ((rule.slope_metric,) if rule.require_calibration_slope else ()) + \
        (GROUP_STATISTICS if config.group_settings() is not None and data.task == "continuous" else ())
    null = run_null(config, data, plan, models, B=rule.null_B, n_jobs=n_jobs, metrics=metrics, on_result=on_result)
    return VerdictCalibration(run_rule, primary, null)


def _calibration_plan(config, data: PreparedData, plan: FoldPlan):
    """None without effect models; a `VerdictCalibration` saying why when the run gives no calibrated verdict; else
    (run rule, primary model, the effect models to refit on the null draws)."""
    from mbi_predict.validate.heterogeneity import resolve_run_rule

    rule = config.heterogeneity
    effect = [m for m in config.models if m.kind == "effect"]
    if not effect:
        return None
    run_rule, primary = resolve_run_rule(rule, [m.name for m in effect])
    n_trials = len(np.unique(data.trial))
    if plan.scheme == "kfold" and n_trials > 1 and not rule.internal_validation:
        return VerdictCalibration(run_rule, primary, {}, "participant-level K-fold over several trials cannot "
                                  "support a verdict (held-out participants share trials with the training data); "
                                  "use validation.scheme: loto, or heterogeneity.internal_validation: true")
    if rule.calibration == "none":
        return VerdictCalibration(run_rule, primary, {}, "heterogeneity.calibration is none: the naive pooled test "
                                  "treats held-out trials as independent and its false-positive rate exceeds alpha")
    if rule.null_B < MIN_NULL_DRAWS:
        return VerdictCalibration(run_rule, primary, {}, f"heterogeneity.null_B = {rule.null_B} is below "
                                  f"{MIN_NULL_DRAWS} constant-effect draws: no calibrated test")
    return run_rule, primary, [m for m in effect if primary is None or m.name == primary]


def null_refits(config, data: PreparedData, plan: FoldPlan) -> tuple[list[str], int]:
    """(the models the calibration refits on every fold, the number of null draws): ``([], 0)`` when the run has no
    calibration. What `calibrate_run` will run, for estimating its cost before it does."""
    planned = _calibration_plan(config, data, plan)
    if planned is None or isinstance(planned, VerdictCalibration):
        return [], 0
    return [m.name for m in planned[2]], int(config.heterogeneity.null_B)
