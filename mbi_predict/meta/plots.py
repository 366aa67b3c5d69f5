"""Forest and funnel plots (matplotlib; figures are returned, never shown).

Figures are built as `matplotlib.figure.Figure` objects, not through pyplot: they never enter pyplot's global figure
registry, so nothing is shown, nothing leaks between calls, no backend has to be forced on the caller, and saving
(`mbi_predict.figstyle.save_figure`) renders with Agg in the package's figure style.

Generic on purpose: the same forest plot shows per-trial treatment effects and per-trial model performance
(c-statistics, calibration slopes). Give either variances or CI bounds; the pooled result (a `PoolResult` or its
``to_dict()``/meta.json form), weights, a prediction interval and the null line are optional. `transform` maps the
analysis scale to the display scale (e.g. `np.exp` for log risk ratios); it is applied to every x value plotted.

``annotate=True`` draws it the way metafor's ``forest()`` prints it: a weight column and an "estimate [CI]" column
on the right, the heterogeneity statistics (tau², I², Q with its df and p) and the prediction interval in the
footer, and "favours ..." labels under the axis (``favours=(left, right)``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from mbi_predict import figstyle
from mbi_predict.errors import MBIError
from mbi_predict.numbers import number, p_text

# effects are "MBI minus control" on outcomes where lower is better (distress): negative favours the MBI
FAVOURS_LOWER = ("favours MBI", "favours control")


def _as_float(values: Any, name: str, k: int) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size != k:
        raise MBIError(f"{name} has {arr.size} values for {k} labels")
    return arr


def _get(pooled: Any, key: str, default: Any = math.nan) -> Any:
    """A field of a PoolResult or of its dict form (None -> default)."""
    value = pooled.get(key) if isinstance(pooled, dict) else getattr(pooled, key, default)
    return default if value is None else value


def heterogeneity_footer(pooled: Any, transform: Callable | None = None) -> str:
    """metafor's footer line: model, tau², I², Q (df, p) and the prediction interval, in words and numbers."""
    f = transform or (lambda x: x)
    method, k = _get(pooled, "method", "RE"), int(_get(pooled, "k", 0))
    model = "fixed-effect model" if method == "FE" else f"random-effects model ({method})"
    parts = [f"{model}, k = {k}"]
    if method != "FE":
        parts.append(f"τ² = {number(_get(pooled, 'tau2'))}")
    i2 = _get(pooled, "i2")
    if isinstance(i2, (int, float)) and math.isfinite(i2):
        parts.append(f"I² = {i2:.0f}%")
    q, df = _get(pooled, "q"), _get(pooled, "q_df", None)
    if isinstance(q, (int, float)) and math.isfinite(q):
        parts.append(f"Q = {number(q)} (df = {df}, {p_text(_get(pooled, 'q_pvalue'))})")
    text = "; ".join(parts)
    low, high = _get(pooled, "pi_low"), _get(pooled, "pi_high")
    if isinstance(low, (int, float)) and math.isfinite(low) and math.isfinite(high):
        level = round(100 * float(_get(pooled, "level", 0.95)))
        lo, hi = f(np.array([low, high]))
        text += f"\n{level}% prediction interval for a new trial: {number(lo)} to {number(hi)}"
    return text


def forest_plot(labels: Sequence[Any], yi: Any, vi: Any = None, pooled: Any = None, *,
                ci: tuple[Any, Any] | None = None, weights: Any = None, title: str = "", xlabel: str = "",
                null_value: float | None = 0.0, level: float = 0.95,
                transform: Callable[[np.ndarray], np.ndarray] | None = None, annotate: bool = False,
                favours: tuple[str, str] | None = None, estimate_label: str = "Estimate") -> Figure:
    """One row per trial (square sized by weight, CI whiskers), the pooled diamond and the prediction interval.

    Without ``annotate`` the weights are printed in the row labels; with it (metafor style) in their own column
    beside an "estimate [CI]" column, with the heterogeneity statistics in the footer."""
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
    pooled_weights = _get(pooled, "weights", None) if pooled is not None else None
    if weights is None and pooled_weights is not None and len(pooled_weights) == k:
        weights = pooled_weights
    w = _as_float(weights, "weights", k) if weights is not None else None
    f = transform or (lambda x: x)
    with figstyle.style():
        return _draw(labels, y, low, high, w, pooled, f, title=title, xlabel=xlabel, null_value=null_value,
                     annotate=annotate, favours=favours, estimate_label=estimate_label, level=level)


def _draw(labels, y, low, high, w, pooled, f, *, title, xlabel, null_value, annotate, favours, estimate_label,
          level) -> Figure:
    k = len(labels)
    rows = k + (3 if pooled is not None else 1)
    footer = heterogeneity_footer(pooled, f) if (annotate and pooled is not None) else ""
    height = 0.30 * rows + 1.4 + (0.35 if footer else 0) + (0.25 if favours else 0)
    fig = Figure(figsize=(9.0 if annotate else 8.0, height), layout="constrained" if annotate else None)
    if annotate:
        grid = fig.add_gridspec(1, 2, width_ratios=[3.0, 1.55], wspace=0.0)
        ax, side = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    else:
        ax, side = fig.add_subplot(1, 1, 1), None
    positions = np.arange(k)[::-1] + (2 if pooled is not None else 0)
    sizes = 18 + 150 * (w / np.nanmax(w)) if w is not None and np.nanmax(w) > 0 else np.full(k, 36.0)
    ax.hlines(positions, f(low), f(high), color=figstyle.PALETTE["interval"], linewidth=1)
    ax.scatter(f(y), positions, s=sizes, marker="s", color=figstyle.PALETTE["estimate"], zorder=3, linewidths=0)
    if annotate or w is None:
        texts = list(labels)
    else:
        texts = [f"{name}  ({wt:.1f}%)" for name, wt in zip(labels, w)]
    ticks = list(positions)
    if pooled is not None:
        centre = 0.5
        est, lo, hi = (_get(pooled, key) for key in ("estimate", "ci_low", "ci_high"))
        ax.fill(f(np.array([lo, est, hi, est])), np.array([centre, centre + 0.32, centre, centre - 0.32]),
                color=figstyle.PALETTE["pooled"], zorder=3)
        pi_low, pi_high = _get(pooled, "pi_low"), _get(pooled, "pi_high")
        if math.isfinite(pi_low) and math.isfinite(pi_high):
            pct = round(100 * float(_get(pooled, "level", level)))
            ax.hlines(centre - 0.5, *f(np.array([pi_low, pi_high])), color=figstyle.PALETTE["prediction"],
                      linewidth=2.2, label=f"{pct}% prediction interval (new trial)")
            ax.legend(loc="lower right", frameon=False, fontsize=7.5)
        ticks.append(centre)
        texts.append(f"Pooled ({_get(pooled, 'method', 'RE')}, k = {int(_get(pooled, 'k', k))})")
        ax.axvline(f(np.array([est]))[0], color=figstyle.PALETTE["pooled"], linestyle=":", linewidth=0.8)
    if null_value is not None:
        ax.axvline(f(np.array([null_value]))[0], color=figstyle.PALETTE["null"], linestyle="--", linewidth=0.8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(texts)
    top = max(positions) + 0.9
    ax.set_ylim(-0.9 if pooled is not None else -0.6, top)
    ax.set_xlabel(xlabel, labelpad=17 if favours else 4)
    if title:
        ax.set_title(title, loc="center")
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    ax.tick_params(axis="y", length=0)
    if favours and null_value is not None:
        _favours(ax, f(np.array([null_value]))[0], favours)
    if side is not None:
        _columns(side, positions, f(y), f(low), f(high), w, pooled, f, top, estimate_label, level)
    if footer:
        fig.supxlabel(footer, x=0.01, ha="left", fontsize=7.5, color="#333333", linespacing=1.5)
    if not annotate:
        fig.tight_layout()
    return fig


def _favours(ax, x0: float, favours: tuple[str, str]) -> None:
    """"← favours left | favours right →" under the axis, each on its side of the null line."""
    from matplotlib.transforms import blended_transform_factory

    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for text, align in ((f"← {favours[0]}  ", "right"), (f"  {favours[1]} →", "left")):
        ax.annotate(text, xy=(x0, 0), xycoords=trans, xytext=(0, -18), textcoords="offset points", ha=align,
                    va="top", fontsize=7.5, color="#333333", annotation_clip=False)


def _columns(side, positions, y, low, high, w, pooled, f, top, estimate_label, level) -> None:
    """The right-hand text columns: weight and estimate [CI], headed, aligned with the rows."""
    side.set_ylim(*((-0.9 if pooled is not None else -0.6), top))
    side.set_xlim(0, 1)
    side.axis("off")
    pct = round(100 * level)
    side.text(0.28, top - 0.2, "Weight", ha="right", va="bottom", fontweight="bold", fontsize=8)
    # a long metric name wraps (headers stack upwards) so it never runs into the Weight header on its left
    header = textwrap.fill(f"{estimate_label} [{pct}% CI]", width=22, break_long_words=False)
    side.text(0.98, top - 0.2, header, ha="right", va="bottom", fontweight="bold", fontsize=8)
    for i, position in enumerate(positions):
        if w is not None:
            side.text(0.28, position, f"{w[i]:.1f}%", ha="right", va="center", fontsize=8)
        side.text(0.98, position, _est_ci(y[i], low[i], high[i]), ha="right", va="center", fontsize=8,
                  family="DejaVu Sans Mono")
    if pooled is not None:
        est, lo, hi = f(np.array([_get(pooled, key) for key in ("estimate", "ci_low", "ci_high")]))
        side.text(0.28, 0.5, "100%" if w is not None else "", ha="right", va="center", fontsize=8)
        side.text(0.98, 0.5, _est_ci(est, lo, hi), ha="right", va="center", fontsize=8, fontweight="bold",
                  family="DejaVu Sans Mono")


def _est_ci(value: float, low: float, high: float) -> str:
    return f"{value:6.2f} [{low:6.2f}, {high:6.2f}]".replace("-", "−")


def funnel_plot(yi: Any, vi: Any, pooled: Any = None, *, title: str = "", xlabel: str = "",
                level: float = 0.95) -> Figure:
    """Effect against standard error (inverted axis) with the pseudo-confidence funnel around the pooled estimate.
    Each point is a trial (an aggregate), not a participant."""
    y = np.asarray(yi, dtype=float).ravel()
    se = np.sqrt(np.asarray(vi, dtype=float).ravel())
    if y.size == 0 or y.size != se.size:
        raise MBIError("funnel plot needs one variance per effect size and at least one trial")
    with figstyle.style():
        fig = Figure(figsize=(6, 4.6))
        ax = fig.add_subplot(1, 1, 1)
        top = float(se.max()) * 1.1
        if pooled is not None:
            z = float(stats.norm.ppf(0.5 + level / 2))
            grid = np.linspace(0, top, 50)
            centre = _get(pooled, "estimate")
            ax.plot(centre - z * grid, grid, color=figstyle.PALETTE["null"], linestyle="--", linewidth=0.8,
                    label=f"pseudo {round(100 * level)}% confidence region")
            ax.plot(centre + z * grid, grid, color=figstyle.PALETTE["null"], linestyle="--", linewidth=0.8)
            ax.axvline(centre, color=figstyle.PALETTE["pooled"], linewidth=1, label="pooled estimate")
            ax.legend(loc="lower left", fontsize=7.5)
        ax.scatter(y, se, color=figstyle.PALETTE["estimate"], zorder=3, s=22, label="trial")
        ax.set_ylim(top, 0)
        ax.set_ylabel("Standard error")
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title)
        fig.tight_layout()
    return fig


def meta_forest_from_dict(result: dict[str, Any], *, title: str | None = None) -> Figure | None:
    """The annotated forest plot of a meta-analysis result in its JSON form (`MetaReport.to_dict()`, meta.json);
    None when no trial has an estimate. Rendering only: every number is read from ``result``."""
    rows = [r for r in result.get("per_trial") or [] if r.get("estimate") is not None and r.get("se")]
    if not rows:
        return None
    binary = result.get("outcome_type") == "binary"
    pooled = result.get("pooled") or None
    transform = np.exp if binary else None
    xlabel = ("Risk ratio (MBI vs control)" if binary
              else f"{result.get('measure') or 'standardised mean difference'} (MBI minus control)")
    fig = forest_plot([r["trial_id"] for r in rows], [r["estimate"] for r in rows], [r["se"] ** 2 for r in rows],
                      pooled if pooled and pooled.get("estimate") is not None else None,
                      weights=[r.get("weight") for r in rows] if all(r.get("weight") is not None for r in rows)
                      else None,
                      title=title or f"{result.get('outcome')}: MBI vs {result.get('control')} control",
                      xlabel=xlabel, null_value=0.0, transform=transform, annotate=True, favours=FAVOURS_LOWER,
                      estimate_label="RR" if binary else "g")
    if binary:
        fig.axes[0].set_xscale("log")
    return fig


def write_meta_plots(report: Any, out_dir: str | Path, *, format: str | None = None,
                     dpi: int | None = None) -> list[Path]:
    """forest.<fmt> (annotated, metafor style) and funnel.<fmt> of a `MetaReport` (or its ``to_dict()``) in
    ``out_dir``, atomically, saved with ``figstyle.save_figure`` in ``format`` at ``dpi`` (default png at 150 dpi);
    nothing if there is no usable trial."""
    result = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    forest = meta_forest_from_dict(result)
    if forest is None:
        return []
    out = Path(out_dir)
    rows = [r for r in result["per_trial"] if r.get("estimate") is not None and r.get("se")]
    binary = result.get("outcome_type") == "binary"
    pooled = result.get("pooled") if (result.get("pooled") or {}).get("estimate") is not None else None
    funnel = funnel_plot([r["estimate"] for r in rows], [r["se"] ** 2 for r in rows], pooled,
                         title=f"{result.get('outcome')}: MBI vs {result.get('control')} control",
                         xlabel="log risk ratio" if binary else "Hedges' g")
    return [figstyle.save_figure(forest, out / "forest", format=format, dpi=dpi),
            figstyle.save_figure(funnel, out / "funnel", format=format, dpi=dpi)]
