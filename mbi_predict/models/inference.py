"""Trial-clustered inference for average treatment effects from doubly robust (AIPW) scores.

Participants of one trial share its population, protocol, therapists and measurement, and the MBI effect itself
varies between trials. Treating the pooled rows as independent (as econml's and most libraries' default standard
errors do) therefore understates the uncertainty of an effect meant for the population of trials. Here the unit of
inference is the trial: the variance of the mean DR score is estimated cluster-robustly (sum of residuals within
each trial), as grf's ``average_treatment_effect(..., clusters=)`` does, and with few trials the interval uses a
t distribution with G - 1 degrees of freedom (Cameron & Miller 2015, "A practitioner's guide to cluster-robust
inference", sec. VI; Bell & McCaffrey 2002).

References: Robins, Rotnitzky & Zhao 1994 (AIPW); Chernozhukov et al. 2018 (cross-fitting, DML);
Athey & Wager 2019 "Estimating treatment effects with causal forests: an application" (clustered ATE in grf).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.dummy import DummyRegressor

from mbi_predict.errors import DataError
from mbi_predict.models import _effect_common as common


def dr_scores(y, t, mu0, mu1, e) -> np.ndarray:
    """AIPW scores Gamma_i = mu1 - mu0 + T (Y - mu1) / e - (1 - T) (Y - mu0) / (1 - e).

    Their mean is the doubly robust ATE; conditional on X their expectation is the CATE (Kennedy 2020, DR-learner).
    ``mu0``/``mu1`` should be cross-fitted predictions and ``e`` the (known) propensity, all arrays of length n.
    """
    y, t, mu0, mu1, e = (np.asarray(a, dtype=float).reshape(-1) for a in (y, t, mu0, mu1, e))
    if not (len(y) == len(t) == len(mu0) == len(mu1) == len(e)):
        raise DataError("dr_scores: y, t, mu0, mu1 and e must have the same length")
    if not np.all((e > 0) & (e < 1)):
        raise DataError("dr_scores: propensity must lie strictly between 0 and 1")
    return mu1 - mu0 + t * (y - mu1) / e - (1 - t) * (y - mu0) / (1 - e)


def naive_ate(scores, alpha: float = 0.05) -> dict:
    """Mean of the scores with the independent-rows SE sd/sqrt(n) and a normal interval (for comparison)."""
    s = np.asarray(scores, dtype=float).reshape(-1)
    n = len(s)
    if n < 2:
        raise DataError("naive_ate needs at least 2 scores")
    est, se = s.mean(), s.std(ddof=1) / np.sqrt(n)
    z = stats.norm.ppf(1 - alpha / 2)
    return dict(estimate=float(est), se=float(se), ci_low=float(est - z * se), ci_high=float(est + z * se),
                n=n, df=float("inf"))


def clustered_ate(scores, clusters, alpha: float = 0.05) -> dict:
    """Mean of the scores (each participant weighted equally) with a cluster-robust standard error.

    Var = G/(G-1) * sum_g (sum_{i in g} (Gamma_i - mean))^2 / n^2  (CR1), and a t_{G-1} interval: with 5-30 trials
    the normal quantile would undercover. The target is the participant-weighted ATE in a superpopulation of trials.
    Returns ``dict(estimate, se, ci_low, ci_high, n_clusters, df)``.
    """
    s = np.asarray(scores, dtype=float).reshape(-1)
    codes, _ = pd.factorize(np.asarray(clusters).reshape(-1))
    if len(codes) != len(s):
        raise DataError("clustered_ate: scores and clusters must have the same length")
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if n_clusters < 2:
        raise DataError("clustered_ate needs at least 2 clusters (trials)")
    est = s.mean()
    cluster_sums = np.bincount(codes, weights=s - est)
    var = n_clusters / (n_clusters - 1) * np.sum(cluster_sums**2) / len(s) ** 2
    se = np.sqrt(var)
    df = n_clusters - 1
    q = stats.t.ppf(1 - alpha / 2, df)
    return dict(estimate=float(est), se=float(se), ci_low=float(est - q * se), ci_high=float(est + q * se),
                n_clusters=n_clusters, df=float(df))


def cluster_bootstrap(stat_fn: Callable[[np.ndarray], float], clusters, B: int = 200, seed: int = 0,
                      alpha: float = 0.05) -> dict:
    """Bootstrap resampling whole clusters with replacement.

    ``stat_fn(indices) -> float`` computes the statistic on the rows ``indices`` (duplicates allowed).
    Returns ``dict(estimate, se, ci_low, ci_high, replicates)`` with a percentile interval.
    """
    codes, _ = pd.factorize(np.asarray(clusters).reshape(-1))
    members = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    if len(members) < 2:
        raise DataError("cluster_bootstrap needs at least 2 clusters")
    rng = np.random.default_rng(seed)
    reps = np.empty(B)
    for b in range(B):
        pick = rng.integers(0, len(members), size=len(members))
        reps[b] = stat_fn(np.concatenate([members[k] for k in pick]))
    lo, hi = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
    return dict(estimate=float(stat_fn(np.arange(len(codes)))), se=float(np.nanstd(reps, ddof=1)),
                ci_low=float(lo), ci_high=float(hi), replicates=reps)


def crossfit_outcome_models(y, t, X, *, folds, learner="ridge", seed: int = 0, binary: bool = False,
                            groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of E[Y | X, arm=0] and E[Y | X, arm=1]: per fold, one model per arm on the
    training rows.

    ``X=None`` uses the training arm means. ``binary=True`` uses classifiers' ``predict_proba``. ``groups`` lets a
    penalised learner tune over whole trials (see ``fit_weighted``).
    """
    n = len(y)
    mu = np.empty((n, 2))
    Xm = np.zeros((n, 1)) if X is None else X
    for train, test in folds:
        for arm in (0, 1):
            rows = train[t[train] == arm]
            if X is None:
                model = DummyRegressor().fit(Xm[rows], y[rows])
            elif binary and len(np.unique(y[rows])) == 2:
                model = common.fit_weighted(common.make_classifier(learner, seed), Xm[rows], y[rows].astype(int),
                                            groups=None if groups is None else groups[rows])  # a stack: trial folds
                mu[test, arm] = model.predict_proba(Xm[test])[:, 1]
                continue
            else:
                model = common.fit_weighted(common.make_regressor(learner, seed), Xm[rows], y[rows],
                                            groups=None if groups is None else groups[rows])
            mu[test, arm] = model.predict(Xm[test])
    return mu[:, 0], mu[:, 1]


def trial_aware_ate(Y, T, X, groups, *, propensity=None, n_folds: int = 5, seed: int = 0,
                    outcome_model="ridge", alpha: float = 0.05) -> dict:
    """Doubly robust ATE across trials with trial-clustered inference.

    Outcome models are cross-fitted with folds of whole trials; the propensity is the known randomisation ratio of
    each trial (share of MBI participants) unless an array is passed. Because the propensity is known, the estimate
    is unbiased whatever the outcome model; the model only buys precision.
    Returns the :func:`clustered_ate` dict plus ``n`` and ``naive_se, naive_ci_low, naive_ci_high`` for comparison.
    """
    y = common.check_outcome(Y)
    Xa = None if X is None else common.as_2d_numeric(X)[0]
    if Xa is not None and len(Xa) != len(y):
        raise DataError(f"X has {len(Xa)} rows but Y has {len(y)}")
    t = common.check_treatment(T, len(y))
    g = common.check_groups(groups, len(y))
    if g is None:
        raise DataError("trial_aware_ate needs groups (trial ids)")
    e = common.known_propensity(t, g) if propensity is None else common.check_propensity(propensity, len(y))
    folds = common.make_folds(t, g, n_folds, seed)
    mu0, mu1 = crossfit_outcome_models(y, t, Xa, folds=folds, learner=outcome_model, seed=seed,
                                       binary=common.is_binary_outcome(y, "auto"), groups=g)
    scores = dr_scores(y, t, mu0, mu1, e)
    result = clustered_ate(scores, g, alpha=alpha)
    naive = naive_ate(scores, alpha=alpha)
    result.update(n=len(y), naive_se=naive["se"], naive_ci_low=naive["ci_low"], naive_ci_high=naive["ci_high"])
    return result
