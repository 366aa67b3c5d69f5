"""The `mbi-predict` command line: a thin typer layer over the Python API.

Each command parses its options, calls one API function and prints with rich. A user-caused problem arrives as an
`MBIError` and leaves as one line on stderr with exit status 2 and no traceback (`--debug` shows it). Heavy modules
(pandas, mlflow, econml) are imported inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mbi_predict.errors import MBIError
from mbi_predict.io import check_outputs_apart as _outputs_apart
from mbi_predict.io import files_under as _files_in

# MLflow's nudge to add type hints to a pyfunc model's `predict` (ours has none on purpose, see deploy.py) is not
# for the user of a command: filtered before any command imports mlflow (deploy.py also opts its class out).
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)

app = typer.Typer(
    name="mbi-predict",
    help="Who benefits from mindfulness-based interventions: harmonise IPD, pool it, predict, explain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
if not console.is_terminal:  # logs and pipes: wide enough for the result tables
    console.width = 140
err_console = Console(stderr=True)
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _boundary(command: F) -> F:
    """Turn package errors into one line and exit 2; so too an OSError about a path (a file the user named that
    cannot be read or written); unexpected errors into one line and exit 1. Messages are printed as text, never
    as rich markup (a file or trial name may hold brackets)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except MBIError as error:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=2) from None
        except OSError as error:  # a path the user gave that cannot be read or written: their input, one line
            if _state["debug"]:
                raise
            if not getattr(error, "filename", None):
                _internal(error)
            text = " ".join(str(error.strerror or error).split())
            err_console.print(f"[bold red]error:[/] {escape(f'file {error.filename}: {text}')}", markup=True,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: no partial output was left behind")
            raise typer.Exit(code=130) from None
        except Exception as error:  # noqa: BLE001 - the boundary: one line, not a traceback
            if _state["debug"]:
                raise
            _internal(error)

    return wrapper  # type: ignore[return-value]


def _internal(error: BaseException) -> None:
    text = " ".join(str(error).split()) or type(error).__name__
    err_console.print(f"[bold red]internal error:[/] {escape(f'{type(error).__name__}: {text}')} "
                      "(run again with --debug for the traceback)", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=1) from None


def _quiet_optuna() -> None:
    """optuna logs a failed tuning trial (e.g. an unknown search-space parameter) as a warning WITH its traceback
    before the error reaches the boundary, which prints it as the one line the user needs. Keep only optuna's
    errors, by a filter on its handler (a handler filter also sees the records of optuna's child loggers and
    survives `optuna.logging.set_verbosity`). In-process only: joblib workers log on their own stderr."""
    if _state["debug"]:
        return
    import logging

    import optuna

    optuna.logging.get_logger("optuna")  # creates optuna's handler if it does not exist yet
    for handler in logging.getLogger("optuna").handlers:
        if not any(getattr(f, "_mbi_quiet", False) for f in handler.filters):
            keep = logging.Filter()
            keep.filter = lambda record: record.levelno >= logging.ERROR  # type: ignore[method-assign]
            keep._mbi_quiet = True  # type: ignore[attr-defined]
            handler.addFilter(keep)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
         ) -> None:
    import os

    _state["debug"] = debug
    if not debug:
        # MLflow's INFO lines (database creation, migrations) and its nudges about type hints are noise on a CLI
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


@app.command()
@_boundary
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder for consortium.yaml, raw trial files and truth.")],
    scenario: Annotated[str, typer.Option(help="galante2023 | null | modest | strong | harm | harm_subgroup")] = "galante2023",
    seed: Annotated[int, typer.Option(help="Random seed; the output is deterministic for a seed.")] = 2023,
    trials: Annotated[int, typer.Option(help="Number of trials.")] = 13,
    n: Annotated[int, typer.Option(help="Total number of participants.")] = 2371,
) -> None:
    """Write a simulated consortium of raw trial files, its consortium.yaml and the truth file."""
    from mbi_predict.data.rawsim import simulate_consortium_files

    _outputs_apart([out], [], folder=out)
    spec = simulate_consortium_files(out, scenario=scenario, seed=seed, n_trials=trials, n=n)
    console.print(f"simulated consortium written: {spec}")


@app.command()
@_boundary
def harmonise(
    spec: Annotated[Path, typer.Argument(help="The consortium spec (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="The harmonised IPD table (.parquet).")] = Path("ipd.parquet"),
    report: Annotated[Path | None, typer.Option(help="Folder for the harmonisation report.")] = None,
    standardisation: Annotated[str | None, typer.Option(help="Override the spec: within_trial | norm.")] = None,
) -> None:
    """Harmonise raw trial files into one IPD table through the consortium spec."""
    from mbi_predict.data.harmonise import harmonise as run_harmonise
    from mbi_predict.data.publish import harmonised_paths, write_harmonised
    from mbi_predict.data.spec import input_paths, load_spec

    started = time.perf_counter()
    consortium = load_spec(spec)
    _outputs_apart(harmonised_paths(out, report), input_paths(consortium))
    result = run_harmonise(consortium, standardisation=standardisation)
    written = write_harmonised(result, out, report_dir=report)
    console.print(f"harmonised {len(result.ipd)} participants in {result.ipd['trial_id'].nunique()} trials "
                  f"in {time.perf_counter() - started:.1f} s")
    for path in written:
        console.print(f"  wrote {path}")


@app.command()
@_boundary
def describe(ipd: Annotated[Path, typer.Argument(help="A harmonised IPD table (.parquet or .csv).")]) -> None:
    """Print a table per trial: N by arm, control types, coverage, baseline profile."""
    from mbi_predict.data.describe import describe_ipd
    from mbi_predict.data.readers import load_ipd

    _print_frame(describe_ipd(load_ipd(ipd)).drop(columns=["outcomes_measured"], errors="ignore"), title=f"{ipd}")


@app.command()
@_boundary
def meta(
    ipd: Annotated[Path, typer.Argument(help="A harmonised IPD table (.parquet or .csv).")],
    outcome: Annotated[str, typer.Option(help="Outcome column, e.g. distress_fu1_6 or deteriorated_distress_post.")],
    control: Annotated[str, typer.Option(help="Comparison: passive | active.")] = "passive",
    modifiers: Annotated[str | None, typer.Option(help="Comma-separated candidate effect modifiers.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the forest and funnel plots (and meta.json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")] = False,
    imputations: Annotated[int, typer.Option("--m", help="Number of within-trial multiple imputations.")] = 5,
    method: Annotated[str, typer.Option(help="tau² estimator: REML | ML | DL | PM | FE.")] = "REML",
    test: Annotated[str, typer.Option(help="z | knha (Hartung-Knapp-Sidik-Jonkman).")] = "z",
    seed: Annotated[int, typer.Option(help="Seed of the imputations.")] = 0,
) -> None:
    """Two-stage random-effects IPD meta-analysis of one outcome, with within-trial effect modifiers."""
    from mbi_predict.data.readers import load_ipd
    from mbi_predict.errors import MBIError as _MBIError
    from mbi_predict.io import to_json, write_json_atomic
    from mbi_predict.meta import run_meta, write_plots

    if control not in ("passive", "active"):
        raise _MBIError(f"--control must be passive or active, not {control!r}")
    if out is not None:
        _outputs_apart([out, *(Path(out) / name for name in ("meta.json", "forest.png", "funnel.png"))], [ipd],
                       folder=Path(out))
    table = load_ipd(ipd)
    wanted = [m.strip() for m in modifiers.split(",") if m.strip()] if modifiers else None
    report = run_meta(table, outcome, control=control, modifiers=wanted, m=imputations, seed=seed, method=method,
                      test=test)
    result = report.to_dict()
    written = []
    if out is not None:
        written = write_plots(report, out)
        written.append(write_json_atomic(Path(out) / "meta.json", result))
    if as_json:
        typer.echo(to_json(result))
        return
    console.print(report.summary(), markup=False, highlight=False)
    _print_frame(_per_trial_frame(result["per_trial"]), title="per trial")
    for path in written:
        console.print(f"wrote {path}")


@app.command()
@_boundary
def run(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    data: Annotated[Path | None, typer.Option(help="Override the config's data: IPD table or consortium spec.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Override the config's outcome column.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for summary.json, plots (and predictions).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    save_predictions: Annotated[bool, typer.Option(
        help="Also write participant-level held-out predictions (sensitive data: only on request).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Validate every model of an experiment leave-one-trial-out; write summary.json and log the run to MLflow."""
    from mbi_predict.config import load_config
    from mbi_predict.runner import run_experiment

    _quiet_optuna()

    if out is not None:
        source = load_config(config).data
        inputs = [config, data, source.path, source.spec, source.truth]
        if source.spec is not None:
            from mbi_predict.data.spec import input_paths, load_spec

            inputs += input_paths(load_spec(source.spec))
        _outputs_apart([out, Path(out) / "summary.json"], inputs, folder=Path(out))
    result = run_experiment(config, data=data, outcome=outcome, out_dir=out, tracking_uri=tracking_uri,
                            save_predictions=save_predictions, progress=progress)
    print_verdict(result.summary)
    _print_run(result.summary)
    console.print(f"summary: {result.summary_path}")
    if result.predictions_path:
        console.print(f"held-out predictions (participant-level): {result.predictions_path}")
    console.print(f"MLflow run {result.mlflow_run_id}; open the UI with: mbi-predict ui")


def print_verdict(summary: dict[str, Any]) -> None:
    """The run's one heterogeneity verdict first, then each effect model's in a line."""
    run = summary.get("heterogeneity")
    if not run:
        return
    console.print(f"heterogeneity of the effect: {run['verdict'].replace('_', ' ').upper()} - {run['reason']}",
                  markup=False)
    for name, model in (run.get("models") or {}).items():
        p = model.get("p_holm", model.get("p_value"))
        beats = model.get("beats_constant")
        console.print(f"  {name}: {str(model.get('verdict')).replace('_', ' ')}"
                      + (f", p = {p:.3g}" if isinstance(p, float) and model.get("calibrated") else "")
                      + ("" if beats is None else ("; beats" if beats else "; does not beat")
                         + " one average effect for everyone"), markup=False)


def _print_run(summary: dict[str, Any], *, metrics: set[str] | None = None) -> None:
    import pandas as pd

    rows = []
    for name, block in summary.get("models", {}).items():
        for metric, value in (block.get("pooled") or {}).items():
            if not isinstance(value, dict) or (metrics is not None and metric not in metrics):
                continue
            rows.append({"model": name, "task": block.get("task"), "metric": metric,
                         "pooled": value.get("estimate"),
                         "95% CI": _interval(value.get("ci_low"), value.get("ci_high")),
                         "95% PI (new trial)": _interval(value.get("pi_low"), value.get("pi_high")),
                         "tau2": value.get("tau2")})
    if rows:
        _print_frame(pd.DataFrame(rows), title=f"{summary.get('experiment')}: {summary.get('outcome')}, "
                                               "pooled over held-out trials")


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None or low != low or high != high:
        return ""
    return f"{low:.3g} to {high:.3g}"


@app.command()
@_boundary
def compare(
    experiment: Annotated[str | None, typer.Option(help="Only runs of this MLflow experiment.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
    metric: Annotated[str | None, typer.Option(help="Only this pooled metric, e.g. rmse or c_statistic.")] = None,
) -> None:
    """Leaderboard of pooled leave-one-trial-out metrics with CIs, one row per model run, from MLflow."""
    from mbi_predict.track import compare as leaderboard
    from mbi_predict.track import format_leaderboard

    frame = leaderboard(experiment=experiment, tracking_uri=tracking_uri, metric=metric)
    if frame.empty:
        console.print("no experiment runs found")
        return
    _print_frame(format_leaderboard(frame, metric), title="pooled metrics (95% CI)")


@app.command()
@_boundary
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
@_boundary
def explain(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id or a run's output folder.")],
    recompute: Annotated[bool, typer.Option(help="Recompute SHAP from the run's config (refits fold models).")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI for a run id.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for recomputed plots and summary.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model of the run.")] = None,
    feature: Annotated[list[str] | None, typer.Option(help="Only these features (repeat the option).")] = None,
) -> None:
    """SHAP rankings of a finished run: importance with CI, fold stability, null p-value, classical interactions."""
    import pandas as pd

    from mbi_predict.explain.run import explain_run

    if out is not None:
        _outputs_apart([out], [run_ref, *_files_in(Path(run_ref))], folder=Path(out))
    shown = explain_run(run_ref, tracking_uri=tracking_uri, recompute=recompute, out_dir=out, model=model,
                        features=feature or None)
    for name, block in (shown.get("models") or {}).items():
        ranking = (block or {}).get("ranking") or []
        if ranking:
            _print_frame(pd.DataFrame(ranking), title=f"{name}: SHAP importance (mean |SHAP|) across held-out trials")
        for note in (block or {}).get("notes") or []:
            console.print(f"  note: {note}", markup=False)
        for path in (block or {}).get("plots") or []:
            console.print(f"  plot: {path}", markup=False)
    if shown.get("summary_path"):
        console.print(f"summary: {shown['summary_path']}")


@app.command()
@_boundary
def card(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="An MLflow run id or a run's output folder.")],
    model: Annotated[str | None, typer.Option(help="Model name (default: the best prognostic model).")] = None,
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
@_boundary
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


def _per_trial_frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    columns = ["trial_id", "n", "n_mbi", "n_control", "estimate", "ci_low", "ci_high", "weight"]
    return pd.DataFrame(rows).reindex(columns=columns)


def _print_frame(frame: Any, *, title: str | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(str(column), overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[escape(_fmt(v)) for v in row])
    console.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.3g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


@app.command()
@_boundary
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="Seed of the simulated consortium.")] = 2023,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default sqlite:///mlflow.db).")] = None,
) -> None:
    """Every stage on the built-in simulated consortium: simulate, harmonise, meta-analyse, validate, card."""
    from mbi_predict.demo import run_demo

    _outputs_apart([out], [], folder=out)
    run_demo(out, seed=seed, console=console, tracking_uri=tracking_uri)


def entrypoint() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
