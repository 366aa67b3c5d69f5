"""Figures the study report draws from the run's aggregates (summary.json, meta.json): rendering only.

* ``comparison_figure``: one pooled metric for every model, with its confidence interval (thick) and its
  prediction interval for a new trial (thin), best first: the cross-model comparison;
* ``gates_figure``: the held-out group effects by fifth of predicted benefit, with CIs and PIs;
* the annotated meta-analysis forest plot is `mbi_predict.meta.plots.meta_forest_from_dict`.

Every number drawn is read from the records; nothing is estimated here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mbi_predict import figstyle
from mbi_predict.numbers import label, number, sentence

#: perfect or no-information values drawn as a reference line
_REFERENCE = {"rate_autoc": 0.0, "benefit_calibration_slope": 1.0, "c_for_benefit": 0.5, "r2": 0.0,
              "calibration_slope": 1.0, "c_statistic": 0.5, "dr_loss_vs_constant": 0.0}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def comparison_rows(summary: dict[str, Any], metric: str, *, kind: str | None = None,
                    lower_is_better: bool = True) -> list[dict[str, Any]]:
    """[{model, estimate, ci_low, ci_high, pi_low, pi_high, k}] for every model with a pooled ``metric``, best
    first."""
    rows = []
    for name, entry in summary.get("models", {}).items():
        if kind is not None and entry.get("task", "prognostic") != kind:
            continue
        pooled = (entry.get("pooled") or {}).get(metric) or {}
        if _finite(pooled.get("estimate")):
            rows.append({"model": name, **{key: pooled.get(key) for key in
                                           ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "k")}})
    rows.sort(key=lambda row: row["estimate"] if lower_is_better else -row["estimate"])
    return rows


def comparison_figure(rows: list[dict[str, Any]], metric: str, *, title: str | None = None,
                      highlight: set[str] | None = None) -> Figure | None:
    """Pooled ``metric`` per model: point, 95% CI (thick), 95% PI for a new trial (thin); best model on top."""
    if not rows:
        return None
    highlight = highlight or set()
    with figstyle.style():
        fig = Figure(figsize=(6.8, 0.36 * len(rows) + 1.5))
        ax = fig.add_subplot()
        positions = np.arange(len(rows))[::-1]
        for y, row in zip(positions, rows):
            colour = figstyle.PALETTE["pooled"] if row["model"] in highlight else figstyle.PALETTE["estimate"]
            if _finite(row.get("pi_low")) and _finite(row.get("pi_high")):
                ax.hlines(y, row["pi_low"], row["pi_high"], color=colour, linewidth=1, alpha=0.6)
            if _finite(row.get("ci_low")) and _finite(row.get("ci_high")):
                ax.hlines(y, row["ci_low"], row["ci_high"], color=colour, linewidth=3.2)
            ax.plot([row["estimate"]], [y], "o", color="white", markeredgecolor=colour, markersize=6, zorder=3)
        if metric in _REFERENCE:
            ax.axvline(_REFERENCE[metric], color=figstyle.PALETTE["reference"], linestyle="--", linewidth=0.8)
        ax.set_yticks(positions, [row["model"] for row in rows])
        ax.tick_params(axis="y", length=0)
        ax.spines["left"].set_visible(False)
        ax.set_xlabel(f"pooled {label(metric)} over held-out trials")
        ax.plot([], [], color=figstyle.PALETTE["estimate"], linewidth=3.2, label="95% confidence interval")
        ax.plot([], [], color=figstyle.PALETTE["estimate"], linewidth=1, alpha=0.6,
                label="95% prediction interval (new trial)")
        if highlight:
            ax.plot([], [], "o", color="white", markeredgecolor=figstyle.PALETTE["pooled"],
                    label="reference comparator" if len(highlight) == 1 else "highlighted")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / max(1, len(rows)) - 0.12), ncol=3)
        ax.set_title(title or f"{sentence(label(metric))} of every model")
        fig.tight_layout()
    return fig


def gates_figure(gates: dict[str, Any], model: str) -> Figure | None:
    """Group effects by fifth of predicted benefit (1 = least), with CIs (thick) and PIs (thin)."""
    groups = [g for g in gates.get("groups") or [] if _finite(g.get("estimate"))]
    if not groups:
        return None
    with figstyle.style():
        fig = Figure(figsize=(5.6, 3.8))
        ax = fig.add_subplot()
        for g in groups:
            x = g["group"]
            if _finite(g.get("pi_low")) and _finite(g.get("pi_high")):
                ax.vlines(x, g["pi_low"], g["pi_high"], color=figstyle.PALETTE["estimate"], linewidth=1, alpha=0.5)
            if _finite(g.get("ci_low")) and _finite(g.get("ci_high")):
                ax.vlines(x, g["ci_low"], g["ci_high"], color=figstyle.PALETTE["estimate"], linewidth=3.2)
            ax.plot([x], [g["estimate"]], "o", color="white", markeredgecolor=figstyle.PALETTE["estimate"],
                    markersize=6, zorder=3)
        ax.axhline(0, color=figstyle.PALETTE["reference"], linestyle="--", linewidth=0.8)
        ax.set_xticks([g["group"] for g in groups],
                      [f"{g['group']}\n(k = {g.get('k')})" for g in groups])
        ax.set_xlabel("fifth of predicted benefit (1 = least, 5 = most)")
        ax.set_ylabel("observed benefit in held-out trials")
        ax.set_title(f"{model}: group effects (GATES)")
        ax.plot([], [], color=figstyle.PALETTE["estimate"], linewidth=3.2, label="95% CI")
        ax.plot([], [], color=figstyle.PALETTE["estimate"], linewidth=1, alpha=0.5, label="95% PI (new trial)")
        ax.legend(loc="best")
        fig.tight_layout()
    return fig


def describe_interval(row: dict[str, Any]) -> str:
    """"0.79 (95% CI 0.72 to 0.87; PI 0.55 to 1.03)" from a pooled record; "not estimated" without one."""
    if not _finite(row.get("estimate")):
        return "not estimated"
    text = number(row.get("estimate"))
    if _finite(row.get("ci_low")) and _finite(row.get("ci_high")):
        text += f" (95% CI {number(row['ci_low'])} to {number(row['ci_high'])}"
        if _finite(row.get("pi_low")) and _finite(row.get("pi_high")):
            text += f"; prediction interval {number(row['pi_low'])} to {number(row['pi_high'])}"
        text += ")"
    return text
