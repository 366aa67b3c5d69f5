"""Forest and funnel plots (matplotlib; figures are returned, never shown).

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot: they never enter pyplot's global figure
registry, so nothing is shown, nothing leaks between calls, no backend has to be forced on the caller, and saving
(`mbi_predict.io.save_figure_atomic`) renders with Agg.

Generic on purpose: the same forest plot shows per-trial treatment effects and, later, per-trial model performance
(c-statistics, calibration slopes). Give either variances or CI bounds; the pooled result, weights, a prediction
interval and the null line are optional. `transform` maps the analysis scale to the display scale (e.g. `np.exp`
for log risk ratios, `scipy.special.expit` for logit c-statistics); it is applied to every x value plotted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from mbi_predict.errors import MBIError
from mbi_predict.meta.pool import PoolResult


def _as_float(values: Any, name: str, k: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size != k:
        raise MBIError(f"{name} has {arr.size} values for {k} labels")
    return arr


def forest_plot(labels: Sequence[Any], yi: Any, vi: Any = None, pooled: PoolResult | None = None, *,
                ci: tuple[Any, Any] | None = None, weights: Any = None, title: str = "", xlabel: str = "",
                null_value: float | None = 0.0, level: float = 0.95,
                transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Figure:
    """One row per trial (square sized by weight, CI whiskers), the pooled diamond and the prediction interval."""
    labels = [str(x) for x in labels]
    k = len(labels)
    if k == 0:
        raise MBIError("nothing to plot: no trials")
    y = _as_float(yi, "yi", k)
    if ci is not None:
        low, high = _as_float(ci[0], "ci low", k), _as_float(ci[1], "ci high", k)
    elif vi is not None:
        half = float(stats.norm.ppf(0.5 + level / 2)) * np.sqrt(_as_float(vi, "vi", k))
        low, high = y - half, y + half
    else:
        raise MBIError("give either the variances (vi) or the CI bounds (ci) of the per-trial estimates")
    if weights is None and pooled is not None and len(pooled.weights) == k:
        weights = pooled.weights
    w = _as_float(weights, "weights", k) if weights is not None else None
    f = transform or (lambda x: x)

    rows = k + (3 if pooled is not None else 1)
    fig = Figure(figsize=(8, 0.38 * rows + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(k)[::-1] + (2 if pooled is not None else 0)
    sizes = 20 + 180 * (w / w.max()) if w is not None and np.nanmax(w) > 0 else np.full(k, 40.0)
    ax.hlines(positions, f(low), f(high), color="black", linewidth=1)
    ax.scatter(f(y), positions, s=sizes, marker="s", color="#2b5d8a", zorder=3)
    tick_labels = [f"{name}  ({wt:.1f}%)" if w is not None else name for name, wt in
                   zip(labels, w if w is not None else [None] * k)]
    ticks, texts = list(positions), tick_labels
    if pooled is not None:
        centre = 0.5
        diamond_x = f(np.array([pooled.ci_low, pooled.estimate, pooled.ci_high, pooled.estimate]))
        diamond_y = np.array([centre, centre + 0.3, centre, centre - 0.3])
        ax.fill(diamond_x, diamond_y, color="#c0392b", zorder=3)
        if math.isfinite(pooled.pi_low):
            ax.hlines(centre - 0.45, *f(np.array([pooled.pi_low, pooled.pi_high])), color="#c0392b", linewidth=2,
                      linestyle="-", label=f"{round(100 * pooled.level)}% prediction interval")
            ax.legend(loc="lower right", fontsize=8, frameon=False)
        ticks.append(centre)
        texts.append(f"Pooled ({pooled.method}, k = {pooled.k})")
        ax.axvline(f(np.array([pooled.estimate]))[0], color="#c0392b", linestyle=":", linewidth=0.8)
    if null_value is not None:
        ax.axvline(f(np.array([null_value]))[0], color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(texts)
    ax.set_ylim(-0.5, max(positions) + 0.8)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    ax.tick_params(axis="y", length=0)
    fig.tight_layout()
    return fig


def funnel_plot(yi: Any, vi: Any, pooled: PoolResult | None = None, *, title: str = "", xlabel: str = "",
                level: float = 0.95) -> Figure:
    """Effect against standard error (inverted axis) with the pseudo-confidence funnel around the pooled estimate."""
    y = np.asarray(yi, dtype=float).ravel()
    se = np.sqrt(np.asarray(vi, dtype=float).ravel())
    if y.size == 0 or y.size != se.size:
        raise MBIError("funnel plot needs one variance per effect size and at least one trial")
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    top = float(se.max()) * 1.1
    if pooled is not None:
        z = float(stats.norm.ppf(0.5 + level / 2))
        grid = np.linspace(0, top, 50)
        ax.plot(pooled.estimate - z * grid, grid, color="grey", linestyle="--", linewidth=0.8)
        ax.plot(pooled.estimate + z * grid, grid, color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(pooled.estimate, color="#c0392b", linewidth=1)
    ax.scatter(y, se, color="#2b5d8a", zorder=3)
    ax.set_ylim(top, 0)
    ax.set_ylabel("Standard error")
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
