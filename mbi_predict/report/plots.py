"""Plots of leave-one-trial-out performance: a forest plot per metric and calibration plots per model.

Why no participant-level points: these figures are logged to MLflow, which is shared more widely than the IPD.
Calibration is shown as smoothed curves (lowess) per held-out trial and pooled, plus means of observed and predicted
outcome within deciles of the prediction (each an aggregate of about a tenth of the participants), never a scatter.
Figures are `matplotlib.figure.Figure` objects (no pyplot state); `save_figure_atomic` renders them with Agg.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mbi_predict.io import save_figure_atomic
from mbi_predict.validate.metrics import calibration_curve
from mbi_predict.validate.pooling import from_pooling_scale, to_pooling_scale

#: the value of perfect performance / no information, drawn as the reference line of a forest plot
REFERENCE_LINE = {"calibration_slope": 1.0, "calibration_intercept": 0.0, "oe_ratio": 1.0, "c_statistic": 0.5,
                  "r2": 0.0, "benefit_calibration_slope": 1.0, "c_for_benefit": 0.5, "rate_autoc": 0.0, "ate": 0.0,
                  "cate_truth_corr": 0.0, "observed_effect_predicted_harmed": 0.0}
_MIN_BIN = 10
#: metrics that get a forest plot (the others are in summary.json and MLflow): discrimination / overall accuracy
#: and calibration, without near-duplicates (mae ~ rmse, e50/e90 ~ ici)
FOREST_METRICS = ("r2", "rmse", "calibration_slope", "calibration_intercept", "c_statistic", "brier", "oe_ratio",
                  "ici", "benefit_calibration_slope", "c_for_benefit", "rate_autoc", "ate", "pehe", "cate_truth_corr",
                  "share_predicted_harmed", "observed_effect_predicted_harmed")


def metric_forest(metric: str, labels: list[str], values: list[float], variances: list[float], pooled: Any, *,
                  title: str = "") -> Figure | None:
    """Forest plot of one metric over held-out trials (pooling scale internally, natural scale on the axis).

    Reuses `mbi_predict.meta.plots.forest_plot`, the same plot as for treatment effects; ``pooled`` is the
    `PoolResult` on the pooling scale (None when nothing could be pooled).
    """
    from mbi_predict.meta.plots import forest_plot

    values, variances = np.asarray(values, dtype=float), np.asarray(variances, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = to_pooling_scale(metric, values)
    usable = np.isfinite(y) & np.isfinite(variances) & (variances > 0)
    if not usable.any():
        return None
    keep_labels = [label for label, ok in zip(labels, usable) if ok]
    reference = REFERENCE_LINE.get(metric)
    null_value = float(to_pooling_scale(metric, reference)) if reference is not None else None
    weights = pooled.weights if pooled is not None and len(pooled.weights) == int(usable.sum()) else None
    return forest_plot(keep_labels, y[usable], variances[usable], pooled, weights=weights, title=title,
                       xlabel=metric.replace("_", " "), null_value=null_value,
                       transform=lambda x: from_pooling_scale(metric, x))


def calibration_figure(observed: np.ndarray, predicted: np.ndarray, trial: np.ndarray, *, task: str,
                       title: str = "", n_bins: int = 10) -> Figure:
    """Flexible calibration: one thin lowess curve per held-out trial, the pooled curve, and decile means."""
    observed, predicted, trial = np.asarray(observed, float), np.asarray(predicted, float), np.asarray(trial)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(1, 1, 1)
    low, high = np.quantile(predicted, [0.01, 0.99]) if predicted.size else (0.0, 1.0)
    if task == "binary":
        low, high = max(0.0, low), min(1.0, high)
    grid = np.linspace(low, high, 60)
    for label in np.unique(trial):
        rows = trial == label
        curve = calibration_curve(observed[rows], predicted[rows], grid, task=task)
        ax.plot(grid, curve, color="#7f8c8d", linewidth=0.8, alpha=0.6)
    ax.plot(grid, calibration_curve(observed, predicted, grid, task=task), color="#c0392b", linewidth=2,
            label="pooled over held-out trials (lowess)")
    bins = binned_means(observed, predicted, n_bins=n_bins)
    if not bins.empty:
        ax.plot(bins["predicted"], bins["observed"], "s", color="#2b5d8a", markersize=5,
                label=f"decile means (>= {_MIN_BIN} participants each)")
    span = [min(low, np.nanmin(bins["observed"]) if not bins.empty else low),
            max(high, np.nanmax(bins["observed"]) if not bins.empty else high)]
    ax.plot(span, span, linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    ax.plot([], [], color="#7f8c8d", linewidth=0.8, label="each held-out trial")
    ax.set_xlabel("predicted probability" if task == "binary" else "predicted outcome")
    ax.set_ylabel("observed proportion" if task == "binary" else "observed outcome (smoothed)")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def binned_means(observed: np.ndarray, predicted: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted and observed outcome within quantile bins of the prediction; bins smaller than
    ``_MIN_BIN`` participants are merged away (fewer bins) so no plotted point stands for a handful of people."""
    n = len(observed)
    n_bins = int(min(n_bins, n // _MIN_BIN))
    if n_bins < 2:
        return pd.DataFrame(columns=["predicted", "observed", "n"])
    order = np.argsort(predicted, kind="stable")
    groups = np.array_split(order, n_bins)
    return pd.DataFrame({"predicted": [float(np.mean(predicted[g])) for g in groups],
                         "observed": [float(np.mean(observed[g])) for g in groups],
                         "n": [len(g) for g in groups]})


def benefit_calibration_figures(pseudo: np.ndarray, cate: np.ndarray, trial: np.ndarray, *, model: str,
                                n_groups: int = 5) -> dict[str, Figure]:
    """Calibration for benefit: observed (doubly robust, from each held-out trial's own data) against predicted
    effect by quantile group of predicted CATE, pooled over held-out trials and per held-out trial (group means
    only: each point stands for a fifth of a trial's participants). Keys ``pooled`` and ``by-trial``."""
    from mbi_predict.validate.benefit import calibration_for_benefit_table, plot_benefit_calibration

    figures = {}
    if len(pseudo) >= 2 * n_groups * _MIN_BIN // 2:
        table = calibration_for_benefit_table(pseudo, cate, n_groups=n_groups)
        figures["pooled"] = plot_benefit_calibration(
            {"pooled over held-out trials": table}, title=f"{model}: calibration for benefit (held-out trials)")
    tables = {}
    for label in np.unique(trial):
        rows = trial == label
        if rows.sum() >= n_groups * _MIN_BIN:
            tables[str(label)] = calibration_for_benefit_table(pseudo[rows], cate[rows], n_groups=n_groups)
    if tables:
        fig = plot_benefit_calibration(tables, title=f"{model}: calibration for benefit by held-out trial")
        for ax in fig.axes:
            if ax.get_legend() is not None:
                ax.legend(fontsize=6, ncol=2)
        figures["by-trial"] = fig
    return figures


def write_plots(out_dir: Path, *, forests: dict[str, dict[str, dict[str, Any]]],
                calibration: dict[str, dict[str, Any]],
                benefit_calibration: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """Save every figure under ``out_dir``; returns the written paths.

    ``forests[model][metric]`` holds ``labels, values, variances, pooled``; ``calibration[model]`` holds
    ``observed, predicted, trial, task``; ``benefit_calibration[model]`` (effect models) holds ``pseudo, cate,
    trial`` (held-out DR pseudo-outcomes and predicted CATE, in memory only). File names are
    ``<kind>_<model>_<what>.png`` so a model card can pick a model's figures.
    """
    out_dir = Path(out_dir)
    written = []
    for model, metrics in forests.items():
        for metric, block in metrics.items():
            if metric not in FOREST_METRICS:
                continue
            fig = metric_forest(metric, block["labels"], block["values"], block["variances"], block["pooled"],
                                title=f"{model}: {metric.replace('_', ' ')} by held-out trial")
            if fig is not None:
                written.append(save_figure_atomic(out_dir / f"forest_{model}_{metric}.png", fig, dpi=80))
    for model, block in calibration.items():
        if len(block["observed"]) == 0 or not math.isfinite(float(np.ptp(block["predicted"]))):
            continue
        fig = calibration_figure(block["observed"], block["predicted"], block["trial"], task=block["task"],
                                 title=f"{model}: calibration in held-out trials")
        written.append(save_figure_atomic(out_dir / f"calibration_{model}.png", fig, dpi=80))
    for model, block in (benefit_calibration or {}).items():
        if len(block["pseudo"]) == 0:
            continue
        figures = benefit_calibration_figures(block["pseudo"], block["cate"], block["trial"], model=model)
        for what, fig in figures.items():
            written.append(save_figure_atomic(out_dir / f"benefit-calibration_{model}_{what}.png", fig, dpi=80))
    return written
