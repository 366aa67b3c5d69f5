"""Benefit metrics on one held-out trial: pseudo-outcomes, calibration, c-for-benefit, RATE, tables, harm."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from mbi_predict.errors import DataError
from mbi_predict.validate import benefit as bm


def trial(n=400, seed=0, ratio=0.5, binary=False):
    """One randomised trial with CATE tau = x0 (sd 1) and a prognostic x1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    t = (rng.random(n) < ratio).astype(int)
    tau = X[:, 0]
    if binary:
        p0 = 1 / (1 + np.exp(-X[:, 1]))
        p1 = 1 / (1 + np.exp(-(X[:, 1] + 1.5 * tau)))
        return (rng.random(n) < np.where(t == 1, p1, p0)).astype(float), t, X, p1 - p0
    return X[:, 1] + t * tau + rng.normal(size=n), t, X, tau


def test_pseudo_outcomes_are_unbiased_for_the_cate():
    slopes_true, slopes_random, ates = [], [], []
    for seed in range(25):
        y, t, X, tau = trial(seed=seed)
        pseudo = bm.dr_pseudo_outcomes(y, t, X, seed=seed)
        slopes_true.append(bm.benefit_calibration(pseudo, tau)["slope"])
        shuffled = np.random.default_rng(seed).normal(size=len(y))
        slopes_random.append(bm.benefit_calibration(pseudo, shuffled)["slope"])
        ates.append(bm.ate(pseudo)["estimate"] - tau.mean())
    assert abs(np.mean(slopes_true) - 1) < 0.1
    assert abs(np.mean(slopes_random)) < 0.1
    assert abs(np.mean(ates)) < 0.05


def test_default_propensity_is_the_trials_ratio():
    y, t, X, _ = trial(ratio=0.7, seed=1)
    default = bm.dr_pseudo_outcomes(y, t, X)
    np.testing.assert_allclose(default, bm.dr_pseudo_outcomes(y, t, X, propensity=t.mean()))
    assert not np.allclose(default, bm.dr_pseudo_outcomes(y, t, X, propensity=0.5))


def test_small_trials_get_fewer_folds_and_tiny_ones_are_refused():
    y, t, X, _ = trial(n=30, seed=2)
    t = np.r_[np.ones(15), np.zeros(15)].astype(int)
    assert np.all(np.isfinite(bm.dr_pseudo_outcomes(y, t, X)))  # 15 per arm -> 3 folds
    with pytest.raises(DataError, match="too few"):
        bm.dr_pseudo_outcomes(y[:16], np.r_[np.ones(8), np.zeros(8)].astype(int), X[:16])


@pytest.mark.parametrize("case", ["one_arm", "t_not_binary", "constant_y", "nan_y"])
def test_bad_trial_data(case):
    y, t, X, tau = trial(n=100)
    if case == "one_arm":
        t[:] = 0
    elif case == "t_not_binary":
        t = t + 1
    elif case == "constant_y":
        y[:] = 0.0
    else:
        y[0] = np.nan
    with pytest.raises(DataError):
        bm.per_trial_benefit_metrics(y, t, tau, X=X, higher_is_better=False, B=5)


def test_benefit_calibration_matches_statsmodels_hc1():
    rng = np.random.default_rng(3)
    cate, pseudo = rng.normal(size=200), rng.normal(size=200) * 2
    ours = bm.benefit_calibration(pseudo, cate)
    fit = sm.OLS(pseudo, sm.add_constant(cate)).fit(cov_type="HC1")
    np.testing.assert_allclose([ours["intercept"], ours["slope"]], fit.params)
    np.testing.assert_allclose([ours["intercept_se"], ours["slope_se"]], fit.bse)
    assert np.isnan(bm.benefit_calibration(pseudo, np.zeros(200))["slope"])


def test_concordance_by_hand():
    assert bm._concordance(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 1.0
    assert bm._concordance(np.array([3.0, 2, 1]), np.array([1.0, 2, 3])) == 0.0
    # pairs tied on observed are skipped; a tie on predicted counts 1/2: pairs (0,1) conc, (0,2) tie, (1,2) skipped
    assert bm._concordance(np.array([1.0, 2, 1]), np.array([0.0, 1, 1])) == pytest.approx(0.75)


def test_c_for_benefit_random_vs_informative():
    random_c, good_c = [], []
    for seed in range(20):
        y, t, X, tau = trial(seed=seed)
        random_c.append(bm.c_for_benefit(y, t, np.random.default_rng(100 + seed).normal(size=len(y)), B=0)["c"])
        good_c.append(bm.c_for_benefit(y, t, tau, B=0)["c"])
    assert abs(np.mean(random_c) - 0.5) < 0.02
    assert np.mean(good_c) > 0.6
    y, t, X, tau = trial()
    res = bm.c_for_benefit(y, t, tau, B=100, seed=1)
    assert res["n_pairs"] == min(t.sum(), len(t) - t.sum()) and 0.005 < res["se"] < 0.1
    assert bm.c_for_benefit(y, t, np.zeros(len(y)), B=0)["c"] == 0.5  # no discrimination at all
    # sign-free: negating both predictions and outcomes leaves C unchanged
    assert bm.c_for_benefit(-y, t, -tau, B=0)["c"] == pytest.approx(res["c"])
    yb, tb, Xb, rd = trial(binary=True, seed=4)
    assert bm.c_for_benefit(yb, tb, rd, B=0)["c"] > 0.55


def brute_force_rate(scores, priorities, target):
    """Straight from the definition: TOC(j/n) = mean of top-j (ties averaged) - mean; AUTOC/QINI averages."""
    n = len(scores)
    order = sorted(range(n), key=lambda i: -priorities[i])
    s = np.array([scores[i] for i in order], dtype=float)
    p = np.array([priorities[i] for i in order])
    for value in np.unique(p):
        s[p == value] = s[p == value].mean()
    toc = [s[:j].mean() - s.mean() for j in range(1, n + 1)]
    weights = np.ones(n) if target == "AUTOC" else np.arange(1, n + 1) / n
    return float(np.mean(weights * np.array(toc)))


@pytest.mark.parametrize("target", ["AUTOC", "QINI"])
def test_rate_matches_definition_with_ties(target):
    rng = np.random.default_rng(5)
    scores, priorities = rng.normal(size=60), rng.integers(0, 8, 60).astype(float)
    est = bm.rate(scores, priorities, higher_is_better=True, target=target, B=0)["estimate"]
    assert est == pytest.approx(brute_force_rate(scores, priorities, target))


def test_rate_direction_for_lower_is_better_outcomes():
    """10% benefit strongly (CATE -2 on distress), the rest not at all: ranking by most negative CATE finds them."""
    tau = np.r_[np.full(10, -2.0), np.zeros(90)]
    for_distress = bm.rate(tau, tau, higher_is_better=False, B=0)["estimate"]
    wrong_way = bm.rate(tau, tau, higher_is_better=True, B=0)["estimate"]
    assert for_distress == pytest.approx(brute_force_rate(-tau, -tau, "AUTOC"))
    assert for_distress > 0.4 and for_distress > 2 * wrong_way
    assert bm.rate(tau, -tau, higher_is_better=False, B=0)["estimate"] < 0  # prioritising the wrong people


def test_rate_positive_for_good_ranking_and_null_for_random():
    good, random = [], []
    for seed in range(20):
        y, t, X, tau = trial(seed=seed)
        pseudo = bm.dr_pseudo_outcomes(y, t, X, seed=seed)
        good.append(bm.rate(pseudo, tau, higher_is_better=True, B=0)["estimate"])
        shuffled = np.random.default_rng(seed).normal(size=len(y))
        random.append(bm.rate(pseudo, shuffled, higher_is_better=True, B=0)["estimate"])
    assert np.mean(good) > 0.5
    assert abs(np.mean(random)) < 0.1
    y, t, X, tau = trial()
    pseudo = bm.dr_pseudo_outcomes(y, t, X)
    res = bm.rate(pseudo, tau, higher_is_better=True, B=100, seed=0)
    assert res["estimate"] / res["se"] > 3
    assert bm.rate(pseudo, np.ones(len(y)), higher_is_better=True, B=0)["estimate"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(DataError):
        bm.rate(pseudo, tau, higher_is_better="yes")


def test_simple_metrics():
    assert bm.pehe([0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5))
    assert bm.cate_truth_corr([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert np.isnan(bm.cate_truth_corr([1, 1, 1], [2, 4, 6]))
    res = bm.ate([1.0, 2.0, 3.0, 6.0])
    assert res["estimate"] == 3.0 and res["se"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)


def test_calibration_table_and_plot():
    y, t, X, tau = trial()
    pseudo = bm.dr_pseudo_outcomes(y, t, X)
    table = bm.calibration_for_benefit_table(pseudo, tau, n_groups=5)
    assert list(table["group"]) == [1, 2, 3, 4, 5] and table["n"].sum() == len(y)
    assert table["mean_predicted"].is_monotonic_increasing
    assert (table["ci_low"] < table["mean_observed"]).all() and (table["mean_observed"] < table["ci_high"]).all()
    assert np.corrcoef(table["mean_predicted"], table["mean_observed"])[0, 1] > 0.8
    shifted = table.assign(**{c: table[c] + 0.1 for c in ("mean_observed", "ci_low", "ci_high")})
    fig = bm.plot_benefit_calibration({"model A": table, "model B": shifted})
    assert fig.axes and len(fig.axes[0].get_legend().get_texts()) == 2
    assert bm.plot_benefit_calibration(table).axes


def test_harm_summary():
    res = bm.harm_summary([0.1, 0.2, 0.3, 0.1], [0.05, 0.25, 0.3, 0.2], threshold=0.0)
    assert res["share_harmed"] == 0.5 and res["mean_risk_difference"] == pytest.approx(0.025)
    assert bm.harm_summary([0.1, 0.2], [0.15, 0.22], threshold=0.03)["share_harmed"] == 0.5
    with pytest.raises(DataError):
        bm.harm_summary([0.1, 1.2], [0.1, 0.1])


def test_per_trial_bundle():
    y, t, X, tau = trial()
    res = bm.per_trial_benefit_metrics(y, t, tau, X=X, higher_is_better=True, cate_true=tau, seed=0, B=50)
    for name in ("benefit_calibration_slope", "benefit_calibration_intercept", "c_for_benefit", "rate_autoc",
                 "rate_qini", "ate"):
        assert isinstance(res[name], float) and isinstance(res[f"{name}_se"], float) and res[f"{name}_se"] > 0
    assert res["pehe"] == 0.0 and res["cate_truth_corr"] == pytest.approx(1.0)
    assert res["n"] == len(y) and res["n_mbi"] + res["n_control"] == len(y)
    assert res == bm.per_trial_benefit_metrics(y, t, tau, X=X, higher_is_better=True, cate_true=tau, seed=0, B=50)
    without_truth = bm.per_trial_benefit_metrics(pd.Series(y), t, tau, X=pd.DataFrame(X), higher_is_better=True,
                                                 B=5)
    assert "pehe" not in without_truth


def test_a_constant_prediction_ranks_nobody_so_its_ranking_metrics_are_undefined():
    from mbi_predict.validate.benefit import per_trial_benefit_metrics

    rng = np.random.default_rng(3)
    n = 200
    X = rng.normal(size=(n, 3))
    t = np.repeat([0, 1], n // 2)
    y = X[:, 0] - 0.3 * t + rng.normal(size=n)
    out = per_trial_benefit_metrics(y, t, np.full(n, -0.3), X=X, higher_is_better=False, B=20)
    assert out["constant_prediction"] == 1.0
    for key in ("benefit_calibration_slope", "c_for_benefit", "rate_autoc", "rate_qini"):
        assert np.isnan(out[key]) and np.isnan(out[f"{key}_se"])
    assert np.isfinite(out["ate"]) and out["ate_se"] > 0
    varied = per_trial_benefit_metrics(y, t, -0.3 + 0.1 * X[:, 0], X=X, higher_is_better=False, B=20)
    assert varied["constant_prediction"] == 0.0 and np.isfinite(varied["rate_autoc"])


def test_fast_concordance_equals_the_all_pairs_count():
    from mbi_predict.validate.benefit import _concordance, _concordance_pairwise

    rng = np.random.default_rng(0)
    for case in range(150):
        n = int(rng.integers(2, 300))
        pred = rng.normal(size=n) if case % 3 else rng.integers(0, 4, n).astype(float)
        obs = rng.normal(size=n) if case % 2 else rng.integers(-1, 2, n).astype(float)
        a, b = _concordance_pairwise(pred, obs), _concordance(pred, obs)
        assert (np.isnan(a) and np.isnan(b)) or abs(a - b) < 1e-12, (case, a, b)
