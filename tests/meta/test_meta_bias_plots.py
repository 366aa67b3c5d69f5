"""Egger's test, leave-one-out and the generic forest/funnel plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mbi_predict.errors import MBIError
from mbi_predict.meta import egger_test, leave_one_out, pool
from mbi_predict.meta.plots import forest_plot, funnel_plot

DATA = Path(__file__).parent / "data" / "dat_bcg.csv"


@pytest.fixture(scope="module")
def bcg():
    d = pd.read_csv(DATA, comment="#")
    return d["yi"].to_numpy(), d["vi"].to_numpy()


def test_egger_with_fewer_than_10_trials_is_not_done(bcg):
    yi, vi = bcg
    res = egger_test(yi[:9], vi[:9])
    assert res.done is False and res.k == 9
    assert "at least 10" in res.reason and np.isnan(res.pvalue)
    assert res.to_dict()["pvalue"] is None


def test_egger_equals_the_weighted_regression_on_the_standard_error(bcg):
    # yi/sei = b0 + b1/sei is the same fit as yi = b1 + b0*sei weighted by 1/vi (metafor regtest(model="lm"))
    import statsmodels.api as sm

    yi, vi = bcg
    res = egger_test(yi, vi)
    assert res.done and res.df == 11
    wls = sm.WLS(yi, sm.add_constant(np.sqrt(vi)), weights=1 / vi).fit()
    assert res.intercept == pytest.approx(wls.params[1], rel=1e-10)
    assert res.intercept_se == pytest.approx(wls.bse[1], rel=1e-10)
    assert res.pvalue == pytest.approx(wls.pvalues[1], rel=1e-8)


def test_egger_detects_built_in_asymmetry():
    rng = np.random.default_rng(0)
    se = rng.uniform(0.05, 0.5, 40)
    yi = 0.2 + 1.5 * se + rng.normal(0, se)  # small studies show larger effects
    assert egger_test(yi, se ** 2).pvalue < 0.01


def test_leave_one_out_rows_are_the_pools_without_each_trial(bcg):
    yi, vi = bcg
    rows = leave_one_out(yi, vi, [f"t{i}" for i in range(13)], test="knha")
    assert len(rows) == 13
    for i in (0, 7, 12):
        keep = np.arange(13) != i
        ref = pool(yi[keep], vi[keep], test="knha")
        assert rows[i]["omitted"] == f"t{i}" and rows[i]["k"] == 12
        assert rows[i]["estimate"] == pytest.approx(ref.estimate) and rows[i]["tau2"] == pytest.approx(ref.tau2)
    assert leave_one_out(yi[:2], vi[:2]) == []
    with pytest.raises(MBIError):
        leave_one_out(yi, vi, ["a"])


def test_forest_plot_from_variances_with_pooled_result(bcg):
    yi, vi = bcg
    res = pool(yi, vi)
    fig = forest_plot([f"trial {i}" for i in range(13)], yi, vi, res, title="BCG", xlabel="log RR")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 14 and labels[-1].startswith("Pooled (REML, k = 13)")
    assert "%" in labels[0]  # weights shown
    assert ax.get_legend() is not None  # the prediction interval
    assert ax.get_title() == "BCG"


def test_forest_plot_generic_use_with_ci_bounds_and_no_pool():
    # e.g. per-trial c-statistics: estimates with CI bounds, no pooled result, a null line at 0.5
    est = np.array([0.70, 0.65, 0.72])
    fig = forest_plot(["a", "b", "c"], est, ci=(est - 0.05, est + 0.05), null_value=0.5, xlabel="c-statistic")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["a", "b", "c"]
    with pytest.raises(MBIError, match="variances"):
        forest_plot(["a"], [0.1])
    with pytest.raises(MBIError, match="2 values for 3"):
        forest_plot(["a", "b", "c"], [0.1, 0.2])


def test_funnel_plot(bcg, tmp_path):
    from mbi_predict.io import save_figure_atomic

    yi, vi = bcg
    fig = funnel_plot(yi, vi, pool(yi, vi), xlabel="log RR")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # standard error axis inverted
    path = save_figure_atomic(tmp_path / "funnel.png", fig)
    assert path.stat().st_size > 1000
