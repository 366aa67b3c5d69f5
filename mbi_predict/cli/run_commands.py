"""Commands on experiments: run, compare, ui, explain (and the run's printed leaderboard)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from mbi_predict.cli._common import app, boundary, console, emit, output_format, print_table, quiet_optuna
from mbi_predict.errors import ConfigError
from mbi_predict.io import check_outputs_apart as _outputs_apart
from mbi_predict.io import files_under as _files_in

JSON_OPTION = typer.Option("--json", help="Print the table as JSON (one array of records) instead.")
CSV_OPTION = typer.Option("--csv", help="Print the table as CSV instead.")
#: metrics shown by default in `compare`, per kind of model (all are in --all, --json and --csv)
HEADLINE = {"prognostic": ("rmse", "r2", "calibration_slope", "c_statistic", "brier"),
            "effect": ("rate_autoc", "benefit_calibration_slope", "c_for_benefit", "dr_loss_vs_constant")}


@contextlib.contextmanager
def figure_settings(figure_format: str | None, dpi: int | None, config: Any = None) -> Iterator[Any]:
    """The run's figure format and resolution (options over the config's ``figures:`` block over defaults), in
    force for the block in this process and the worker processes it starts; restored afterwards."""
    from mbi_predict.report import figstyle

    saved = {key: os.environ.get(key) for key in (figstyle.FORMAT_ENV, figstyle.DPI_ENV)}
    base = figstyle.from_config(config) if config is not None else figstyle.settings()
    try:
        yield figstyle.set_defaults(figure_format or base.format, dpi if dpi is not None else base.dpi)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _config_without_figures(config: Path) -> tuple[Any, dict | None]:
    """The config to run (its path, or its mapping without the ``figures:`` block the CLI handles) and that
    block's mapping (None when absent)."""
    from mbi_predict.io import parse_yaml

    try:
        loaded = parse_yaml(config.read_text(encoding="utf-8"), source=str(config), error=ConfigError)
    except OSError:
        return config, None
    if not isinstance(loaded, dict) or "figures" not in loaded:
        return config, None
    from mbi_predict.config import ExperimentConfig, _resolve_paths, parse_config

    if "figures" in getattr(ExperimentConfig, "model_fields", {}):   # the config schema knows the block itself
        return config, {"figures": loaded["figures"]}
    rest = {k: v for k, v in loaded.items() if k != "figures"}
    return _resolve_paths(parse_config(rest, source=str(config)), config.parent), {"figures": loaded["figures"]}


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
    from mbi_predict.config import load_config
    from mbi_predict.report import figstyle
    from mbi_predict.runner import run_experiment

    fmt = output_format(as_json, as_csv)
    if figure_format is not None:
        figstyle.check_format(figure_format)
    if dpi is not None:
        figstyle.check_dpi(dpi)
    to_run, figures = _config_without_figures(config)
    if figures is not None:
        figstyle.from_config(figures)  # a bad figures: block is a one-line error before anything runs
    quiet_optuna()
    if out is not None:
        source = (load_config(config) if to_run is config else to_run).data
        inputs = [config, data, source.path, source.spec, source.truth]
        if source.spec is not None:
            from mbi_predict.data.spec import input_paths, load_spec

            inputs += input_paths(load_spec(source.spec))
        _outputs_apart([out, Path(out) / "summary.json"], inputs, folder=Path(out))
    with figure_settings(figure_format, dpi, figures):
        result = run_experiment(to_run, data=data, outcome=outcome, out_dir=out, tracking_uri=tracking_uri,
                                save_predictions=save_predictions, progress=progress)
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


def print_verdict(summary: dict[str, Any]) -> None:
    """The run's one heterogeneity verdict first, then each effect model's in a line."""
    from mbi_predict.report.numbers import p_value

    run = summary.get("heterogeneity")
    if not run:
        return
    console.print(f"heterogeneity of the effect: {run['verdict'].replace('_', ' ').upper()} - {run['reason']}",
                  markup=False)
    for name, model in (run.get("models") or {}).items():
        p = model.get("p_holm", model.get("p_value"))
        beats = model.get("beats_constant")
        console.print(f"  {name}: {str(model.get('verdict')).replace('_', ' ')}"
                      + (f", p = {p_value(p)}" if isinstance(p, float) and model.get("calibrated") else "")
                      + ("" if beats is None else ("; beats" if beats else "; does not beat")
                         + " one average effect for everyone"), markup=False)


def run_rows(summary: dict[str, Any], metrics: set[str] | None = None) -> list[dict[str, Any]]:
    """One record per (model, pooled metric) of a run: estimate, CI, PI, tau², k."""
    rows = []
    for name, block in summary.get("models", {}).items():
        for metric, value in (block.get("pooled") or {}).items():
            if not isinstance(value, dict) or (metrics is not None and metric not in metrics):
                continue
            rows.append({"model": name, "task": block.get("task"), "metric": metric,
                         **{key: value.get(key) for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high",
                                                            "tau2", "k")}})
    return rows


def print_run(summary: dict[str, Any], *, metrics: set[str] | None = None) -> None:
    """The run's leaderboard to fit the terminal: per kind of model, one row per model and one "estimate (95% CI)"
    column per pooled metric (prediction intervals and every other number: ``--json``, summary.json)."""
    import pandas as pd

    from mbi_predict.report.numbers import estimate_ci, label

    records = run_rows(summary, metrics)
    for kind in ("prognostic", "effect"):
        chosen = [r for r in records if (r["task"] or "prognostic") == kind]
        if not chosen:
            continue
        table = pd.DataFrame({"model": list(dict.fromkeys(r["model"] for r in chosen))})
        for metric in dict.fromkeys(r["metric"] for r in chosen):
            cells = {r["model"]: estimate_ci(r["estimate"], r["ci_low"], r["ci_high"]) for r in chosen
                     if r["metric"] == metric}
            table[label(metric)] = [cells.get(model, "") for model in table["model"]]
        print_table(table, title=f"{summary.get('experiment')}: {summary.get('outcome')}, {kind} models pooled over "
                                 "held-out trials (95% CI)", keys=["model"])


def compare_views(frame: Any, metric: str | None, *, every: bool = False) -> list[tuple[str, Any]]:
    """Narrow leaderboard tables: with ``metric`` one table (that metric, CI and PI); else one table per kind of
    model with its headline metrics (``every``: all metrics), each metric one "estimate (CI)" column."""
    import pandas as pd

    from mbi_predict.report.numbers import estimate_ci, interval, label
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

    from mbi_predict.explain.run import explain_run

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
