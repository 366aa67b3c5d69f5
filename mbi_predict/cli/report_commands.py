"""Commands that read a finished run or chain the stages: card, report, predict, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mbi_predict.cli._common import app, boundary, console, interrupted
from mbi_predict.errors import MBIError
from mbi_predict.io import check_outputs_apart as _outputs_apart
from mbi_predict.io import files_under as _files_in


@app.command()
@boundary
def card(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id or a run's output folder.")],
    model: Annotated[str | None, typer.Option(
        help="Model name (default: the best prognostic model that is not the reference comparator).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="md | html | json")] = "md",
    out: Annotated[Path | None, typer.Option(help="Output file (default card.<format>).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for a run id.")] = None,
    register: Annotated[str | None, typer.Option(
        help="Register the card's final model in the MLflow Model Registry under this name (card as its "
             "description, alias 'candidate').")] = None,
) -> None:
    """Write a model card (Mitchell et al. 2019, TRIPOD+AI) from a finished run; log it to the run in MLflow."""
    from mbi_predict.report.card import build_card, write_card
    from mbi_predict.track import check_tracking_uri

    if fmt not in ("md", "html", "json"):
        raise MBIError(f"--format must be md, html or json, not {fmt!r}")
    target = out or Path(f"card.{fmt}")
    run_folder = Path(run_ref)
    plots = run_folder / "plots"
    _outputs_apart([target], [run_folder / "summary.json", *(_files_in(plots))])
    if register:  # an unreachable registry fails before anything is written
        check_tracking_uri(tracking_uri, registry=True)
    built = build_card(run_ref, model=model, tracking_uri=tracking_uri)
    path = write_card(built, target, fmt=fmt)
    console.print(f"model card: {path}")
    _card_to_mlflow(run_ref, built, path, tracking_uri=tracking_uri, register=register)


def _card_to_mlflow(run_ref: str, built: dict, path: Path, *, tracking_uri: str | None, register: str | None) -> None:
    """Log the card to the run's MLflow parent run (when the run was tracked and its store is at hand) and, when
    asked, register the card's final model with the card as the version's description."""
    from mbi_predict.report.card_render import to_markdown
    from mbi_predict.report.card_source import load_summary
    from mbi_predict.track import log_cards, register_model

    summary = load_summary(run_ref, tracking_uri=tracking_uri).summary
    name = built["model_details"]["name"]
    run_id = summary.get("mlflow_run_id")
    if run_id:
        try:
            log_cards(tracking_uri, run_id, {name: [path]})
        except MBIError as exc:
            console.print(f"note: the card was not logged to MLflow run {run_id} ({exc})", markup=False)
    if register:
        model_uri = summary["models"][name].get("final_model_uri")
        if not model_uri:
            raise MBIError(f"model {name} of this run has no logged final model to register: run it with "
                           "tracking.log_final_models: true")
        version = register_model(model_uri, register, description=to_markdown(built, {}),
                                 tracking_uri=tracking_uri)
        console.print(f"registered {name} as {register} version {version.version} (alias candidate)",
                      markup=False)


@app.command()
@boundary
def report(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="A run's output folder or an MLflow run id.")],
    out: Annotated[Path, typer.Option(
        help="The report: <out>.html (self-contained) and <out>.md beside it.")] = Path("study_report.html"),
    meta: Annotated[list[Path] | None, typer.Option(
        help="A folder holding meta.json files of the classical meta-analysis (repeatable; default: RUN/meta "
             "and the meta folder beside RUN).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI: where a run id is read from and the report is logged.")] = None,
    figure_format: Annotated[str | None, typer.Option(
        help="Format of the figures the report draws: png | svg (the run's own plots are embedded as the run "
             "wrote them; see run --figure-format).")] = None,
    dpi: Annotated[int | None, typer.Option(help="Resolution of the figures the report draws (default 150).")] = None,
    log: Annotated[bool, typer.Option(help="Log the report to the run's MLflow parent run.")] = True,
) -> None:
    """One study report of a finished run (self-contained HTML and Markdown), logged to the run in MLflow."""
    from mbi_predict import figstyle
    from mbi_predict.report.study import log_report, report_paths, write_study_report

    if figure_format is not None and figstyle.check_format(figure_format) not in figstyle.EMBEDDABLE:
        raise MBIError(f"--figure-format for a report must be png or svg (a browser cannot show {figure_format} "
                       "in a page)")
    if dpi is not None:
        figstyle.check_dpi(dpi)
    html_path, md_path = report_paths(out)
    run_folder = Path(run_ref)
    _outputs_apart([html_path, md_path], [run_folder / "summary.json", *_files_in(run_folder / "plots"),
                                          *[m for folder in meta or [] for m in _files_in(folder)]])
    written = write_study_report(run_ref, out, meta=meta, tracking_uri=tracking_uri, figure_format=figure_format,
                                 dpi=dpi)
    console.print(f"study report: {written[0]} (and {written[1].name})", markup=False)
    if figure_format is not None or dpi is not None:
        console.print("note: --figure-format and --dpi apply to the figures the report draws (forest plots, "
                      "model comparison, group effects); the run's own plots are embedded as the run wrote them "
                      "(set them with `run --figure-format/--dpi`)", markup=False)
    if log:
        from mbi_predict.report.card_source import load_summary

        note = log_report(written, load_summary(run_ref, tracking_uri=tracking_uri).summary,
                          tracking_uri=tracking_uri)
        console.print("logged to the run's MLflow parent run (artifacts: report/)" if note is None
                      else f"note: not logged to MLflow ({note})", markup=False)


@app.command()
@boundary
def predict(
    model: Annotated[str, typer.Option(help="runs:/ID/NAME, models:/..., a model folder, a run folder or run id.")],
    data: Annotated[Path, typer.Option(help="New participants (.csv or .parquet) with the model's features.")],
    out: Annotated[Path, typer.Option(help="Predictions file (.csv or .parquet).")],
    model_name: Annotated[str | None, typer.Option(help="Model name within a run (default: best prognostic).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Score new participants with a final model; flag rows outside the training distribution."""
    _outputs_apart([out], [data, *_files_in(Path(model))])
    from mbi_predict.deploy import predict_file

    path = predict_file(model, data, out, model_name=model_name, tracking_uri=tracking_uri)
    console.print(f"predictions: {path}")


@app.command()
@boundary
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the simulated consortium.")] = 2023,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
) -> None:
    """Every stage on the built-in simulated consortium: simulate, harmonise, meta, run, cards, study report."""
    from mbi_predict.demo import run_demo

    _outputs_apart([out], [], folder=out)
    try:
        run_demo(out, seed=seed, console=console, tracking_uri=tracking_uri)
    except KeyboardInterrupt as interrupt:   # the stages it finished stay: each of their files is complete
        interrupted(interrupt, left=f"the stages the demo finished are in {out} (every file there is complete); "
                                    "the demo starts over when run again")
