"""The harmonisation report: what went into the IPD table, trial by trial, for the people who must sign it off.

Per trial: N by arm and control type, instruments and time points used, covariate coverage, missingness by arm and
the distribution of baseline scores, as a Markdown page and a self-contained HTML page (plots embedded as PNG data
URIs, so the file can be mailed or archived alone). Aggregates only: no participant-level row, id or point ever
reaches the report (box plots are drawn without outlier points for that reason), and no distribution (mean, SD,
quartiles, box and whiskers) of fewer than `min_cell_size` participants (default `MIN_CELL_SIZE`, set by the spec's
`min_cell_size`): in a trial of 4 the quartiles and whiskers are nearly the people themselves, so such a cell says
"suppressed" instead. Every name that comes from a spec or a file (trial ids, consortium name) is escaped in both
pages, so a trial called `<script>` is text, not markup.
"""

from __future__ import annotations

import base64
import html
import io as _io
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict import io
from mbi_predict.data.describe import describe_ipd
from mbi_predict.data.schema import CONSTRUCTS

REPORT_STEM = "harmonisation_report"
MIN_CELL_SIZE = 10
_COVARIATES = ("age", "gender", "education")


def min_cell_size(metadata: dict[str, Any]) -> int:
    return int(metadata.get("min_cell_size") or MIN_CELL_SIZE)


def report_tables(ipd: pd.DataFrame, metadata: dict[str, Any], missingness: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables (all aggregates), keyed by section title."""
    described = describe_ipd(ipd)
    arms = described[["trial_id", "n", "n_mbi", "n_passive", "n_active", "control_types"]]
    instruments = _instrument_table(metadata)
    coverage = _coverage_table(ipd)
    missing = _missingness_summary(missingness)
    baseline = _baseline_table(ipd, min_cell_size(metadata))
    return {"Participants by arm": arms, "Instruments and time points": instruments,
            "Covariate coverage (% non-missing)": coverage, "Missingness of outcomes (% missing, MBI / control)": missing,
            "Baseline scores (standardised)": baseline}


def _instrument_table(metadata: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for trial_id, trial in metadata.get("trials", {}).items():
        for construct, info in trial.get("constructs", {}).items():
            points = info.get("timepoints", {})
            rows.append({
                "trial_id": trial_id, "construct": construct,
                "instruments": ", ".join(sorted({p["instrument"] for p in points.values()})),
                "time points": ", ".join(
                    "baseline" if p["window"] is None else f"{p['window']} ({p['weeks']:g} wk)"
                    for p in points.values()),
                "level": ", ".join(sorted({p["level"] for p in points.values()})),
            })
        for column, count in trial.get("out_of_range_set_missing", {}).items():
            rows.append({"trial_id": trial_id, "construct": "(out of range set missing)", "instruments": column,
                         "time points": str(count), "level": ""})
    return pd.DataFrame(rows, columns=["trial_id", "construct", "instruments", "time points", "level"])


def _coverage_table(ipd: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in _COVARIATES if c in ipd.columns] + [f"baseline_{c}" for c in CONSTRUCTS
                                                               if f"baseline_{c}" in ipd.columns]
    coverage = ipd[columns].notna().groupby(ipd["trial_id"].astype(str)).mean().mul(100).round(1)
    return coverage.reset_index()


def _missingness_summary(missingness: pd.DataFrame) -> pd.DataFrame:
    outcomes = missingness[~missingness["variable"].str.startswith(("baseline_", "deteriorated_"))
                           & ~missingness["variable"].isin(_COVARIATES)]
    if outcomes.empty:
        return pd.DataFrame(columns=["trial_id"])
    cell = (outcomes["share_missing_mbi"].mul(100).round(0).map("{:.0f}".format) + " / "
            + outcomes["share_missing_control"].mul(100).round(0).map("{:.0f}".format))
    table = outcomes.assign(cell=cell).pivot(index="trial_id", columns="variable", values="cell")
    return table[[v for v in dict.fromkeys(outcomes["variable"])]].reset_index()


def _baseline_table(ipd: pd.DataFrame, min_cell: int = MIN_CELL_SIZE) -> pd.DataFrame:
    rows = []
    for column in [f"baseline_{c}" for c in CONSTRUCTS if f"baseline_{c}" in ipd.columns]:
        for trial_id, values in ipd.groupby(ipd["trial_id"].astype(str))[column]:
            values = values.dropna()
            if len(values) == 0:
                continue
            if len(values) < min_cell:
                rows.append({"variable": column, "trial_id": trial_id, "n": int(len(values)),
                             "mean": f"suppressed (n < {min_cell})"})
                continue
            quartiles = values.quantile([0.25, 0.5, 0.75])
            rows.append({"variable": column, "trial_id": trial_id, "n": int(len(values)),
                         "mean": round(float(values.mean()), 2), "sd": round(float(values.std(ddof=1)), 2),
                         "q1": round(float(quartiles[0.25]), 2), "median": round(float(quartiles[0.5]), 2),
                         "q3": round(float(quartiles[0.75]), 2)})
    return pd.DataFrame(rows, columns=["variable", "trial_id", "n", "mean", "sd", "q1", "median", "q3"])


def _baseline_figures(ipd: pd.DataFrame, min_cell: int = MIN_CELL_SIZE) -> list[tuple[str, bytes]]:
    """One PNG per measured baseline construct: box plots by trial, whiskers only (no individual points); trials
    with fewer than `min_cell` scores are left out of the plot (the table says they are suppressed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for column in [f"baseline_{c}" for c in CONSTRUCTS if f"baseline_{c}" in ipd.columns]:
        groups = [(t, v.dropna().to_numpy()) for t, v in ipd.groupby(ipd["trial_id"].astype(str))[column]]
        groups = [(t, v) for t, v in groups if len(v) >= min_cell]
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(groups) + 1.5), 3.2))
        ax.boxplot([v for _, v in groups], showfliers=False)
        ax.set_xticks(range(1, len(groups) + 1), [t for t, _ in groups], rotation=45)
        ax.set_ylabel(f"{column} (SD units)")
        ax.set_title(f"Distribution of {column} by trial")
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        figures.append((column, buffer.getvalue()))
    return figures


def render_markdown(tables: dict[str, pd.DataFrame], metadata: dict[str, Any]) -> str:
    lines = [f"# Harmonisation report: {_cell(metadata.get('consortium', 'consortium'))}", "",
             f"- participants: {metadata.get('n_participants')}, trials: {metadata.get('n_trials')}",
             f"- standardisation: {metadata.get('standardisation')} ({metadata.get('standardisation_rule', '')})",
             f"- out-of-range policy: {metadata.get('out_of_range_policy')}; prorating when at least "
             f"{metadata.get('prorate_min_share')} of items are present",
             f"- windows: {metadata.get('window_rule', {}).get('rule', '')} "
             f"(post_max_weeks={metadata.get('window_rule', {}).get('post_max_weeks')}, "
             f"fu1_6_max_weeks={metadata.get('window_rule', {}).get('fu1_6_max_weeks')})",
             "- every randomised participant is kept (intention to treat); missing values stay missing",
             f"- distributions of fewer than {min_cell_size(metadata)} participants are suppressed", ""]
    for title, table in tables.items():
        lines += [f"## {_cell(title)}", "", _markdown_table(table), ""]
    return "\n".join(lines)


def _markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "_none_"
    header = "| " + " | ".join(_cell(c) for c in table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _cell(value: Any) -> str:
    """Table cell text for Markdown: HTML-escaped (Markdown renders raw HTML), pipes and line breaks neutralised."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = html.escape(" ".join(str(value).split()), quote=True)
    return text.replace("|", "&#124;").replace("`", "&#96;").replace("[", "&#91;").replace("]", "&#93;")


def render_html(tables: dict[str, pd.DataFrame], metadata: dict[str, Any],
                figures: list[tuple[str, bytes]]) -> str:
    title = html.escape(f"Harmonisation report: {metadata.get('consortium', 'consortium')}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}</style></head><body>",
             f"<h1>{title}</h1><p>{html.escape(str(metadata.get('n_participants')))} participants in "
             f"{html.escape(str(metadata.get('n_trials')))} trials; standardisation "
             f"<b>{html.escape(str(metadata.get('standardisation')))}</b>: "
             f"{html.escape(str(metadata.get('standardisation_rule', '')))}.</p>"]
    for heading, table in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(table.to_html(index=False, na_rep="", border=0, escape=True) if not table.empty else "<p>none</p>")
    if figures:
        parts.append("<h2>Baseline distributions</h2>")
    for column, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(column)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(column)} by trial (box: quartiles; whiskers: 1.5 IQR)"
                     "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_paths(out_dir: str | Path) -> list[Path]:
    """The report's two pages in `out_dir`: Markdown, HTML."""
    return [Path(out_dir) / f"{REPORT_STEM}.md", Path(out_dir) / f"{REPORT_STEM}.html"]


def render_report(ipd: pd.DataFrame, metadata: dict[str, Any], missingness: pd.DataFrame) -> dict[str, str]:
    """The two pages as text, keyed by file name."""
    tables = report_tables(ipd, metadata, missingness)
    markdown, page = report_paths(".")
    return {markdown.name: render_markdown(tables, metadata),
            page.name: render_html(tables, metadata, _baseline_figures(ipd, min_cell_size(metadata)))}


def write_report(ipd: pd.DataFrame, metadata: dict[str, Any], missingness: pd.DataFrame,
                 out_dir: str | Path) -> list[Path]:
    """Write `harmonisation_report.md` and `harmonisation_report.html` into `out_dir` (atomically)."""
    pages = render_report(ipd, metadata, missingness)
    return [io.write_text_atomic(path, pages[path.name]) for path in report_paths(out_dir)]
