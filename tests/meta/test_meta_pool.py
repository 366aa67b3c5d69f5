"""Pooling against metafor's published dat.bcg results, and against the estimating equations themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mbi_predict.errors import MBIError
from mbi_predict.meta import meta_regression, pool
from mbi_predict.meta.pool import generalised_q, ml_score, reml_score

DATA = Path(__file__).parent / "data" / "dat_bcg.csv"


@pytest.fixture(scope="module")
def bcg() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Log risk ratios and variances computed here from the 2x2 counts (as metafor's escalc(measure='RR'))."""
    d = pd.read_csv(DATA, comment="#")
    n_t, n_c = d.tpos + d.tneg, d.cpos + d.cneg
    yi = np.log((d.tpos / n_t) / (d.cpos / n_c)).to_numpy()
    vi = (1 / d.tpos - 1 / n_t + 1 / d.cpos - 1 / n_c).to_numpy()
    np.testing.assert_allclose(yi, d.yi, atol=1e-12)  # the csv's own escalc columns agree
    np.testing.assert_allclose(vi, d.vi, atol=1e-12)
    return yi, vi, d


def r4(x: float) -> float:
    return round(x, 4)


def test_reml_matches_metafor(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi)
    assert (res.method, res.test, res.k) == ("REML", "z", 13)
    assert r4(res.estimate) == -0.7145
    assert r4(res.se) == 0.1798
    assert (r4(res.ci_low), r4(res.ci_high)) == (-1.0669, -0.3622)
    assert r4(res.tau2) == 0.3132
    assert round(res.i2, 2) == 92.22
    assert round(res.h2, 2) == 12.86
    assert (r4(res.q), res.q_df) == (152.2330, 12)
    assert res.q_pvalue < 1e-4
    assert res.pvalue == pytest.approx(2 * stats.norm.sf(abs(res.estimate / res.se)))
    # metafor's confint(): tau^2 95% CI 0.1197 to 1.1115
    assert (r4(res.tau2_ci_low), r4(res.tau2_ci_high)) == (0.1197, 1.1115)


def test_knha_matches_metafor_and_its_definition(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, test="knha")
    assert r4(res.estimate) == -0.7145
    assert r4(res.se) == 0.1808
    assert (r4(res.ci_low), r4(res.ci_high)) == (-1.1084, -0.3206)
    assert res.df == 12
    # independent: se^2 = sum w (y - mu)^2 / ((k-1) sum w), not truncated at the z-test variance
    w = 1 / (vi + res.tau2)
    assert res.se ** 2 == pytest.approx(np.sum(w * (yi - res.estimate) ** 2) / (12 * w.sum()), rel=1e-10)
    assert res.pvalue == pytest.approx(2 * stats.t.sf(abs(res.estimate / res.se), 12), rel=1e-10)


def test_knha_is_not_truncated():
    # nearly identical estimates: the weighted residual variance is < 1 and HKSJ gives a *smaller* se than z
    yi, vi = np.array([0.30, 0.31, 0.29, 0.30]), np.array([0.04, 0.05, 0.03, 0.04])
    z, knha = pool(yi, vi), pool(yi, vi, test="knha")
    assert knha.se < z.se


def test_reml_solves_its_score_equation(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi)
    X = np.ones((13, 1))
    assert abs(reml_score(res.tau2, yi, vi, X)) < 1e-6
    w = 1 / (vi + res.tau2)
    assert res.estimate == pytest.approx(np.sum(w * yi) / w.sum(), rel=1e-12)
    assert res.se == pytest.approx(1 / math.sqrt(w.sum()), rel=1e-12)


def test_ml_solves_its_score_equation_and_maximises_the_likelihood(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, method="ML")
    X = np.ones((13, 1))
    assert abs(ml_score(res.tau2, yi, vi, X)) < 1e-6
    assert r4(res.tau2) == 0.2800
    assert r4(res.estimate) == -0.7112  # the exact root; metafor prints -0.7112 too (tau^2 = 0.2800)

    def loglik(tau2: float) -> float:
        w = 1 / (vi + tau2)
        mu = np.sum(w * yi) / w.sum()
        return float(-0.5 * np.sum(np.log(vi + tau2) + w * (yi - mu) ** 2))

    assert loglik(res.tau2) > max(loglik(res.tau2 - 1e-3), loglik(res.tau2 + 1e-3))


def test_dl_closed_form(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, method="DL")
    w = 1 / vi
    q = np.sum(w * (yi - np.sum(w * yi) / w.sum()) ** 2)
    tau2 = (q - 12) / (w.sum() - np.sum(w ** 2) / w.sum())
    assert res.tau2 == pytest.approx(tau2, rel=1e-12)
    assert r4(res.tau2) == 0.3088
    assert r4(res.estimate) == -0.7141


def test_pm_sets_generalised_q_to_its_df(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, method="PM")
    assert r4(res.tau2) == 0.3181
    assert generalised_q(res.tau2, yi, vi, np.ones((13, 1))) == pytest.approx(12, abs=1e-8)
    assert r4(res.estimate) == -0.7150


def test_fe_matches_metafor(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, method="FE")
    assert (r4(res.estimate), r4(res.se)) == (-0.4303, 0.0405)
    assert (r4(res.ci_low), r4(res.ci_high)) == (-0.5097, -0.3509)
    assert r4(res.estimate / res.se) == -10.6247
    assert res.tau2 == 0
    assert res.i2 == pytest.approx(100 * (res.q - 12) / res.q)


def test_dl_and_pm_agree_with_statsmodels(bcg):
    from statsmodels.stats.meta_analysis import combine_effects

    yi, vi, _ = bcg
    for ours, theirs in (("DL", "chi2"), ("PM", "iterated")):
        ref = combine_effects(yi, vi, method_re=theirs)
        res = pool(yi, vi, method=ours)
        assert res.tau2 == pytest.approx(ref.tau2, abs=1e-6)
        assert res.estimate == pytest.approx(ref.mean_effect_re, abs=1e-6)


def test_i2_h2_use_metafor_typical_variance(bcg):
    yi, vi, _ = bcg
    for method in ("REML", "ML", "DL", "PM"):
        res = pool(yi, vi, method=method)
        w = 1 / vi
        s2 = 12 * w.sum() / (w.sum() ** 2 - np.sum(w ** 2))
        assert res.i2 == pytest.approx(100 * res.tau2 / (res.tau2 + s2), rel=1e-12)
        assert res.h2 == pytest.approx((res.tau2 + s2) / s2, rel=1e-12)


def test_q_profile_interval_bounds_solve_the_chi2_equations(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi)
    X = np.ones((13, 1))
    assert generalised_q(res.tau2_ci_low, yi, vi, X) == pytest.approx(stats.chi2.ppf(0.975, 12), abs=1e-6)
    assert generalised_q(res.tau2_ci_high, yi, vi, X) == pytest.approx(stats.chi2.ppf(0.025, 12), abs=1e-6)


def test_prediction_interval_is_higgins_t_with_k_minus_2(bcg):
    yi, vi, _ = bcg
    for test in ("z", "knha"):
        res = pool(yi, vi, test=test, level=0.9)
        half = stats.t.ppf(0.95, 11) * math.sqrt(res.tau2 + res.se ** 2)
        assert res.pi_low == pytest.approx(res.estimate - half, rel=1e-12)
        assert res.pi_high == pytest.approx(res.estimate + half, rel=1e-12)


def test_homogeneous_effects_give_tau2_zero_and_the_fixed_effect_answer():
    yi, vi = np.full(6, 0.25), np.array([0.01, 0.02, 0.05, 0.03, 0.04, 0.02])
    fe = pool(yi, vi, method="FE")
    for method in ("REML", "ML", "DL", "PM"):
        res = pool(yi, vi, method=method)
        assert res.tau2 == 0.0
        assert res.estimate == pytest.approx(fe.estimate)
        assert res.se == pytest.approx(fe.se)
        assert res.i2 == 0.0


def test_meta_regression_matches_metafor_ablat(bcg):
    yi, vi, d = bcg
    res = meta_regression(yi, vi, d.ablat)
    # metafor: rma(yi, vi, mods = ~ ablat, data = dat): intercept 0.2515, ablat -0.0291 (se 0.0072), tau^2 0.0764
    assert (r4(res.intercept), r4(res.slope), r4(res.slope_se)) == (0.2515, -0.0291, 0.0072)
    assert res.tau2 == pytest.approx(0.0764, abs=2e-4)
    X = np.column_stack([np.ones(13), d.ablat.to_numpy(dtype=float)])
    assert abs(reml_score(res.tau2, yi, vi, X)) < 1e-6


def test_single_trial_is_reported_not_pooled():
    res = pool([0.4], [0.04])
    assert res.k == 1 and res.estimate == 0.4 and res.se == pytest.approx(0.2) and res.tau2 == 0
    assert "not done" in res.note
    assert math.isnan(res.pi_low) and "at least 3" in res.pi_note
    assert res.ci_low == pytest.approx(0.4 - 1.959964 * 0.2, abs=1e-6)
    assert "not done" in res.summary()


def test_two_trials_have_no_prediction_interval_and_say_why():
    res = pool([0.1, 0.5], [0.02, 0.03])
    assert math.isnan(res.pi_low) and math.isnan(res.pi_high)
    assert "Prediction interval not given" in res.summary() and "k = 2" in res.summary()


@pytest.mark.parametrize("yi, vi, message", [
    ([], [], "k = 0"),
    ([0.1, np.nan], [0.1, 0.1], "finite"),
    ([0.1, np.inf], [0.1, 0.1], "finite"),
    ([0.1, 0.2], [0.1, np.nan], "finite"),
    ([0.1, 0.2], [0.1, 0.0], "> 0"),
    ([0.1, 0.2], [0.1, -1.0], "> 0"),
    ([0.1, 0.2], [0.1], "variances"),
    (["a", "b"], [0.1, 0.1], "numbers"),
])
def test_bad_inputs_raise_one_line_errors(yi, vi, message):
    with pytest.raises(MBIError, match=message) as info:
        pool(yi, vi)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs", [{"method": "HS"}, {"test": "t"}, {"level": 95}, {"level": 0}])
def test_bad_options_raise(kwargs):
    with pytest.raises(MBIError):
        pool([0.1, 0.2, 0.3], [0.1, 0.1, 0.1], **kwargs)


def test_to_dict_is_strict_json_and_summary_is_readable(bcg):
    yi, vi, _ = bcg
    res = pool(yi, vi, labels=[f"t{i}" for i in range(13)])
    payload = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert payload["estimate"] == pytest.approx(res.estimate)
    assert len(payload["weights"]) == 13 and sum(payload["weights"]) == pytest.approx(100)
    single = json.loads(json.dumps(pool([0.1], [0.1]).to_dict(), allow_nan=False))
    assert single["pi_low"] is None and single["i2"] is None
    text = res.summary()
    assert "-0.7145" in text and "I2 = 92.22%" in text and "prediction interval" in text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-3, 3), st.floats(0.005, 2)), min_size=2, max_size=15),
       st.floats(-5, 5), st.sampled_from(["REML", "ML", "DL", "PM"]))
def test_location_equivariance_and_order_invariance(pairs, shift, method):
    yi = np.array([p[0] for p in pairs])
    vi = np.array([p[1] for p in pairs])
    base = pool(yi, vi, method=method)
    moved = pool(yi + shift, vi, method=method)
    flipped = pool(yi[::-1], vi[::-1], method=method)
    assert moved.estimate == pytest.approx(base.estimate + shift, abs=1e-7)
    assert moved.tau2 == pytest.approx(base.tau2, abs=1e-7)
    assert flipped.estimate == pytest.approx(base.estimate, abs=1e-7)
    assert base.tau2 >= 0 and base.ci_low <= base.estimate <= base.ci_high
