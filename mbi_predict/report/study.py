"""The study report: one self-contained HTML page (and its Markdown twin) that reads a finished run top to bottom.

`collect` gathers what a run left (read only): its summary.json and plots, the classical meta-analyses (meta.json
in ``RUN/meta`` or beside the run), the harmonisation report and the model cards; `study_blocks`
(``study_sections``) turns them into headed blocks of sentences, tables and figures; ``study_render`` writes the
blocks as HTML (figures embedded as data URIs: no external resource, a navigable table of contents, readable on a
phone, printable) and as Markdown (figures beside it). Computing and rendering stay apart: every number comes from
the run's records, the report estimates nothing. A block the run did not produce (no SHAP, no meta-analysis) is
said not to have been run; the report never fails for it.

Aggregates only, as everywhere: the run's records and plots hold no participant-level value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbi_predict.report.study_inputs import StudyInputs, collect, relative_link  # noqa: F401  (the public names)

REPORT_STEM = "study_report"


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """(HTML page, Markdown page) for ``--out``: a .html path, a .md path or a stem; its twin beside it."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".html", ".htm", ".md") else out
    return stem.with_name(stem.name + ".html"), stem.with_name(stem.name + ".md")


def write_study_report(run: str | Path, out: str | Path, *, meta: list[str | Path] | None = None,
                       tracking_uri: str | None = None, figure_format: str | None = None,
                       dpi: int | None = None) -> list[Path]:
    """Write the study report of ``run`` as ``<out>.html`` (self-contained) and ``<out>.md`` (figures in
    ``<out>_figures/``), published as one set: on any error nothing is left behind. Returns [html, md]."""
    from mbi_predict.io import output_set, remove_stale_figures
    from mbi_predict.report.study_render import figure_file_name, to_html, to_markdown
    from mbi_predict.report.study_sections import study_blocks

    html_path, md_path = report_paths(out)
    inputs = collect(run, meta=meta, tracking_uri=tracking_uri)
    blocks = study_blocks(inputs, page=html_path, figure_format=figure_format, dpi=dpi)
    figures = [figure for block in blocks if block[0] == "figs" for figure in block[1]]
    folder = md_path.with_name(md_path.stem + "_figures")
    figure_paths = [folder / figure_file_name(figure) for figure in figures]
    links = {id(figure): f"{folder.name}/{path.name}" for figure, path in zip(figures, figure_paths)}
    with output_set([*figure_paths, md_path, html_path]) as temps:
        for figure, tmp in zip(figures, temps):
            tmp.write_bytes(figure["data"])
        temps[-2].write_text(to_markdown(blocks, links), encoding="utf-8")
        temps[-1].write_text(to_html(blocks, title=_title(inputs.summary)), encoding="utf-8")
    remove_stale_figures(folder, figure_paths)   # an earlier report's figures must not sit beside this one
    return [html_path, md_path]


def _title(summary: dict[str, Any]) -> str:
    return f"Study report: {summary.get('experiment') or 'experiment'} ({summary.get('outcome') or 'outcome'})"


def log_report(paths: list[Path], summary: dict[str, Any], *, tracking_uri: str | None) -> str | None:
    """Log the report pages to the run's MLflow parent run (artifact folder ``report/``); returns a note when it
    could not be logged (no run id, no store, store unreachable), None when logged."""
    from mbi_predict.errors import MBIError

    run_id = summary.get("mlflow_run_id")
    if not run_id:
        return "the run was not tracked in MLflow"
    uri = tracking_uri or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return f"no tracking store at {uri}"
    try:
        from mbi_predict.track.run import log_artifacts_to
        from mbi_predict.track.store import check_tracking_uri, client

        made = client(check_tracking_uri(uri))
        made.get_run(run_id)
        folder = paths[1].with_name(paths[1].stem + "_figures")
        log_artifacts_to(made, run_id, extra={"report": [*paths, *([folder] if folder.is_dir() else [])]})
    except MBIError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a store that cannot take the report does not undo the report
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None
