"""Metrics of predicted treatment benefit (CATE) on ONE held-out trial's own data. Pure functions on arrays.

Sign convention: CATE = E[Y | T=1, x] - E[Y | T=0, x] in outcome units (T=1 is MBI). For distress (higher = worse)
a benefit of MBI is a negative CATE. Metrics that are invariant to flipping both predicted and observed effects
(benefit calibration, c-for-benefit, the calibration table, ATE) need no direction. Metrics that rank people to
prioritise them (RATE) take an explicit ``higher_is_better``: with ``False`` (distress), benefit = -CATE, people are
ranked by the most negative predicted CATE and the pseudo-outcomes are negated, so a positive RATE always means
"the model finds those who benefit more".

Observed effects are doubly robust (AIPW) pseudo-outcomes built only from the held-out trial: its randomisation
ratio as the known propensity and outcome models cross-fitted within the trial, so nothing from the model under
test or the training trials enters the yardstick.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import StratifiedKFold

from mbi_predict.errors import DataError
from mbi_predict.models import _effect_common as common
from mbi_predict.models.inference import crossfit_outcome_models, dr_scores

#: Fewest participants per arm in a held-out trial for which benefit metrics are computed.
MIN_PER_ARM = 10
#: Participants per arm wanted in each cross-fitting fold; small trials get fewer folds (but at least 2).
PER_ARM_PER_FOLD = 5


def _arrays(y, t, cate=None):
    y = common.check_outcome(y)
    t = common.check_treatment(t, len(y), min_per_arm=MIN_PER_ARM)
    if cate is None:
        return y, t
    cate = np.asarray(cate, dtype=float).reshape(-1)
    if len(cate) != len(y) or not np.all(np.isfinite(cate)):
        raise DataError("predicted CATE must be finite and have one value per participant")
    return y, t, cate


def dr_pseudo_outcomes(y, t, X=None, *, propensity=None, n_folds: int = 5, seed: int = 0,
                       outcome_model=None) -> np.ndarray:
    """Doubly robust pseudo-outcomes for one trial (Kennedy 2020): E[phi | X] = CATE(X) with known propensity.

    ``propensity``: scalar or array; default the trial's share of MBI participants (its randomisation ratio).
    ``outcome_model``: default 'ridge' (RidgeCV), fitted per arm, cross-fitted over arm-stratified folds of this
    trial's participants; ``min(n_folds, smaller arm // 5)`` folds, at least 2. ``X=None`` uses arm means.
    Raises ``DataError`` below ``MIN_PER_ARM`` participants per arm.
    """
    y, t = _arrays(y, t)
    Xa = None if X is None else common.as_2d_numeric(X)[0]
    if Xa is not None and len(Xa) != len(y):
        raise DataError(f"X has {len(Xa)} rows but y has {len(y)}")
    if propensity is None:
        e = np.full(len(y), t.mean())
    else:
        e = common.check_propensity(np.broadcast_to(np.asarray(propensity, dtype=float), y.shape), len(y))
    smaller_arm = int(min(t.sum(), len(t) - t.sum()))
    k = max(2, min(n_folds, smaller_arm // PER_ARM_PER_FOLD))
    folds = [(tr, te) for tr, te in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(t, t)]
    mu0, mu1 = crossfit_outcome_models(y, t, Xa, folds=folds, learner=outcome_model or "ridge", seed=seed)
    return dr_scores(y, t, mu0, mu1, e)


def benefit_calibration(pseudo, cate) -> dict:
    """OLS of observed (pseudo-outcome) on predicted CATE: slope 1 / intercept 0 = calibrated for benefit.

    HC1 robust standard errors. A constant prediction has no slope: slope and its SE are NaN then.
    Returns ``dict(slope, slope_se, intercept, intercept_se)``.
    """
    pseudo, cate = np.asarray(pseudo, dtype=float).reshape(-1), np.asarray(cate, dtype=float).reshape(-1)
    if len(pseudo) != len(cate) or len(pseudo) < 3:
        raise DataError("benefit_calibration needs equal-length pseudo-outcomes and predictions (n >= 3)")
    if np.ptp(cate) == 0:
        se = pseudo.std(ddof=1) / np.sqrt(len(pseudo))
        return dict(slope=np.nan, slope_se=np.nan, intercept=float(pseudo.mean() - cate[0]), intercept_se=float(se))
    coef, cov, _ = common.ols_robust(cate[:, None], pseudo, None)
    return dict(slope=float(coef[1]), slope_se=float(np.sqrt(cov[1, 1])),
                intercept=float(coef[0]), intercept_se=float(np.sqrt(cov[0, 0])))


def _tied_pairs(*columns: np.ndarray) -> int:
    if len(columns) > 1:
        _, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    else:
        _, counts = np.unique(columns[0], return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _concordance(pred: np.ndarray, obs: np.ndarray) -> float:
    """Harrell's C over pairs: pairs tied on ``obs`` are skipped, ties on ``pred`` count one half.

    O(n log n): Kendall's S (concordant minus discordant pairs untied in both) from scipy's merge-sort
    ``kendalltau``, tie counts from ``np.unique``. With U pairs untied on obs and Tp pairs tied on pred only,
    con + dis = U - Tp and con - dis = S, so C = ((U - Tp + S) / 2 + Tp / 2) / U. The bootstrap of c-for-benefit
    calls this B times per held-out trial, where the all-pairs count was the bottleneck at scale (equal results:
    tested against `_concordance_pairwise`).
    """
    pred, obs = np.asarray(pred, dtype=float), np.asarray(obs, dtype=float)
    n = len(pred)
    total = n * (n - 1) // 2
    tie_obs, tie_pred, tie_both = _tied_pairs(obs), _tied_pairs(pred), _tied_pairs(pred, obs)
    untied_obs = total - tie_obs
    if untied_obs == 0:
        return np.nan
    tied_pred_only = tie_pred - tie_both
    if tie_pred == total:  # constant prediction: every usable pair is a prediction tie
        s = 0.0
    else:
        tau_b = stats.kendalltau(pred, obs, variant="b").statistic
        s = 0.0 if not np.isfinite(tau_b) else tau_b * np.sqrt(float(total - tie_pred) * float(total - tie_obs))
    concordant = (untied_obs - tied_pred_only + s) / 2
    return float((concordant + 0.5 * tied_pred_only) / untied_obs)


def _concordance_pairwise(pred: np.ndarray, obs: np.ndarray, chunk: int = 512) -> float:
    """The same C by comparing all n^2 pairs: the reference the fast version is tested against."""
    concordant = discordant = tied = 0
    for start in range(0, len(pred), chunk):
        d_obs = np.sign(obs[start:start + chunk, None] - obs[None, :])
        d_pred = np.sign(pred[start:start + chunk, None] - pred[None, :])
        usable = d_obs != 0
        product = d_pred * d_obs
        concordant += np.count_nonzero(usable & (product > 0))
        discordant += np.count_nonzero(usable & (product < 0))
        tied += np.count_nonzero(usable & (d_pred == 0))
    total = concordant + discordant + tied
    return (concordant + 0.5 * tied) / total if total else np.nan


def c_for_benefit(y, t, cate, *, B: int = 200, seed: int = 0) -> dict:
    """C-for-benefit (van Klaveren et al. 2018, J Clin Epidemiol 94:59).

    MBI and control participants of the trial are matched 1:1 on predicted CATE by rank: both arms are sorted
    by predicted CATE and the larger arm contributes the participants at the matching quantiles (deterministic).
    Per pair: observed benefit = y_MBI - y_control, predicted benefit = mean of the two predicted CATEs, both in
    the CATE direction (C is unchanged if both are negated, so no ``higher_is_better`` is needed). C = concordance
    between predicted and observed pair benefit over pairs of pairs, skipping pairs of pairs with equal observed
    benefit (for 0/1 outcomes observed benefit is in {-1, 0, 1}, as in the original); ties in prediction count 1/2.
    SE: bootstrap over matched pairs (B replicates). Returns ``dict(c, se, n_pairs)``.
    """
    y, t, cate = _arrays(y, t, cate)
    treated, control = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
    treated, control = treated[np.argsort(cate[treated], kind="stable")], control[np.argsort(cate[control],
                                                                                              kind="stable")]
    m = min(len(treated), len(control))
    quantile_ranks = lambda size: np.floor((np.arange(m) + 0.5) * size / m).astype(int)  # noqa: E731
    treated, control = treated[quantile_ranks(len(treated))], control[quantile_ranks(len(control))]
    observed = y[treated] - y[control]
    predicted = (cate[treated] + cate[control]) / 2
    c = _concordance(predicted, observed)
    se = np.nan
    if B > 1:
        rng = np.random.default_rng(seed)
        reps = [_concordance(predicted[i], observed[i]) for i in (rng.integers(0, m, m) for _ in range(B))]
        se = float(np.nanstd(reps, ddof=1))
    return dict(c=float(c), se=se, n_pairs=int(m))


def _rate_point(scores: np.ndarray, priorities: np.ndarray, target: str) -> float:
    order = np.argsort(-priorities, kind="stable")
    s, p = scores[order], priorities[order]
    # grf averages the scores within tied priorities, so the order among ties cannot matter
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    lengths = np.diff(np.r_[starts, len(p)])
    s = np.repeat(np.add.reduceat(s, starts) / lengths, lengths)
    n = len(s)
    toc = np.cumsum(s) / np.arange(1, n + 1) - s.mean()
    if target == "AUTOC":
        return float(toc.mean())
    return float(np.mean(np.arange(1, n + 1) / n * toc))


def rate(pseudo, cate, *, higher_is_better: bool, target: str = "AUTOC", B: int = 200, seed: int = 0) -> dict:
    """Rank-weighted average treatment effect (Yadlowsky, Fleming, Shah, Brunskill & Wager 2021/2024; grf's
    ``rank_average_treatment_effect``), computed from held-out pseudo-outcomes.

    Participants are prioritised by predicted benefit (CATE if ``higher_is_better`` else -CATE) and pseudo-outcomes
    are oriented the same way. TOC(j/n) = mean of the top-j scores - mean of all; AUTOC = (1/n) sum_j TOC(j/n)
    (= integral of TOC(q) dq), QINI = (1/n) sum_j (j/n) TOC(j/n) (= integral of q TOC(q) dq), as grf's discrete
    formulas, with scores averaged within tied priorities. RATE > 0: the ranking finds those who benefit more;
    a random or constant ranking gives 0 in expectation. SE: bootstrap over participants (B replicates; grf uses a
    half-sample bootstrap of clusters, which for one trial's independent participants is equivalent in spirit).
    Returns ``dict(estimate, se, target)``.
    """
    if target not in ("AUTOC", "QINI"):
        raise DataError(f"rate target must be 'AUTOC' or 'QINI', got {target!r}")
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise DataError("higher_is_better must be True or False")
    pseudo, cate = np.asarray(pseudo, dtype=float).reshape(-1), np.asarray(cate, dtype=float).reshape(-1)
    if len(pseudo) != len(cate) or len(pseudo) < 2:
        raise DataError("rate needs equal-length pseudo-outcomes and predictions")
    sign = 1.0 if higher_is_better else -1.0
    scores, priorities = sign * pseudo, sign * cate
    est = _rate_point(scores, priorities, target)
    se = np.nan
    if B > 1:
        rng = np.random.default_rng(seed)
        n = len(scores)
        reps = [_rate_point(scores[i], priorities[i], target) for i in (rng.integers(0, n, n) for _ in range(B))]
        se = float(np.std(reps, ddof=1))
    return dict(estimate=est, se=se, target=target)


def ate(pseudo) -> dict:
    """Mean pseudo-outcome (the trial's doubly robust ATE) with its standard error sd / sqrt(n)."""
    pseudo = np.asarray(pseudo, dtype=float).reshape(-1)
    return dict(estimate=float(pseudo.mean()), se=float(pseudo.std(ddof=1) / np.sqrt(len(pseudo))))


def pehe(cate_true, cate_pred) -> float:
    """Root precision in estimating heterogeneous effects, sqrt(mean((tau - tau_hat)^2)) (Hill 2011)."""
    a, b = np.asarray(cate_true, dtype=float).reshape(-1), np.asarray(cate_pred, dtype=float).reshape(-1)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def cate_truth_corr(cate_true, cate_pred) -> float:
    """Pearson correlation of true and predicted CATE (NaN when either is constant)."""
    a, b = np.asarray(cate_true, dtype=float).reshape(-1), np.asarray(cate_pred, dtype=float).reshape(-1)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return np.nan
    return float(np.corrcoef(a, b)[0, 1])


def calibration_for_benefit_table(pseudo, cate, n_groups: int = 5, alpha: float = 0.05) -> pd.DataFrame:
    """Per quantile group of predicted CATE: n, mean predicted, mean observed (pseudo-outcome), SE and t-interval.

    Columns: group (1 = lowest predicted CATE), n, mean_predicted, mean_observed, se_observed, ci_low, ci_high.
    """
    pseudo, cate = np.asarray(pseudo, dtype=float).reshape(-1), np.asarray(cate, dtype=float).reshape(-1)
    if len(pseudo) != len(cate) or len(cate) < 2 * n_groups:
        raise DataError(f"calibration_for_benefit_table needs at least {2 * n_groups} participants")
    # ranks break ties so every group is filled even when predictions repeat
    group = pd.qcut(pd.Series(cate).rank(method="first"), n_groups, labels=False).to_numpy()
    rows = []
    for k in range(n_groups):
        obs = pseudo[group == k]
        se = obs.std(ddof=1) / np.sqrt(len(obs))
        q = stats.t.ppf(1 - alpha / 2, len(obs) - 1)
        rows.append(dict(group=k + 1, n=len(obs), mean_predicted=float(cate[group == k].mean()),
                         mean_observed=float(obs.mean()), se_observed=float(se),
                         ci_low=float(obs.mean() - q * se), ci_high=float(obs.mean() + q * se)))
    return pd.DataFrame(rows)


def plot_benefit_calibration(table_or_tables, *, title: str = "Calibration for benefit"):
    """Observed vs predicted effect per group, with intervals and the identity line. Returns a matplotlib Figure.

    Accepts one table from :func:`calibration_for_benefit_table`, a list of them, or a dict ``{label: table}``.
    The Figure is built without pyplot, so nothing is shown and no GUI backend is needed.
    """
    from matplotlib.figure import Figure

    if isinstance(table_or_tables, pd.DataFrame):
        tables = {"": table_or_tables}
    elif isinstance(table_or_tables, dict):
        tables = dict(table_or_tables)
    else:
        tables = {f"table {i + 1}": tab for i, tab in enumerate(table_or_tables)}
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    lows, highs = [], []
    for label, tab in tables.items():
        ax.errorbar(tab["mean_predicted"], tab["mean_observed"],
                    yerr=[tab["mean_observed"] - tab["ci_low"], tab["ci_high"] - tab["mean_observed"]],
                    fmt="o-", capsize=3, label=label or None)
        lows += [tab["mean_predicted"].min(), tab["ci_low"].min()]
        highs += [tab["mean_predicted"].max(), tab["ci_high"].max()]
    lo, hi = min(lows), max(highs)
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("Predicted effect (CATE, MBI - control)")
    ax.set_ylabel("Observed effect (doubly robust)")
    ax.set_title(title)
    if any(tables):
        ax.legend()
    return fig


def harm_summary(risk_control, risk_mbi, *, threshold: float = 0.0) -> dict:
    """Predicted harm for a 0/1 adverse outcome (e.g. ``deteriorated_*``): share of people whose predicted risk
    difference (MBI - control) exceeds ``threshold``, and mean predicted risks."""
    r0, r1 = np.asarray(risk_control, dtype=float).reshape(-1), np.asarray(risk_mbi, dtype=float).reshape(-1)
    if len(r0) != len(r1) or len(r0) == 0:
        raise DataError("harm_summary needs two equal-length, non-empty risk arrays")
    if np.any((r0 < 0) | (r0 > 1) | (r1 < 0) | (r1 > 1)):
        raise DataError("predicted risks must lie in [0, 1]")
    diff = r1 - r0
    return dict(share_harmed=float(np.mean(diff > threshold)), mean_risk_control=float(r0.mean()),
                mean_risk_mbi=float(r1.mean()), mean_risk_difference=float(diff.mean()), n=len(r0),
                threshold=float(threshold))


def dr_loss_vs_constant(pseudo, cate, constant: float) -> dict:
    """How much better the predicted effects are than one effect for everyone, on a loss that needs no truth.

    The doubly robust loss (Kennedy 2020; the "DR-loss" model-selection criterion of Saito & Yasui 2020 and Mahajan
    et al. 2024) of a CATE prediction tau(x) is mean((phi - tau(x))^2), with phi the held-out doubly robust
    pseudo-outcomes: E[phi | x] = CATE(x), so its expectation is PEHE^2 plus a term that does not depend on the
    prediction. Hence the difference of two predictions' DR losses on the same participants estimates the difference
    of their PEHE^2 without knowing the truth. Here the competitor is ``constant`` (the average effect the model
    predicts in its training trials, i.e. "predict the training average effect for everyone"): ``estimate < 0``
    means the individual predictions beat the constant. Per-participant differences are independent within the
    held-out trial, so ``se = sd / sqrt(n)``. Returns ``dict(estimate, se)``.
    """
    pseudo, cate = np.asarray(pseudo, dtype=float).reshape(-1), np.asarray(cate, dtype=float).reshape(-1)
    if len(pseudo) != len(cate) or len(pseudo) < 2 or not np.isfinite(constant):
        return dict(estimate=np.nan, se=np.nan)
    difference = (pseudo - cate) ** 2 - (pseudo - float(constant)) ** 2
    return dict(estimate=float(difference.mean()), se=float(difference.std(ddof=1) / np.sqrt(len(difference))))


def per_trial_benefit_metrics(y, t, cate, *, X, propensity=None, higher_is_better: bool, cate_true=None,
                              seed: int = 0, B: int = 200, n_folds: int = 5, constant: float | None = None,
                              full: bool = True, pseudo=None) -> dict:
    """All benefit metrics of one held-out trial as plain floats, ready for random-effects pooling.

    Keys: ``benefit_calibration_slope``, ``benefit_calibration_intercept``, ``c_for_benefit``, ``rate_autoc``,
    ``rate_qini``, ``ate``, each with ``<name>_se`` (pool with variance = se**2); ``n``, ``n_mbi``, ``n_control``;
    and ``pehe``, ``cate_truth_corr`` when ``cate_true`` is given (simulations).

    A model that predicts the same effect for everyone in the trial (a penalised model that shrank every
    interaction to zero, say) ranks nobody: its calibration slope, c-for-benefit and RATE are undefined, not 0 with
    a zero standard error (which would dominate any pooled estimate). They are NaN, ``constant_prediction`` is 1,
    and pooling leaves the trial out of those metrics.

    ``constant``: the model's average predicted effect in its training trials; gives ``dr_loss_vs_constant``
    (`dr_loss_vs_constant`, the constant-effect yardstick). ``pseudo``: the trial's pseudo-outcomes when the caller
    has them already (`dr_pseudo_outcomes` with the same arguments), so they are not computed twice. ``full=False`` skips c-for-benefit and QINI (NaN), for
    the verdict's permutation refits, which need only the RATE (AUTOC), the calibration slope and the yardstick.
    """
    y, t, cate = _arrays(y, t, cate)
    if pseudo is None:
        pseudo = dr_pseudo_outcomes(y, t, X, propensity=propensity, n_folds=n_folds, seed=seed)
    pseudo = np.asarray(pseudo, dtype=float).reshape(-1)
    average = ate(pseudo)
    if np.ptp(cate) <= 1e-9 * max(1.0, float(np.abs(cate).max())):
        undefined = dict(estimate=np.nan, se=np.nan)
        calibration = dict(slope=np.nan, slope_se=np.nan, intercept=np.nan, intercept_se=np.nan)
        cfb, autoc, qini = dict(c=np.nan, se=np.nan), undefined, undefined
    else:
        calibration = benefit_calibration(pseudo, cate)
        autoc = rate(pseudo, cate, higher_is_better=higher_is_better, target="AUTOC", B=B, seed=seed)
        if full:
            cfb = c_for_benefit(y, t, cate, B=B, seed=seed)
            qini = rate(pseudo, cate, higher_is_better=higher_is_better, target="QINI", B=B, seed=seed)
        else:
            cfb, qini = dict(c=np.nan, se=np.nan), dict(estimate=np.nan, se=np.nan)
    out = dict(
        benefit_calibration_slope=calibration["slope"], benefit_calibration_slope_se=calibration["slope_se"],
        benefit_calibration_intercept=calibration["intercept"],
        benefit_calibration_intercept_se=calibration["intercept_se"],
        c_for_benefit=cfb["c"], c_for_benefit_se=cfb["se"],
        rate_autoc=autoc["estimate"], rate_autoc_se=autoc["se"],
        rate_qini=qini["estimate"], rate_qini_se=qini["se"],
        ate=average["estimate"], ate_se=average["se"],
        n=float(len(y)), n_mbi=float(t.sum()), n_control=float(len(t) - t.sum()),
        constant_prediction=float(np.isnan(autoc["estimate"])),
    )
    if constant is not None:
        loss = dr_loss_vs_constant(pseudo, cate, constant)
        out.update(dr_loss_vs_constant=loss["estimate"], dr_loss_vs_constant_se=loss["se"])
    if cate_true is not None:
        out.update(pehe=pehe(cate_true, cate), cate_truth_corr=cate_truth_corr(cate_true, cate))
    return out
