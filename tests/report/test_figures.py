"""Figures: one style, the requested format and resolution, annotated forest plots, small multiples, TOC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mbi_predict.errors import ConfigError
from mbi_predict import figstyle
from mbi_predict.numbers import number, p_value


def _inputs(trials=("T1", "T2", "T3", "T4", "T5", "T6")):
    from mbi_predict.validate.pooling import pool_metric

    rng = np.random.default_rng(0)
    trial = np.repeat(trials, 100)
    x = rng.normal(size=len(trial))
    cate = -0.3 - 0.2 * x
    values = list(0.05 + rng.normal(0, 0.03, len(trials)))
    _, pooled = pool_metric("rate_autoc", values, [0.002] * len(trials), list(trials))
    observed = rng.normal(size=len(trial))
    return dict(
        forests={"m": {"rate_autoc": {"labels": list(trials), "values": values, "variances": [0.002] * len(trials),
                                      "pooled": pooled}}},
        calibration={"p": {"observed": observed, "predicted": 0.8 * observed, "trial": trial,
                           "task": "continuous"}},
        benefit_calibration={"m": {"pseudo": cate + rng.normal(0, 1, len(trial)), "cate": cate, "trial": trial}})


def _check_file(data: bytes, fmt: str, dpi: int) -> None:
    """A written figure is in its format, a PNG at its dpi."""
    if fmt == "png":
        assert figstyle.png_dpi(data) == pytest.approx(dpi, abs=1)
    elif fmt == "svg":
        assert b"<svg" in data[:2000]
    else:
        assert data.startswith(b"%PDF")


@pytest.mark.parametrize("fmt,dpi", [("png", 200), ("svg", 150), ("pdf", 300)])
def test_plots_are_written_in_the_requested_format_and_dpi(tmp_path, fmt, dpi):
    from mbi_predict.report.plots import write_plots

    written = write_plots(tmp_path, **_inputs(), format=fmt, dpi=dpi)
    names = {path.name for path in written}
    assert names == {f"forest_m_rate_autoc.{fmt}", f"calibration_p.{fmt}", f"benefit-calibration_m_pooled.{fmt}",
                     f"benefit-calibration_m_by-trial.{fmt}", f"toc_m.{fmt}"}
    for path in written:
        _check_file(path.read_bytes(), fmt, dpi)


def test_the_default_is_png_at_150_dpi_and_the_environment_plays_no_part(tmp_path, monkeypatch):
    """The settings travel as arguments (a worker process need not share the environment): the variables an
    earlier version read are ignored."""
    from mbi_predict.report.plots import write_plots

    monkeypatch.setenv("MBI_FIGURE_FORMAT", "svg")
    monkeypatch.setenv("MBI_FIGURE_DPI", "300")
    assert figstyle.settings() == figstyle.FigureSettings("png", 150)
    written = write_plots(tmp_path / "a", **_inputs())
    assert {p.suffix for p in written} == {".png"}
    assert all(figstyle.png_dpi(p.read_bytes()) == pytest.approx(150, abs=1) for p in written)


def test_settings_come_from_the_arguments_over_a_config_block():
    block = figstyle.from_config({"figures": {"format": "pdf", "dpi": 300}})
    assert block == figstyle.FigureSettings("pdf", 300)
    assert figstyle.settings("svg", base=block) == figstyle.FigureSettings("svg", 300)
    assert figstyle.settings(dpi=600, base=block) == figstyle.FigureSettings("pdf", 600)
    assert figstyle.from_config({"experiment": "x"}) == figstyle.FigureSettings()   # a config without the block


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="png, svg, pdf"):
        figstyle.check_format("jpeg")
    with pytest.raises(ConfigError, match="between 50 and 1200"):
        figstyle.check_dpi(10)
    with pytest.raises(ConfigError, match="whole number"):
        figstyle.check_dpi(150.5)
    with pytest.raises(ConfigError, match="unknown key"):
        figstyle.from_config({"figures": {"format": "png", "colour": "red"}})
    with pytest.raises(ConfigError, match="^figures.dpi must be between"):
        figstyle.from_config({"figures": {"dpi": 5000}})


@pytest.mark.parametrize("fmt,dpi", [("png", 220), ("svg", 150), ("pdf", 300)])
def test_meta_plots_are_written_in_the_requested_format_and_dpi(tmp_path, fmt, dpi):
    from mbi_predict.meta import write_meta_plots

    record = {"outcome": "distress", "control": "passive", "outcome_type": "continuous",
              "per_trial": [{"trial_id": f"T{i}", "estimate": -0.3 + 0.05 * i, "se": 0.12} for i in range(5)],
              "pooled": {"estimate": -0.2, "ci_low": -0.3, "ci_high": -0.1, "k": 5}}
    written = write_meta_plots(record, tmp_path, format=fmt, dpi=dpi)
    assert [p.name for p in written] == [f"forest.{fmt}", f"funnel.{fmt}"]
    for path in written:
        _check_file(path.read_bytes(), fmt, dpi)


def test_forest_plot_is_annotated_like_metafor(tmp_path):
    from mbi_predict.meta.plots import meta_forest_from_dict

    record = {"outcome": "distress", "control": "passive", "outcome_type": "continuous", "measure": "Hedges' g",
              "per_trial": [{"trial_id": f"T{i}", "estimate": -0.3 + 0.05 * i, "se": 0.12, "weight": 100 / 5}
                            for i in range(5)],
              "pooled": {"estimate": -0.2, "ci_low": -0.3, "ci_high": -0.1, "pi_low": -0.35, "pi_high": -0.05,
                         "tau2": 0.004, "i2": 12.5, "q": 4.4, "q_df": 4, "q_pvalue": 0.35, "k": 5,
                         "method": "REML", "level": 0.95, "weights": [20.0] * 5}}
    fig = meta_forest_from_dict(record)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig.get_supxlabel()]
    joined = " ".join(texts)
    assert "Weight" in joined and "g [95% CI]" in joined and "20.0%" in joined
    assert "τ² = 0.004" in joined and "I² = 12%" in joined or "I² = 13%" in joined
    assert "Q = 4.4 (df = 4, p = 0.35)" in joined and "prediction interval" in joined
    assert "favours MBI" in joined and "favours control" in joined
    assert "−0.20 [ −0.30,  −0.10]" in joined   # pooled estimate and CI, aligned column


def test_benefit_calibration_by_trial_is_small_multiples():
    from mbi_predict.report.plots import benefit_calibration_figures

    inputs = _inputs()["benefit_calibration"]["m"]
    figures = benefit_calibration_figures(inputs["pseudo"], inputs["cate"], inputs["trial"], model="m")
    panels = [ax for ax in figures["by-trial"].axes if ax.get_visible() and ax.axison]
    assert len(panels) == 6 and all(len(ax.lines) >= 2 for ax in panels)   # one panel per held-out trial


def test_toc_curve_uses_shares_of_at_least_ten_people():
    from mbi_predict.report.plots import toc_curve

    inputs = _inputs()["benefit_calibration"]["m"]
    curve = toc_curve(inputs["pseudo"], inputs["cate"], inputs["trial"], higher_is_better=False)
    assert np.isnan(curve.loc[curve["q"] < 0.1, "toc"]).all()            # 5% of 100 = 5 people: not shown
    assert curve.loc[curve["q"] == 1.0, "toc"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert (curve.loc[(curve["q"] > 0.1) & (curve["q"] < 0.6), "toc"] > 0).all()   # the ranking finds benefit


def test_comparison_figure_has_a_row_per_model(tmp_path, run_summary):
    from mbi_predict.report.study_figures import comparison_figure, comparison_rows

    rows = comparison_rows(run_summary, "rmse", kind="prognostic")
    fig = comparison_figure(rows, "rmse", highlight={"reference"})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [r["model"] for r in rows]
    assert json.dumps(rows)   # plain numbers


def test_numbers_read_well():
    assert number(-1.96e-17) == "0" and number(0.000123) == "0.000123" and number(12345.6) == "12,346"
    assert number(0.0312345) == "0.0312" and number(3) == "3" and number(float("nan")) == "–"
    assert p_value(0.00001) == "< 0.001" and p_value(0.0472) == "0.047" and p_value(0.5) == "0.50"
