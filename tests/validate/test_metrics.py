"""Per-trial metrics against hand computations and sklearn; pooling transforms."""

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from mbi_predict.validate import metrics as M
from mbi_predict.validate.pooling import from_pooling_scale, pool_metric, to_pooling_scale


@pytest.fixture
def continuous():
    rng = np.random.default_rng(1)
    p = rng.normal(size=200)
    y = 0.3 + 0.8 * p + rng.normal(scale=0.5, size=200)
    return y, p


@pytest.fixture
def binary():
    rng = np.random.default_rng(2)
    lp = rng.normal(scale=1.2, size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-lp))).astype(float)
    return y, 1 / (1 + np.exp(-lp))


def test_continuous_metrics_match_sklearn(continuous):
    y, p = continuous
    assert M.r2(y, p) == pytest.approx(r2_score(y, p), rel=1e-12)
    assert M.rmse(y, p) == pytest.approx(math.sqrt(mean_squared_error(y, p)), rel=1e-12)
    assert M.mae(y, p) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)


def test_linear_calibration_by_hand(continuous):
    y, p = continuous
    slope, var = M.linear_calibration_slope(y, p)
    X = np.column_stack([np.ones_like(p), p])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    cov = resid @ resid / (len(y) - 2) * np.linalg.inv(X.T @ X)
    assert slope == pytest.approx(beta[1], rel=1e-10)
    assert var == pytest.approx(cov[1, 1], rel=1e-10)
    citl, citl_var = M.calibration_in_the_large(y, p)
    assert citl == pytest.approx(np.mean(y - p))
    assert citl_var == pytest.approx(np.var(y - p, ddof=1) / len(y))
    # perfectly calibrated predictions: slope 1, intercept 0
    assert M.linear_calibration_slope(p * 2 + 1, p * 2 + 1)[0] == pytest.approx(1.0)


def test_binary_metrics_match_sklearn(binary):
    y, p = binary
    assert M.c_statistic(y, p) == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert M.oe_ratio(y, p) == pytest.approx(y.sum() / p.sum())
    assert M.log_oe_variance(y) == pytest.approx(1 / y.sum())
    assert math.isnan(M.c_statistic(np.ones(5), np.linspace(0, 1, 5)))


def test_hanley_mcneil_by_hand():
    c, n1, n0 = 0.8, 40, 60
    q1, q2 = c / (2 - c), 2 * c**2 / (1 + c)
    expected = (c * (1 - c) + (n1 - 1) * (q1 - c**2) + (n0 - 1) * (q2 - c**2)) / (n1 * n0)
    assert M.c_statistic_variance(c, n1, n0) == pytest.approx(expected)
    assert M.logit_c_variance(c, expected) == pytest.approx(expected / (c * (1 - c)) ** 2)


def test_logistic_recalibration_against_statsmodels(binary):
    import statsmodels.api as sm

    y, p = binary
    lp = np.log(p / (1 - p))
    slope_fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    offset_fit = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=lp).fit()
    out = M.logistic_calibration(y, p)
    assert out["slope"][0] == pytest.approx(slope_fit.params[1])
    assert out["slope"][1] == pytest.approx(slope_fit.bse[1] ** 2)
    assert out["intercept"][0] == pytest.approx(offset_fit.params[0])
    # y was drawn from p: the recalibration is near the ideal (slope 1, intercept 0)
    assert abs(out["slope"][0] - 1) < 3 * math.sqrt(out["slope"][1])
    assert abs(out["intercept"][0]) < 3 * math.sqrt(out["intercept"][1])
    # over-confident predictions (logit doubled) give a slope near 1/2
    doubled = 1 / (1 + np.exp(-2 * lp))
    assert M.logistic_calibration(y, doubled)["slope"][0] == pytest.approx(out["slope"][0] / 2, rel=1e-6)


def test_calibration_errors_by_hand_and_direction():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.05, 0.95, 3000)
    y = (rng.random(3000) < p).astype(float)
    good = M.calibration_errors(y, p)
    from statsmodels.nonparametric.smoothers_lowess import lowess

    gap = np.abs(p - lowess(y, p, frac=0.75, it=0, return_sorted=False))
    assert good["ici"] == pytest.approx(gap.mean())
    assert good["e90"] == pytest.approx(np.quantile(gap, 0.9))
    shifted = M.calibration_errors(y, np.clip(p + 0.15, 0, 1))
    assert good["ici"] < 0.03 < shifted["ici"]
    assert good["e50"] <= good["e90"]


def test_trial_metrics_variances_and_bootstrap_seeded(continuous, binary):
    y, p = continuous
    a = M.trial_metrics(y, p, "continuous", bootstrap=50, seed=5)
    b = M.trial_metrics(y, p, "continuous", bootstrap=50, seed=5)
    assert set(a) == set(M.CONTINUOUS_METRICS)
    assert a == b
    assert all(v.variance > 0 for v in a.values())
    # bootstrap variance of RMSE is of the right order: ~ var((y-p)^2) / (4 n rmse^2)
    sq = (y - p) ** 2
    approx = np.var(sq) / (4 * len(y) * np.mean(sq))
    assert 0.3 * approx < a["rmse"].variance < 3 * approx
    yb, pb = binary
    c = M.trial_metrics(yb, pb, "binary", bootstrap=20, seed=1)
    assert set(c) == set(M.BINARY_METRICS)
    assert math.isnan(M.trial_metrics(y, p, "continuous", bootstrap=0, seed=1)["rmse"].variance)


def test_paired_difference_sign(continuous):
    y, p = continuous
    worse = p - 1.0  # y is about 0.3 + 0.8 p: shifting predictions down makes them clearly worse
    diff, var = M.paired_difference(y, worse, p, "rmse", B=50, seed=0)
    assert diff == pytest.approx(M.rmse(y, worse) - M.rmse(y, p))
    assert diff > 0 and var > 0


@pytest.mark.parametrize("metric,values", [("c_statistic", [0.55, 0.7, 0.93]), ("oe_ratio", [0.5, 1.0, 2.5]),
                                           ("rmse", [0.7, 0.9, 1.1])])
def test_pooling_scale_round_trip(metric, values):
    assert np.allclose(from_pooling_scale(metric, to_pooling_scale(metric, values)), values)


def test_pool_metric_back_transforms_and_reports_exclusions():
    pytest.importorskip("mbi_predict.meta.pool")
    from mbi_predict.meta.pool import pool

    c = [0.62, 0.70, 0.66, 0.75, np.nan]
    var_logit = [0.02, 0.03, 0.025, 0.04, 0.03]
    out, result = pool_metric("c_statistic", c, var_logit, list("ABCDE"))
    direct = pool(np.log(np.array(c[:4]) / (1 - np.array(c[:4]))), var_logit[:4])
    assert out["k"] == 4 and out["excluded"] == ["E"] and out["scale"] == "logit"
    assert out["estimate"] == pytest.approx(1 / (1 + math.exp(-direct.estimate)))
    assert out["ci_low"] == pytest.approx(1 / (1 + math.exp(-direct.ci_low)))
    assert out["pi_high"] == pytest.approx(1 / (1 + math.exp(-direct.pi_high)))
    assert out["tau2"] == pytest.approx(direct.tau2)
    assert out["ci_low"] < out["estimate"] < out["ci_high"]
    oe, _ = pool_metric("oe_ratio", [0.8, 1.2, 1.0], [0.05, 0.04, 0.06], list("ABC"), hksj=True)
    direct = pool(np.log([0.8, 1.2, 1.0]), [0.05, 0.04, 0.06], test="knha")
    assert oe["estimate"] == pytest.approx(math.exp(direct.estimate))
    assert oe["ci_high"] == pytest.approx(math.exp(direct.ci_high))
    empty, none = pool_metric("rmse", [np.nan], [np.nan], ["A"])
    assert none is None and empty["estimate"] is None and empty["k"] == 0
