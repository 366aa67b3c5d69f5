"""Trial-clustered inference: AIPW scores, cluster-robust ATE against statsmodels, and coverage by simulation."""

import numpy as np
import pytest
import statsmodels.api as sm

from mbi_predict.errors import DataError
from mbi_predict.models.inference import (clustered_ate, cluster_bootstrap, dr_scores, naive_ate,
                                          trial_aware_ate)


def test_dr_scores_by_hand():
    # treated: 2 - 1 + (3 - 2) / 0.5 = 3 ; control: 2 - 1 - (0 - 1) / 0.5 = 3
    np.testing.assert_allclose(dr_scores([3, 0], [1, 0], [1, 1], [2, 2], [0.5, 0.5]), [3.0, 3.0])
    with pytest.raises(DataError):
        dr_scores([1], [1], [0], [0], [1.0])


def test_clustered_se_matches_statsmodels_cluster_robust():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(7), rng.integers(20, 60, 7))
    scores = rng.normal(size=len(clusters)) + rng.normal(0, 0.5, 7)[clusters]
    ours = clustered_ate(scores, clusters)
    fit = sm.OLS(scores, np.ones(len(scores))).fit(cov_type="cluster", cov_kwds={"groups": clusters})
    assert ours["estimate"] == pytest.approx(fit.params[0])
    assert ours["se"] == pytest.approx(fit.bse[0], rel=1e-10)
    assert ours["n_clusters"] == 7 and ours["df"] == 6
    half_width = ours["ci_high"] - ours["estimate"]
    assert half_width == pytest.approx(2.4469 * ours["se"], rel=1e-3)  # t(6) quantile, not 1.96
    with pytest.raises(DataError):
        clustered_ate(scores, np.zeros(len(scores)))


def test_cluster_bootstrap_agrees_with_the_sandwich():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(30), 40)
    scores = rng.normal(size=1200) + rng.normal(0, 0.4, 30)[clusters]
    boot = cluster_bootstrap(lambda idx: scores[idx].mean(), clusters, B=400, seed=2)
    assert boot["se"] == pytest.approx(clustered_ate(scores, clusters)["se"], rel=0.2)
    assert boot["se"] > 2 * naive_ate(scores)["se"]  # rows within a trial are not independent
    assert boot["ci_low"] < boot["estimate"] < boot["ci_high"] and len(boot["replicates"]) == 400


def simulate_consortium(rng, n_trials=10, per_trial=300, ate=0.3, tau_sd=0.2):
    groups = np.repeat(np.arange(n_trials), per_trial)
    X = rng.normal(size=(len(groups), 3))
    ratio = np.where(np.arange(n_trials) % 3 == 0, 2 / 3, 0.5)[groups]
    t = (rng.random(len(groups)) < ratio).astype(int)
    trial_effect = rng.normal(ate, tau_sd, n_trials)[groups]
    y = X @ [0.8, -0.5, 0.3] + rng.normal(0, 0.5, n_trials)[groups] + t * trial_effect + rng.normal(size=len(groups))
    return y, t, X, groups


def test_trial_aware_ate_returns_both_intervals():
    y, t, X, groups = simulate_consortium(np.random.default_rng(3))
    res = trial_aware_ate(y, t, X, groups, seed=0)
    assert res["n"] == len(y) and res["n_clusters"] == 10
    assert res["ci_low"] < res["estimate"] < res["ci_high"]
    assert res["se"] > res["naive_se"] > 0
    assert res == trial_aware_ate(y, t, X, groups, seed=0)
    with pytest.raises(DataError):
        trial_aware_ate(y, t, X, None)


@pytest.mark.slow
def test_clustered_interval_covers_population_ate_and_naive_does_not():
    """200 consortia of 10 trials whose effects vary (SD 0.2) around a population ATE of 0.3."""
    rng = np.random.default_rng(2024)
    covered_clustered, covered_naive = [], []
    for _ in range(200):
        y, t, X, groups = simulate_consortium(rng)
        res = trial_aware_ate(y, t, X, groups, n_folds=5, seed=0)
        covered_clustered.append(res["ci_low"] <= 0.3 <= res["ci_high"])
        covered_naive.append(res["naive_ci_low"] <= 0.3 <= res["naive_ci_high"])
    assert 0.89 <= np.mean(covered_clustered) <= 0.99
    assert np.mean(covered_naive) < 0.8
