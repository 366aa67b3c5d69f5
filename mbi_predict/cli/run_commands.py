"""Commands on experiments: run, compare, ui, explain (the run's printed leaderboard is in `cli.printers`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mbi_predict.cli._common import (app, boundary, console, emit, err_console, output_format, print_table,
                                    quiet_optuna)
from mbi_predict.cli.printers import print_run, print_verdict, run_rows
from mbi_predict.errors import ConfigError
from mbi_predict.io import check_outputs_apart as _outputs_apart
from mbi_predict.io import files_under as _files_in

if TYPE_CHECKING:
    from mbi_predict.config import ExperimentConfig

JSON_OPTION = typer.Option("--json", help="Print the table as JSON (one array of records) instead.")
CSV_OPTION = typer.Option("--csv", help="Print the table as CSV instead.")
#: metrics shown by default in `compare`, per kind of model (all are in --all, --json and --csv)
HEADLINE = {"prognostic": ("rmse", "r2", "calibration_slope", "c_statistic", "brier"),
            "effect": ("rate_autoc", "benefit_calibration_slope", "c_for_benefit", "dr_loss_vs_constant")}


def with_figure_options(config: ExperimentConfig, figure_format: str | None, dpi: int | None) -> ExperimentConfig:
    """The validated config with ``run --figure-format/--dpi`` over its ``figures:`` block (the options win)."""
    if figure_format is None and dpi is None:
        return config
    from mbi_predict import figstyle

    chosen = figstyle.settings(figure_format, dpi, base=config.figures.settings())
    return config.model_copy(update={"figures": config.figures.model_copy(update={"format": chosen.format,
                                                                                    "dpi": chosen.dpi})})


@app.command()
@boundary
def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    data: Annotated[Path | None, typer.Option(help="Override the config's data: IPD table or consortium spec.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Override the config's outcome column.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for summary.json, plots (and predictions).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    save_predictions: Annotated[bool, typer.Option(
        help="Also write participant-level held-out predictions (sensitive data: only on request).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    figure_format: Annotated[str | None, typer.Option(
        help="Figure format: png | svg | pdf (default: the config's figures.format, else png).")] = None,
    dpi: Annotated[int | None, typer.Option(help="Figure resolution (default: figures.dpi, else 150).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the pooled leaderboard as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the pooled leaderboard as CSV.")] = False,
) -> None:
    """Validate every model of an experiment leave-one-trial-out; write summary.json and log the run to MLflow."""
    from mbi_predict import figstyle
    from mbi_predict.config import load_config
    from mbi_predict.runner import run_experiment

    fmt = output_format(as_json, as_csv)
    if figure_format is not None:
        figstyle.check_format(figure_format)
    if dpi is not None:
        figstyle.check_dpi(dpi)
    # a bad config (its figures: block included) is a one-line error before anything runs
    to_run = with_figure_options(load_config(config), figure_format, dpi)
    quiet_optuna()
    if out is not None:
        source = to_run.data
        inputs = [config, data, source.path, source.spec, source.truth]
        if source.spec is not None:
            from mbi_predict.data.spec import input_paths, load_spec

            inputs += input_paths(load_spec(source.spec))
        # a previous run's summary, plots/ and predictions are replaced: no input may be one of them
        _outputs_apart([out, Path(out) / "summary.json", Path(out) / "predictions.parquet"], inputs,
                       folder=Path(out), replaced=[Path(out) / "plots"])
    result = run_experiment(to_run, data=data, outcome=outcome, out_dir=out, tracking_uri=tracking_uri,
                            save_predictions=save_predictions, progress=progress, on_estimate=_print_estimate)
    if fmt:
        emit(run_rows(result.summary), fmt)
        register_from_config(result, tracking_uri)
        return
    print_verdict(result.summary)
    print_run(result.summary)
    console.print(f"summary: {result.summary_path}")
    if result.predictions_path:
        console.print(f"held-out predictions (participant-level): {result.predictions_path}")
    console.print(f"MLflow run {result.mlflow_run_id}; open the UI with: mbi-predict ui")
    register_from_config(result, tracking_uri)


def register_from_config(result: Any, tracking_uri: str | None) -> None:
    """``tracking.register``: register the chosen final model with its card as the description, as
    ``mbi-predict card RUN --register NAME`` does (the card also written to the run folder)."""
    tracking = (result.summary.get("config") or {}).get("tracking") or {}
    name = tracking.get("register")
    if not name:
        return
    from mbi_predict.cli.report_commands import _card_to_mlflow
    from mbi_predict.report.card import build_card, write_card

    run_folder = Path(result.summary_path).parent
    uri = tracking_uri or tracking.get("uri")
    built = build_card(str(run_folder), model=tracking.get("register_model"), tracking_uri=uri)
    path = write_card(built, run_folder / "model_card_registered.md", fmt="md")
    _card_to_mlflow(str(run_folder), built, path, tracking_uri=uri, register=name)


def compare_views(frame: Any, metric: str | None, *, every: bool = False) -> list[tuple[str, Any]]:
    """Narrow leaderboard tables: with ``metric`` one table (that metric, CI and PI); else one table per kind of
    model with its headline metrics (``every``: all metrics), each metric one "estimate (CI)" column."""
    import pandas as pd

    from mbi_predict.numbers import estimate_ci, interval, label
    from mbi_predict.track.compare import pooled_metric_columns

    available = pooled_metric_columns(frame)
    single = frame["run_id"].nunique() == 1   # one run: its id goes in the title, not in every row
    status = frame["status"].astype(str) if "status" in frame else pd.Series(["FINISHED"] * len(frame))
    ended_otherwise = bool((status != "FINISHED").any())  # KILLED, FAILED, RUNNING: say so, never read as finished
    where = ""
    if single:
        where = f" (run {str(frame['run_id'].iloc[0])[:8]}" + (f", {status.iloc[0]})" if ended_otherwise else ")")

    def base(rows: Any) -> Any:
        table = pd.DataFrame({"run": rows["run_id"].astype(str).str[:8].to_numpy(),
                              "model": rows["model"].to_numpy()})
        if ended_otherwise and not single:
            table.insert(1, "status", status.loc[rows.index].to_numpy())
        return table.drop(columns=["run"]) if single else table

    if metric is not None:
        table = base(frame)
        table["kind"] = frame["kind"].fillna("").to_numpy()
        table[f"{label(metric)} (95% CI)"] = [estimate_ci(v, lo, hi) for v, lo, hi in zip(
            frame[metric], frame[f"{metric}_ci_low"], frame[f"{metric}_ci_high"])]
        if f"{metric}_pi_low" in frame:
            table["95% PI"] = [interval(lo, hi) for lo, hi in zip(frame[f"{metric}_pi_low"],
                                                                  frame[f"{metric}_pi_high"])]
        return [(f"pooled {label(metric)}, best first{where}", table)]
    views = []
    for kind in ("prognostic", "effect"):
        rows = frame[frame["kind"] == kind]
        if rows.empty:
            continue
        chosen = [m for m in (available if every else HEADLINE[kind]) if m in available and rows[m].notna().any()]
        table = base(rows)
        for m in chosen:
            table[label(m)] = [estimate_ci(v, lo, hi) for v, lo, hi in zip(rows[m], rows[f"{m}_ci_low"],
                                                                          rows[f"{m}_ci_high"])]
        views.append((f"{kind} models: pooled over held-out trials (95% CI){where}", table))
    return views


@app.command()
@boundary
def compare(
    experiment: Annotated[str | None, typer.Option(help="Only runs of this MLflow experiment.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    metric: Annotated[str | None, typer.Option(help="Rank by this pooled metric, e.g. rmse or rate_autoc.")] = None,
    runs: Annotated[int, typer.Option(help="Newest experiment runs to show (0: all).", min=0)] = 1,
    every: Annotated[bool, typer.Option("--all", help="Every pooled metric, not only the headline ones.")] = False,
    as_json: Annotated[bool, JSON_OPTION] = False, as_csv: Annotated[bool, CSV_OPTION] = False,
) -> None:
    """Leaderboard of pooled leave-one-trial-out metrics with CIs, one row per model run, from MLflow."""
    import difflib

    from mbi_predict.track import compare as leaderboard
    from mbi_predict.track.compare import HIGHER_IS_BETTER, pooled_metric_columns

    fmt = output_format(as_json, as_csv)
    frame = leaderboard(experiment=experiment, tracking_uri=tracking_uri)
    if frame.empty:
        if metric is not None:
            raise ConfigError(f"unknown metric {metric!r}: no experiment run has logged any metric yet")
        if fmt:
            emit(frame, fmt)
        else:
            console.print("no experiment runs found")
        return
    if runs:
        newest = list(dict.fromkeys(frame.sort_values("start_time", ascending=False)["run_id"]))[:runs]
        frame = frame[frame["run_id"].isin(newest)]
    if metric is not None:
        known = pooled_metric_columns(frame)
        if metric not in known:
            close = difflib.get_close_matches(metric, known, n=3)
            raise ConfigError(f"unknown metric {metric!r}"
                              + (f"; did you mean {' or '.join(close)}?" if close else "")
                              + f" ({len(known)} pooled metrics are logged; compare --json lists them)")
        frame = frame.sort_values(metric, ascending=metric not in HIGHER_IS_BETTER, na_position="last",
                                  kind="stable")
    frame = frame.reset_index(drop=True)
    if fmt:
        emit(frame, fmt)
        return
    for title, table in compare_views(frame, metric, every=every):
        print_table(table, title=title, keys=[k for k in ("run", "model") if k in table.columns])


@app.command()
@boundary
def ui(
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (the UI has no authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
) -> None:
    """Start the MLflow UI against the tracking store (127.0.0.1 by default)."""
    import subprocess

    from mbi_predict.track import ui_command

    argv = ui_command(tracking_uri, host=host, port=port)
    console.print("starting: " + " ".join(argv[1:]))
    raise typer.Exit(code=subprocess.call(argv))


@app.command()
@boundary
def explain(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id or a run's output folder.")],
    recompute: Annotated[bool, typer.Option(help="Recompute SHAP from the run's config (refits fold models).")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for a run id.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for recomputed plots and summary.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model of the run.")] = None,
    feature: Annotated[list[str] | None, typer.Option(help="Only these features (repeat the option).")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False, as_csv: Annotated[bool, CSV_OPTION] = False,
) -> None:
    """SHAP rankings of a finished run: importance with CI, fold stability, null p-value, classical interactions."""
    import pandas as pd

    from mbi_predict.cli.explain_run import explain_run

    fmt = output_format(as_json, as_csv)
    if out is not None:
        _outputs_apart([out], [run_ref, *_files_in(Path(run_ref))], folder=Path(out))
    shown = explain_run(run_ref, tracking_uri=tracking_uri, recompute=recompute, out_dir=out, model=model,
                        features=feature or None)
    if fmt:
        emit([{"model": name, **row} for name, block in (shown.get("models") or {}).items()
              for row in (block or {}).get("ranking") or []], fmt)
        return
    for name, block in (shown.get("models") or {}).items():
        ranking = (block or {}).get("ranking") or []
        if ranking:
            print_table(pd.DataFrame(ranking), title=f"{name}: SHAP importance (mean |SHAP|) across held-out "
                                                     "trials", keys=["feature"])
        for note in (block or {}).get("notes") or []:
            console.print(f"  note: {note}", markup=False)
        for path in (block or {}).get("plots") or []:
            console.print(f"  plot: {path}", markup=False)
    if shown.get("summary_path"):
        console.print(f"summary: {shown['summary_path']}")


def _print_estimate(estimate: Any) -> None:
    """The run's time and memory estimate, one line on stderr before fitting (stdout stays the command's output)."""
    err_console.print(estimate.line(), markup=False, highlight=False, soft_wrap=True)
