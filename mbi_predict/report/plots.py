"""Plots of leave-one-trial-out performance: forest plots per metric, calibration, calibration for benefit, TOC.

Why no participant-level points: these figures are logged to MLflow, which is shared more widely than the IPD.
Calibration is shown as smoothed curves (lowess) per held-out trial and pooled, plus means of observed and predicted
outcome within deciles of the prediction (each an aggregate of about a tenth of the participants), never a scatter;
calibration for benefit as group means per held-out trial (small multiples, one panel per trial), and the TOC
curve from fractions of at least `_MIN_BIN` participants.
Figures are `matplotlib.figure.Figure` objects (no pyplot state), drawn and saved in the package style
(`mbi_predict.figstyle`: colour-blind-safe palette; format and dpi from ``write_plots``' arguments, which the
figures sink takes from the run's config).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mbi_predict import figstyle
from mbi_predict.numbers import label as metric_label
from mbi_predict.numbers import number
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
    """Annotated forest plot of one metric over held-out trials (pooling scale internally, natural scale on the
    axis and in the estimate column). Reuses `mbi_predict.meta.plots.forest_plot`; ``pooled`` is the `PoolResult`
    on the pooling scale (None when nothing could be pooled)."""
    from mbi_predict.meta.plots import forest_plot

    values, variances = np.asarray(values, dtype=float), np.asarray(variances, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = to_pooling_scale(metric, values)
    usable = np.isfinite(y) & np.isfinite(variances) & (variances > 0)
    if not usable.any():
        return None
    keep_labels = [name for name, ok in zip(labels, usable) if ok]
    reference = REFERENCE_LINE.get(metric)
    null_value = float(to_pooling_scale(metric, reference)) if reference is not None else None
    weights = pooled.weights if pooled is not None and len(pooled.weights) == int(usable.sum()) else None
    return forest_plot(keep_labels, y[usable], variances[usable], pooled, weights=weights, title=title,
                       xlabel=f"{metric_label(metric)} in the held-out trial", null_value=null_value,
                       transform=lambda x: from_pooling_scale(metric, x), annotate=True,
                       estimate_label=metric_label(metric))


def calibration_figure(observed: np.ndarray, predicted: np.ndarray, trial: np.ndarray, *, task: str,
                       title: str = "", n_bins: int = 10) -> Figure:
    """Flexible calibration: one thin lowess curve per held-out trial, the pooled curve, and decile means."""
    observed, predicted, trial = np.asarray(observed, float), np.asarray(predicted, float), np.asarray(trial)
    with figstyle.style():
        fig = Figure(figsize=(5.6, 5.2))
        ax = fig.add_subplot(1, 1, 1)
        low, high = np.quantile(predicted, [0.01, 0.99]) if predicted.size else (0.0, 1.0)
        if task == "binary":
            low, high = max(0.0, low), min(1.0, high)
        grid = np.linspace(low, high, 60)
        for name in np.unique(trial):
            rows = trial == name
            if rows.sum() < _MIN_BIN:
                continue
            curve = calibration_curve(observed[rows], predicted[rows], grid, task=task)
            ax.plot(grid, curve, color=figstyle.PALETTE["secondary"], linewidth=0.8, alpha=0.7)
        ax.plot(grid, calibration_curve(observed, predicted, grid, task=task), color=figstyle.PALETTE["pooled"],
                linewidth=2.2, label="pooled over held-out trials (lowess)")
        bins = binned_means(observed, predicted, n_bins=n_bins)
        if not bins.empty:
            ax.plot(bins["predicted"], bins["observed"], "s", color=figstyle.PALETTE["estimate"], markersize=5,
                    label=f"decile means (≥ {_MIN_BIN} participants each)")
        span = [min(low, np.nanmin(bins["observed"]) if not bins.empty else low),
                max(high, np.nanmax(bins["observed"]) if not bins.empty else high)]
        ax.plot(span, span, linestyle="--", color=figstyle.PALETTE["reference"], linewidth=0.9,
                label="perfect calibration")
        ax.plot([], [], color=figstyle.PALETTE["secondary"], linewidth=0.8, label="each held-out trial (lowess)")
        ax.set_xlabel("predicted probability" if task == "binary" else "predicted outcome")
        ax.set_ylabel("observed proportion" if task == "binary" else "observed outcome (smoothed)")
        ax.legend(loc="upper left")
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


def _benefit_panel(ax, table: pd.DataFrame, colour: str, lims: tuple[float, float]) -> None:
    ax.plot(lims, lims, linestyle="--", color=figstyle.PALETTE["reference"], linewidth=0.8)
    ax.axhline(0, color=figstyle.PALETTE["muted"], linewidth=0.6)
    ax.errorbar(table["mean_predicted"], table["mean_observed"],
                yerr=[table["mean_observed"] - table["ci_low"], table["ci_high"] - table["mean_observed"]],
                fmt="o", color=colour, ecolor=colour, elinewidth=1, capsize=2, markersize=4)


def benefit_calibration_figures(pseudo: np.ndarray, cate: np.ndarray, trial: np.ndarray, *, model: str,
                                n_groups: int = 5) -> dict[str, Figure]:
    """Calibration for benefit: observed (doubly robust, from each held-out trial's own data) against predicted
    effect by quantile group of predicted CATE, pooled over held-out trials (``pooled``) and as small multiples,
    one panel per held-out trial on shared axes (``by-trial``). Group means only: each point stands for a fifth
    of a trial's participants; trials with fewer than ``n_groups * 10`` participants get no panel."""
    from mbi_predict.validate.benefit import calibration_for_benefit_table

    pseudo, cate, trial = np.asarray(pseudo, float), np.asarray(cate, float), np.asarray(trial)
    figures: dict[str, Figure] = {}
    with figstyle.style():
        if len(pseudo) >= n_groups * _MIN_BIN:
            table = calibration_for_benefit_table(pseudo, cate, n_groups=n_groups)
            lo = float(min(table["mean_predicted"].min(), table["ci_low"].min()))
            hi = float(max(table["mean_predicted"].max(), table["ci_high"].max()))
            fig = Figure(figsize=(5.2, 4.8))
            ax = fig.add_subplot()
            _benefit_panel(ax, table, figstyle.PALETTE["estimate"], (lo, hi))
            x_pad = 0.15 * max(float(np.ptp(table["mean_predicted"])), 1e-3)
            ax.set_xlim(float(table["mean_predicted"].min()) - x_pad, float(table["mean_predicted"].max()) + x_pad)
            ax.set_xlabel("predicted effect (mean CATE in the fifth)")
            ax.set_ylabel("observed effect (doubly robust, 95% CI)")
            ax.set_title(f"{model}: calibration for benefit, all held-out trials")
            ax.text(0.02, 0.98, "dashed: perfect calibration", transform=ax.transAxes, va="top", fontsize=7.5,
                    color="#444444")
            fig.tight_layout()
            figures["pooled"] = fig
        tables, skipped = {}, []
        for name in np.unique(trial):
            rows = trial == name
            if rows.sum() >= n_groups * _MIN_BIN:
                tables[str(name)] = (calibration_for_benefit_table(pseudo[rows], cate[rows], n_groups=n_groups),
                                     int(rows.sum()))
            else:
                skipped.append(str(name))
        if tables:
            figures["by-trial"] = _small_multiples(tables, model, skipped, n_groups * _MIN_BIN)
    return figures


def _small_multiples(tables: dict[str, tuple[pd.DataFrame, int]], model: str, skipped: list[str] | None = None,
                     min_n: int = 50) -> Figure:
    """One panel per trial; the trials too small for a panel are named under the panels, never dropped silently."""
    ncols = min(4, len(tables))
    nrows = math.ceil(len(tables) / ncols)
    fig = Figure(figsize=(2.3 * ncols + 0.6, 2.1 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    xs = np.concatenate([t["mean_predicted"].to_numpy() for t, _ in tables.values()])
    ys = np.concatenate([np.r_[t["ci_low"].to_numpy(), t["ci_high"].to_numpy()] for t, _ in tables.values()])
    # x spans the predictions, y the middle of the intervals (one wide trial must not flatten the others); the
    # identity line is drawn across both and clipped by the axes
    x_pad = 0.15 * max(float(np.ptp(xs)), 1e-3)
    x_lim = (float(xs.min()) - x_pad, float(xs.max()) + x_pad)
    y_lo, y_hi = (float(v) for v in np.nanquantile(ys, [0.05, 0.95]))
    y_pad = 0.1 * max(y_hi - y_lo, 1e-3)
    y_lim = (min(y_lo, x_lim[0]) - y_pad, max(y_hi, x_lim[1]) + y_pad)
    span = (min(x_lim[0], y_lim[0]), max(x_lim[1], y_lim[1]))
    for ax, (name, (table, n)) in zip(axes.flat, tables.items()):
        _benefit_panel(ax, table, figstyle.PALETTE["estimate"], span)
        ax.set_title(f"{name} (n = {n})", fontsize=8.5, fontweight="normal")
        ax.set_xlim(*x_lim)
        ax.set_ylim(*y_lim)
    for ax in list(axes.flat)[len(tables):]:
        ax.axis("off")
    xlabel = "predicted effect (mean CATE in the fifth of the trial)"
    if skipped:
        xlabel += (f"\nno panel (fewer than {min_n} participants in the held-out trial): "
                   + ", ".join(skipped))
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel("observed effect (doubly robust, 95% CI)", fontsize=9)
    fig.suptitle(f"{model}: calibration for benefit in each held-out trial", x=0.01, ha="left",
                 fontweight="bold", fontsize=10.5)
    fig.tight_layout()
    return fig


def toc_curve(pseudo: np.ndarray, cate: np.ndarray, trial: np.ndarray, *, higher_is_better: bool,
              grid: np.ndarray | None = None) -> pd.DataFrame:
    """The targeting operator characteristic: for each share q of a held-out trial's participants with the
    largest predicted benefit, the mean benefit (doubly robust) of that share minus the trial's mean; averaged
    over held-out trials weighted by their size. Aggregates only: a share is used only when it holds at least
    10 participants. Columns: q, toc, n_trials."""
    pseudo, cate, trial = np.asarray(pseudo, float), np.asarray(cate, float), np.asarray(trial)
    grid = np.linspace(0.05, 1.0, 20) if grid is None else np.asarray(grid, float)
    sign = 1.0 if higher_is_better else -1.0
    sums, weights = np.zeros(len(grid)), np.zeros(len(grid))
    counts = np.zeros(len(grid), dtype=int)
    for name in np.unique(trial):
        rows = trial == name
        scores, priority = sign * pseudo[rows], sign * cate[rows]
        order = np.argsort(-priority, kind="stable")
        ordered = scores[order]
        n = len(ordered)
        cumulative = np.cumsum(ordered) / np.arange(1, n + 1) - ordered.mean()
        for i, q in enumerate(grid):
            j = int(math.ceil(q * n))
            if j >= _MIN_BIN:
                sums[i] += n * cumulative[j - 1]
                weights[i] += n
                counts[i] += 1
    toc = np.where(weights > 0, sums / np.where(weights > 0, weights, 1), np.nan)
    return pd.DataFrame({"q": grid, "toc": toc, "n_trials": counts})


def toc_figure(curve: pd.DataFrame, *, model: str, rate: Any = None) -> Figure:
    """The TOC curve with the pooled RATE (AUTOC: the area under it) in the legend when given (a PoolResult or
    its dict form)."""
    with figstyle.style():
        fig = Figure(figsize=(5.4, 4.2))
        ax = fig.add_subplot()
        ok = np.isfinite(curve["toc"].to_numpy())
        q, toc = curve["q"].to_numpy()[ok], curve["toc"].to_numpy()[ok]
        ax.fill_between(q, 0, toc, color=figstyle.PALETTE["secondary"], alpha=0.35, linewidth=0)
        ax.plot(q, toc, color=figstyle.PALETTE["estimate"], marker="o", markersize=3,
                label="TOC, averaged over held-out trials")
        ax.axhline(0, color=figstyle.PALETTE["reference"], linestyle="--", linewidth=0.8,
                   label="random targeting (no heterogeneity)")
        if rate is not None:
            get = (lambda key: rate.get(key)) if isinstance(rate, dict) else (lambda key: getattr(rate, key, None))
            ax.plot([], [], " ", label=f"pooled RATE (AUTOC) {number(get('estimate'))} "
                                       f"(95% CI {number(get('ci_low'))} to {number(get('ci_high'))})")
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the trial treated, largest predicted benefit first")
        ax.set_ylabel("benefit of those treated minus the trial's average")
        ax.set_title(f"{model}: targeting operator characteristic")
        # below the axes: inside, it sat on the curve's peak
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7.5, frameon=False)
        fig.tight_layout()
    return fig


def _orientation(block: dict[str, Any], forest: dict[str, Any] | None) -> bool:
    """Whether a larger CATE is a larger benefit: as recorded, else the orientation that reproduces the recorded
    per-trial RATE, else False (effects are MBI minus control on outcomes where lower is better)."""
    if block.get("higher_is_better") is not None:
        return bool(block["higher_is_better"])
    recorded = (forest or {}).get("rate_autoc")
    if recorded and len(recorded.get("labels", [])):
        from mbi_predict.validate.benefit import rate

        wanted = dict(zip(map(str, recorded["labels"]), recorded["values"]))
        errors = {}
        for higher in (True, False):
            errors[higher] = sum(
                abs(rate(block["pseudo"][block["trial"] == t], block["cate"][block["trial"] == t],
                         higher_is_better=higher, B=0)["estimate"] - v)
                for t, v in wanted.items() if np.isfinite(v) and np.sum(block["trial"] == t) > 1)
        return min(errors, key=errors.get)
    return False


def write_plots(out_dir: Path, *, forests: dict[str, dict[str, dict[str, Any]]],
                calibration: dict[str, dict[str, Any]],
                benefit_calibration: dict[str, dict[str, Any]] | None = None, format: str | None = None,
                dpi: int | None = None) -> list[Path]:
    """Save every figure under ``out_dir`` in ``format`` at ``dpi`` (default png at 150 dpi, `figstyle.settings`);
    returns the written paths.

    ``forests[model][metric]`` holds ``labels, values, variances, pooled``; ``calibration[model]`` holds
    ``observed, predicted, trial, task``; ``benefit_calibration[model]`` (effect models) holds ``pseudo, cate,
    trial`` (held-out DR pseudo-outcomes and predicted CATE, in memory only) and optionally ``higher_is_better``.
    File names are ``<kind>_<model>_<what>.<format>`` so a model card can pick a model's figures.
    """
    out_dir = Path(out_dir)
    chosen = figstyle.settings(format, dpi)

    def save(fig: Figure, stem: str) -> Path:
        return figstyle.save_figure(fig, out_dir / stem, format=chosen.format, dpi=chosen.dpi)

    written = []
    for model, metrics in forests.items():
        for metric, block in metrics.items():
            if metric not in FOREST_METRICS:
                continue
            fig = metric_forest(metric, block["labels"], block["values"], block["variances"], block["pooled"],
                                title=f"{model}: {metric_label(metric)} in each held-out trial")
            if fig is not None:
                written.append(save(fig, f"forest_{model}_{metric}"))
    for model, block in calibration.items():
        if len(block["observed"]) == 0 or not math.isfinite(float(np.ptp(block["predicted"]))):
            continue
        fig = calibration_figure(block["observed"], block["predicted"], block["trial"], task=block["task"],
                                 title=f"{model}: calibration in held-out trials")
        written.append(save(fig, f"calibration_{model}"))
    for model, block in (benefit_calibration or {}).items():
        if len(block["pseudo"]) == 0:
            continue
        block = {**block, "pseudo": np.asarray(block["pseudo"], float), "cate": np.asarray(block["cate"], float),
                 "trial": np.asarray(block["trial"]).astype(str)}
        figures = benefit_calibration_figures(block["pseudo"], block["cate"], block["trial"], model=model)
        for what, fig in figures.items():
            written.append(save(fig, f"benefit-calibration_{model}_{what}"))
        forest = forests.get(model)
        curve = toc_curve(block["pseudo"], block["cate"], block["trial"],
                          higher_is_better=_orientation(block, forest))
        if np.isfinite(curve["toc"]).any():
            pooled_rate = ((forest or {}).get("rate_autoc") or {}).get("pooled")
            written.append(save(toc_figure(curve, model=model, rate=pooled_rate), f"toc_{model}"))
    return written
