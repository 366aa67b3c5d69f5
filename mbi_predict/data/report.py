"""The harmonisation report: what went into the IPD table, trial by trial, for the people who must sign it off.

Per trial: N by arm and control type, instruments and time points used, covariate coverage with the constructs a
trial measured in few or none of its participants flagged, missingness by arm and the distribution of baseline
scores on each instrument's own raw scale (before standardisation: within-trial standardised scores are mean 0 and
SD 1 by construction and say nothing), as a Markdown page and a self-contained HTML page (plots embedded as
PNG data URIs, so the file can be mailed or archived alone; wide tables scroll sideways instead of running off).
Aggregates only: no participant-level row, id or point ever reaches the report (box plots are drawn without
outlier points for that reason; the tables give no minimum or maximum), and no distribution (mean, SD,
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
#: a trial's coverage of a covariate or baseline construct below this share is flagged (0% = not measured)
LOW_COVERAGE = 0.5


def min_cell_size(metadata: dict[str, Any]) -> int:
    return int(metadata.get("min_cell_size") or MIN_CELL_SIZE)


def report_tables(ipd: pd.DataFrame, metadata: dict[str, Any], missingness: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The report's tables (all aggregates), keyed by section title."""
    described = describe_ipd(ipd)
    arms = described[["trial_id", "n", "n_mbi", "n_passive", "n_active", "control_types"]]
    instruments = _instrument_table(metadata)
    min_cell = min_cell_size(metadata)
    coverage = _coverage_table(ipd)
    flags = coverage_flags(coverage)
    # the flags name every low-coverage construct; the percentages of a trial of fewer than min_cell participants
    # are not shown (in a trial of 4, 75% says which 3 people answered)
    small = set(ipd["trial_id"].astype(str).value_counts().loc[lambda n: n < min_cell].index)
    coverage.loc[coverage["trial_id"].isin(small), coverage.columns != "trial_id"] = float("nan")
    flags.loc[flags["trial_id"].isin(small), "coverage %"] = float("nan")
    missing = _missingness_summary(missingness, min_cell)
    baseline = _baseline_table(ipd, min_cell_size(metadata), metadata)
    raw = any(f"baseline_{c}_raw" in ipd.columns for c in CONSTRUCTS)
    return {"Participants by arm": arms, "Instruments and time points": instruments,
            "Covariate coverage (% non-missing)": coverage,
            f"Coverage flags (variables measured in under {LOW_COVERAGE:.0%} of a trial)": flags,
            "Missingness of outcomes (% missing, MBI / control)": missing,
            ("Baseline scores (raw scale of each instrument, before standardisation)" if raw
             else "Baseline scores (standardised)"): baseline}


def coverage_flags(coverage: pd.DataFrame, threshold: float = LOW_COVERAGE) -> pd.DataFrame:
    """One row per (trial, variable) whose coverage is below ``threshold``: "not measured" at 0%, else "low"."""
    rows = []
    for record in coverage.to_dict(orient="records"):
        trial = record.pop("trial_id")
        for variable, percent in record.items():
            if pd.notna(percent) and percent < 100 * threshold:
                rows.append({"trial_id": trial, "variable": variable, "coverage %": percent,
                             "flag": "not measured" if percent == 0 else "low coverage"})
    return pd.DataFrame(rows, columns=["trial_id", "variable", "coverage %", "flag"])


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


def _missingness_summary(missingness: pd.DataFrame, min_cell: int = MIN_CELL_SIZE) -> pd.DataFrame:
    outcomes = missingness[~missingness["variable"].str.startswith(("baseline_", "deteriorated_"))
                           & ~missingness["variable"].isin(_COVARIATES)]
    if outcomes.empty:
        return pd.DataFrame(columns=["trial_id"])
    cell = (outcomes["share_missing_mbi"].mul(100).round(0).map("{:.0f}".format) + " / "
            + outcomes["share_missing_control"].mul(100).round(0).map("{:.0f}".format))
    # an arm of fewer than min_cell participants: its share would describe a handful of people
    if {"n_mbi", "n_control"} <= set(outcomes.columns):
        small = (outcomes["n_mbi"] < min_cell) | (outcomes["n_control"] < min_cell)
        cell = cell.where(~small, f"suppressed (n < {min_cell})")
    table = outcomes.assign(cell=cell).pivot(index="trial_id", columns="variable", values="cell")
    return table[[v for v in dict.fromkeys(outcomes["variable"])]].reset_index()


def _instrument(metadata: dict[str, Any], trial_id: str, construct: str) -> str:
    points = (((metadata.get("trials") or {}).get(trial_id) or {}).get("constructs") or {}).get(construct) or {}
    baseline = (points.get("timepoints") or {}).get("baseline") or {}
    return str(baseline.get("instrument") or "")


def _baseline_table(ipd: pd.DataFrame, min_cell: int = MIN_CELL_SIZE,
                    metadata: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per construct and trial: n, mean, SD and quartiles of the baseline score, on the instrument's raw scale
    (``baseline_<construct>_raw``) when the table keeps it, else standardised. No minimum or maximum (an extreme
    is one person's value); cells under ``min_cell`` participants are suppressed."""
    rows = []
    for construct in CONSTRUCTS:
        column = f"baseline_{construct}"
        if column not in ipd.columns:
            continue
        source = f"{column}_raw" if f"{column}_raw" in ipd.columns else column
        for trial_id, values in ipd.groupby(ipd["trial_id"].astype(str))[source]:
            values = pd.to_numeric(values, errors="coerce").dropna()
            if len(values) == 0:
                continue
            head = {"variable": column, "trial_id": trial_id,
                    "instrument": _instrument(metadata or {}, trial_id, construct) or "–", "n": int(len(values))}
            if len(values) < min_cell:
                rows.append({**head, "mean": f"suppressed (n < {min_cell})"})
                continue
            quartiles = values.quantile([0.25, 0.5, 0.75])
            rows.append({**head, "mean": round(float(values.mean()), 2), "sd": round(float(values.std(ddof=1)), 2),
                         "q1": round(float(quartiles[0.25]), 2), "median": round(float(quartiles[0.5]), 2),
                         "q3": round(float(quartiles[0.75]), 2)})
    return pd.DataFrame(rows, columns=["variable", "trial_id", "instrument", "n", "mean", "sd", "q1", "median", "q3"])


def _baseline_figures(ipd: pd.DataFrame, min_cell: int = MIN_CELL_SIZE,
                      metadata: dict[str, Any] | None = None) -> list[tuple[str, bytes]]:
    """One PNG per measured baseline construct: box plots by trial on the raw scale, one panel per instrument
    (scales differ between instruments), whiskers at the 5th and 95th percentiles (no individual points); trials
    with fewer than `min_cell` scores are left out of the plot (the table says they are suppressed)."""
    import matplotlib
    from matplotlib.figure import Figure

    from mbi_predict.figstyle import DEFAULT_DPI

    dpi = DEFAULT_DPI  # embedded in the report's HTML as PNG: the package's default resolution
    figures = []
    for construct in CONSTRUCTS:
        column = f"baseline_{construct}"
        if column not in ipd.columns:
            continue
        raw = f"{column}_raw" in ipd.columns
        source = f"{column}_raw" if raw else column
        panels: dict[str, list[tuple[str, Any]]] = {}
        for trial_id, values in ipd.groupby(ipd["trial_id"].astype(str))[source]:
            values = pd.to_numeric(values, errors="coerce").dropna().to_numpy()
            if len(values) >= min_cell:
                key = _instrument(metadata or {}, trial_id, construct) if raw else "standardised"
                panels.setdefault(key or "instrument not recorded", []).append((trial_id, values))
        if not panels:
            continue
        with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False}):
            widths = [max(1.6, 0.5 * len(groups) + 0.9) for groups in panels.values()]
            fig = Figure(figsize=(min(sum(widths) + 0.6, 11.0), 3.3), layout="constrained")
            axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
            for ax, (instrument, groups) in zip(axes, panels.items()):
                ax.boxplot([v for _, v in groups], showfliers=False, widths=0.6, whis=(5, 95),
                           medianprops={"color": "#D55E00"})
                ax.set_xticks(range(1, len(groups) + 1), [t for t, _ in groups], rotation=45)
                ax.set_title(instrument, fontsize=9, fontweight="normal", loc="center")
            axes[0].set_ylabel("raw total score" if raw else f"{column} (SD units)")
            fig.suptitle(f"Baseline {construct} by trial" + (" (each instrument on its own scale)" if raw else ""),
                         x=0.01, ha="left", fontsize=10, fontweight="bold")
            buffer = _io.BytesIO()
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight",
                        metadata={"Software": None})
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
        lines += [f"## {_cell(title)}", "", _markdown_table(for_reading(table)), ""]
    return "\n".join(lines)


#: column headers in words (the tables keep the data model's names; a reader gets these)
_HEADERS = {"trial_id": "trial", "n": "N", "n_mbi": "N MBI", "n_passive": "N passive control",
            "n_active": "N active control", "control_types": "control types", "coverage %": "coverage (%)"}


def for_reading(table: pd.DataFrame) -> pd.DataFrame:
    """A report table as a reader sees it: headers in words (no snake_case, no pivot's axis name), whole-number
    floats without a trailing ``.0``. The data (`report_tables`) are unchanged."""
    out = table.copy()
    out.columns = [_HEADERS.get(str(c), str(c).replace("_", " ")) for c in out.columns]
    out.columns.name = None
    for column in out.columns:
        values = out[column]
        if pd.api.types.is_float_dtype(values):
            finite = values.dropna()
            if len(finite) and (finite == finite.round()).all():
                out[column] = values.map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    return out


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
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "line-height:1.45}.table-wrap{overflow-x:auto;margin:.4em 0 1.2em}table{border-collapse:collapse;"
             "font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}"
             "img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}"
             "@media print{figure,table{break-inside:avoid}.table-wrap{overflow:visible}}</style></head><body>",
             f"<h1>{title}</h1><p>{html.escape(str(metadata.get('n_participants')))} participants in "
             f"{html.escape(str(metadata.get('n_trials')))} trials; standardisation "
             f"<b>{html.escape(str(metadata.get('standardisation')))}</b>: "
             f"{html.escape(str(metadata.get('standardisation_rule', '')))}.</p>"]
    for heading, table in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append("<div class='table-wrap'>" + for_reading(table).to_html(index=False, na_rep="", border=0,
                                                                              escape=True)
                     + "</div>" if not table.empty else "<p>none</p>")
    if figures:
        parts.append("<h2>Baseline distributions</h2>")
    for column, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(column)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>Baseline {html.escape(column.removeprefix('baseline_'))} by trial before "
                     "standardisation (box: quartiles; whiskers: 5th to 95th percentile, so never a participant's "
                     "extreme value; no individual points).</figcaption>"
                     "</figure>")
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
            page.name: render_html(tables, metadata, _baseline_figures(ipd, min_cell_size(metadata), metadata))}


def write_report(ipd: pd.DataFrame, metadata: dict[str, Any], missingness: pd.DataFrame,
                 out_dir: str | Path) -> list[Path]:
    """Write `harmonisation_report.md` and `harmonisation_report.html` into `out_dir` (atomically)."""
    pages = render_report(ipd, metadata, missingness)
    return [io.write_text_atomic(path, pages[path.name]) for path in report_paths(out_dir)]
