"""Figures for model cards and MLflow: beeswarm, importance with CIs and the null band, dependence, benefit profile.

All functions build a ``matplotlib.figure.Figure`` directly (no pyplot state, safe in parallel workers) in the
package style (`mbi_predict.figstyle`) and return it; the caller saves it with ``figstyle.save_figure`` in the run's
format and resolution (``explain.run.shap_plots``). Nothing here writes data.

Disclosure choices (the figures go to MLflow artifacts): by default no figure shows a participant.
* the beeswarm defaults to an aggregate "binned summary": per feature, participants are grouped into quantile bins
  of the covariate (one bin per level for categories), and each bin is drawn as its mean SHAP value with a bar of
  ± 1 SD, coloured from low (blue) to high (red) covariate values; bins with fewer than ``min_cell`` participants
  (default 10) are suppressed. ``participant_level=True`` draws the usual one-dot-per-participant beeswarm, for
  local use only (the runner sets it only when a user asks);
* dependence plots default to binned means of SHAP with 95% CIs per covariate bin (per arm when ``color_by`` is
  given), bins under ``min_cell`` suppressed; ``participant_level=True`` (or the older ``anonymise=False``) draws
  the per-participant scatter;
* the benefit profile shows only aggregates: binned means of predicted CATE with 95% CIs (bins with fewer than
  ``min_cell`` participants are suppressed) and a LOWESS curve — no participant-level points.
For shap's own plots on an explanation, see ``Explanation.to_shap`` (participant level: local use).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mbi_predict import figstyle
from mbi_predict.explain.explanation import check_features
from mbi_predict.numbers import number

MIN_CELL = 10


def _numeric(series: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numeric values for plotting; categories become codes (returned with their labels)."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float), None
    cat = pd.Categorical(series.astype("string"))
    codes = cat.codes.astype(float)
    codes[codes < 0] = np.nan
    return codes, [str(c) for c in cat.categories]


def _order(explanation, max_display: int) -> list[int]:
    importance = np.abs(explanation.values).mean(axis=0)
    return list(np.argsort(-importance, kind="stable")[:max_display])


def _swarm_offsets(values: np.ndarray, width: float = 0.4, n_bins: int = 60) -> np.ndarray:
    """Vertical offsets that spread dots with similar SHAP values (a simple beeswarm)."""
    if values.size == 0 or np.ptp(values) == 0:
        return np.zeros_like(values)
    bins = np.floor((values - values.min()) / np.ptp(values) * (n_bins - 1)).astype(int)
    offsets = np.zeros_like(values, dtype=float)
    counts = np.bincount(bins, minlength=n_bins)
    scale = width / max(1, counts.max())
    seen = np.zeros(n_bins, dtype=int)
    for i in np.argsort(values, kind="stable"):
        k = seen[bins[i]]
        offsets[i] = ((k + 1) // 2) * (1 if k % 2 else -1) * scale
        seen[bins[i]] += 1
    return offsets


def beeswarm(explanation, *, max_display: int = 10, title: str | None = None, participant_level: bool = False,
             min_cell: int = MIN_CELL, n_bins: int = 5) -> Figure:
    """SHAP summary, one row per feature (most important on top). Default: the aggregate binned summary (module
    docstring: per covariate bin, mean SHAP ± 1 SD, bins under ``min_cell`` suppressed); ``participant_level=True``:
    dots = explained participants, colour = the covariate's within-sample percentile (blue low, red high)."""
    if not participant_level:
        return _binned_summary(explanation, max_display=max_display, title=title, min_cell=min_cell, n_bins=n_bins)
    with figstyle.style():
        order = _order(explanation, max_display)
        fig = Figure(figsize=(7, 0.45 * len(order) + 1.5))
        ax = fig.add_subplot()
        scatter = None
        for position, j in enumerate(reversed(order)):
            shap_j = explanation.values[:, j]
            raw, _ = _numeric(explanation.data.iloc[:, j])
            colour = pd.Series(raw).rank(pct=True).to_numpy()
            y = position + _swarm_offsets(shap_j)
            scatter = ax.scatter(shap_j, y, c=colour, cmap=figstyle.DIVERGING, vmin=0, vmax=1, s=8, alpha=0.8,
                                 linewidths=0)
        ax.set_yticks(range(len(order)), [explanation.feature_names[j] for j in reversed(order)])
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_xlabel(f"SHAP value ({explanation.output})")
        if scatter is not None:
            bar = fig.colorbar(scatter, ax=ax, ticks=[0, 1])
            bar.ax.set_yticklabels(["low", "high"])
            bar.set_label("covariate value (percentile)")
        ax.set_title(title or f"SHAP summary ({explanation.n_rows} participants, {explanation.kind})")
        fig.tight_layout()
    return fig


def _bin_labels(x: np.ndarray, n_bins: int) -> tuple[np.ndarray, int]:
    """(bin of each row, -1 where x is missing; number of bins): quantile bins, one per level when few levels."""
    labels = np.full(len(x), -1)
    ok = np.isfinite(x)
    if not ok.any():
        return labels, 0
    distinct = np.unique(x[ok])
    if distinct.size <= n_bins:
        labels[ok] = np.searchsorted(distinct, x[ok])
        return labels, int(distinct.size)
    edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, n_bins + 1)))
    labels[ok] = np.clip(np.searchsorted(edges, x[ok], side="right") - 1, 0, len(edges) - 2)
    return labels, len(edges) - 1


def _binned_summary(explanation, *, max_display: int, title: str | None, min_cell: int, n_bins: int) -> Figure:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if min_cell < 1:
        raise ValueError(f"min_cell must be at least 1, got {min_cell}")
    order = _order(explanation, max_display)
    with figstyle.style():
        fig = Figure(figsize=(7, 0.55 * len(order) + 1.6))
        ax = fig.add_subplot()
        cmap, suppressed = colormaps[figstyle.DIVERGING], 0
        for position, j in enumerate(reversed(order)):
            raw, _ = _numeric(explanation.data.iloc[:, j])
            labels, k = _bin_labels(raw, n_bins)
            shap_j = explanation.values[:, j]
            for b in range(k):
                values = shap_j[labels == b]
                if values.size < min_cell:
                    suppressed += 1
                    continue
                offset = (b - (k - 1) / 2) * (0.7 / max(k, 1))
                sd = values.std(ddof=1) if values.size > 1 else 0.0
                ax.errorbar([values.mean()], [position + offset], xerr=[[sd], [sd]], fmt="o", ms=4, capsize=0,
                            lw=2, color=cmap(b / max(k - 1, 1)))
        ax.set_yticks(range(len(order)), [explanation.feature_names[j] for j in reversed(order)])
        ax.set_ylim(-0.6, len(order) - 0.4)
        ax.axvline(0, color="0.5", lw=0.8)

        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("covariate bin (quantile)")
        note = f", {suppressed} smaller bin(s) suppressed" if suppressed else ""
        ax.set_xlabel(f"SHAP value ({explanation.output}): bin mean ± 1 SD\n"
                      f"(bins of >= {min_cell} participants{note})")
        ax.set_title(title or f"SHAP by covariate bin ({explanation.n_rows} participants, {explanation.kind})")
        fig.tight_layout()
    return fig


def importance_bars(stability_df: pd.DataFrame, null_ref=None, *, top: int = 10, title: str | None = None) -> Figure:
    """Pooled mean |SHAP| with its CI per feature, coloured by whether it beats the permutation null; the null's
    importance (mean to 95th percentile) is drawn as a hatched band behind each bar. Every colour is in the
    legend."""
    from matplotlib.patches import Patch

    frame = stability_df.head(top).iloc[::-1]
    with figstyle.style():
        fig = Figure(figsize=(7, 0.42 * len(frame) + 1.7))
        ax = fig.add_subplot()
        y = np.arange(len(frame))
        est = frame["importance"].to_numpy(dtype=float)
        low = np.nan_to_num(est - frame["ci_low"].to_numpy(dtype=float), nan=0.0)
        high = np.nan_to_num(frame["ci_high"].to_numpy(dtype=float) - est, nan=0.0)
        tested = null_ref is not None and getattr(null_ref, "test_status", "tested") == "tested"
        beats = [null_ref.beats_null.get(f) is True if null_ref is not None else None for f in frame["feature"]]
        colours = {True: figstyle.PALETTE["estimate"], False: figstyle.PALETTE["muted"],
                   None: figstyle.PALETTE["secondary"]}
        ax.barh(y, est, height=0.6, color=[colours[b if tested or b is None else None] for b in beats],
                zorder=2)
        ax.errorbar(est, y, xerr=[low, high], fmt="none", ecolor="black", elinewidth=1, capsize=2.5, zorder=3)
        handles = []
        if null_ref is None:
            handles.append(Patch(color=colours[None], label="pooled importance (95% CI); no permutation null"))
        elif tested:
            handles += [Patch(color=colours[True], label="beats the permutation null (family-wise)"),
                        Patch(color=colours[False], label="does not beat the null")]
        else:
            handles.append(Patch(color=colours[None], label="not tested (too few null draws)"))
        if null_ref is not None:
            null = null_ref.null
            for yi, feature in zip(y, frame["feature"]):
                if feature in null.columns:
                    ax.fill_betweenx([yi - 0.38, yi + 0.38], float(null[feature].mean()),
                                     float(null[feature].quantile(0.95)), facecolor="none",
                                     edgecolor=figstyle.PALETTE["highlight"], hatch="////", lw=0.8, zorder=4)
            handles.append(Patch(facecolor="none", edgecolor=figstyle.PALETTE["highlight"], hatch="////",
                                 label=f"null importance, mean to 95th percentile (B = {null_ref.B})"))
        ax.set_yticks(y, list(frame["feature"]))
        ax.set_xlabel("mean |SHAP| across held-out trials (95% CI)")
        ax.set_xlim(left=0)
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14 - 0.6 / max(len(frame), 1)),
                  ncol=1, fontsize=7.5)
        ax.set_title(title or "Importance across held-out trials")
        fig.tight_layout()
    return fig


def _binned(x: np.ndarray, y: np.ndarray, n_bins: int, min_cell: int):
    """(bin centre, mean, 95% CI half-width, n) over quantile bins of x, bins below min_cell dropped."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return np.empty((0, 4))
    distinct = np.unique(x)
    if distinct.size <= n_bins:  # few levels (categorical or binary): one bin per level
        labels, centres = np.searchsorted(distinct, x), distinct
    else:
        edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
        labels = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        centres = np.array([x[labels == k].mean() if np.any(labels == k) else np.nan for k in range(len(edges) - 1)])
    rows = []
    for k, centre in enumerate(centres):
        values = y[labels == k]
        if values.size >= min_cell:
            half = 1.96 * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else np.nan
            rows.append((centre, values.mean(), half, values.size))
    return np.array(rows, dtype=float).reshape(-1, 4)


def _axis_labels(ax, labels: list[str] | None) -> None:
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")


def dependence(explanation, features=None, *, top: int = 3, color_by=None, color_label: str = "arm",
               anonymise: bool = True, min_cell: int = MIN_CELL, n_bins: int = 10,
               participant_level: bool | None = None) -> Figure:
    """SHAP value against covariate value for ``features`` (default: the ``top`` most important).

    ``color_by``: a value per explained row (e.g. arm, aligned with ``explanation.row_index``) — prognostic models are
    usually shown coloured by arm. Default: binned means with 95% CIs, bins under ``min_cell`` suppressed;
    ``participant_level=True`` (or ``anonymise=False``, the older name) draws the per-participant scatter.
    """
    if participant_level is not None:
        anonymise = not participant_level
    if features is None:
        features = [explanation.feature_names[j] for j in _order(explanation, top)]
    features = [features] if isinstance(features, str) else list(features)
    check_features(features, explanation.feature_names)
    groups = None if color_by is None else np.asarray(color_by)
    if groups is not None and len(groups) != explanation.n_rows:
        raise ValueError(f"color_by has {len(groups)} values for {explanation.n_rows} explained rows")
    with figstyle.style():
        fig = Figure(figsize=(4.2 * len(features), 3.8))
        axes = fig.subplots(1, len(features), squeeze=False)[0]
        levels = [None] if groups is None else sorted(pd.unique(groups), key=str)
        colours = figstyle.CYCLE
        for ax, feature in zip(axes, features):
            j = explanation.feature_names.index(feature)
            x, labels = _numeric(explanation.data[feature])
            y = explanation.values[:, j]
            distinct = np.unique(x[np.isfinite(x)])
            discrete = labels is not None or distinct.size <= 2
            for i, (level, colour) in enumerate(zip(levels, colours)):
                rows = np.ones(len(y), bool) if level is None else groups == level
                name = None if level is None else f"{color_label} {level}"
                if anonymise:
                    b = _binned(x[rows], y[rows], n_bins, min_cell)
                    shift = (i - (len(levels) - 1) / 2) * 0.12 if discrete else 0.0
                    ax.errorbar(b[:, 0] + shift, b[:, 1], yerr=b[:, 2], marker="o", ms=4, color=colour, capsize=2,
                                ls="none" if discrete else "-", label=name)
                else:
                    ax.scatter(x[rows], y[rows], s=6, alpha=0.5, color=colour, label=name)
            if labels is None and discrete:  # a binary covariate: two categories, not a continuous axis
                labels = [number(v) for v in distinct]
                ax.set_xticks(list(distinct), labels)
                ax.set_xlim(distinct.min() - 0.5, distinct.max() + 0.5)
            else:
                _axis_labels(ax, labels)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_xlabel(feature + (" (category)" if discrete else ""))
            ax.set_ylabel(f"SHAP ({explanation.output})")
            if groups is not None:
                ax.legend(fontsize=7)
        fig.suptitle("SHAP by covariate value: bin means with 95% CIs" if anonymise else "SHAP by covariate value",
                     x=0.01, ha="left", fontsize=10, fontweight="bold")
        fig.tight_layout()
    return fig


def benefit_profile(cate, X_frame: pd.DataFrame, features, *, n_bins: int = 10, min_cell: int = 10,
                    smooth_frac: float = 0.5, outcome_label: str = "predicted CATE") -> Figure:
    """Predicted CATE against each covariate: binned means with 95% CIs (bins under ``min_cell`` suppressed) and a
    LOWESS curve for continuous covariates. Aggregates only (see the module docstring)."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    cate = np.asarray(cate, dtype=float).reshape(-1)
    if len(cate) != len(X_frame):
        raise ValueError(f"cate has {len(cate)} values for {len(X_frame)} rows")
    features = [features] if isinstance(features, str) else list(features)
    check_features(features, [str(c) for c in X_frame.columns])
    with figstyle.style():
        fig = Figure(figsize=(4.2 * len(features), 3.6))
        axes = fig.subplots(1, len(features), squeeze=False)[0]
        for ax, feature in zip(axes, features):
            x, labels = _numeric(X_frame[feature])
            b = _binned(x, cate, n_bins, min_cell)
            ax.errorbar(b[:, 0], b[:, 1], yerr=b[:, 2], marker="o", ms=4, color=figstyle.PALETTE["estimate"],
                        capsize=2, ls="none", label="binned mean (95% CI)")
            ok = np.isfinite(x) & np.isfinite(cate)
            if labels is None and np.unique(x[ok]).size > n_bins and ok.sum() >= 3 * min_cell:
                grid = np.quantile(x[ok], np.linspace(0.02, 0.98, 50))
                curve = lowess(cate[ok], x[ok], frac=smooth_frac, xvals=grid)
                ax.plot(grid, curve, color=figstyle.PALETTE["pooled"], lw=1.5, label="LOWESS")
            _axis_labels(ax, labels)
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set_xlabel(feature.replace("_", " "))
            ax.set_ylabel(outcome_label)
            ax.set_title(f"by {feature.replace('_', ' ')}", fontsize=9)
        handles, names = axes[0].get_legend_handles_labels()
        fig.suptitle(f"Predicted effect by covariate ({outcome_label})", fontsize=10)
        fig.legend(handles, names, loc="lower center", ncol=max(1, len(names)), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
