"""The `mbi-predict` command line: a thin typer layer over the Python API.

Each command parses its options, calls one API function and prints with rich. A user-caused problem arrives as an
`MBIError` and leaves as one line on stderr with exit status 2 and no traceback (`--debug` shows it). Heavy modules
(pandas, mlflow, econml) are imported inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from mbi_predict.errors import MBIError

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
    """Turn package errors into one line and exit 2; unexpected errors into one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except MBIError as error:
            if _state["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: no partial output was left behind")
            raise typer.Exit(code=130) from None
        except Exception as error:  # noqa: BLE001 - the boundary: one line, not a traceback
            if _state["debug"]:
                raise
            text = " ".join(str(error).split()) or type(error).__name__
            err_console.print(f"[bold red]internal error:[/] {type(error).__name__}: {text} "
                              "(run again with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
         ) -> None:
    _state["debug"] = debug


@app.command()
@_boundary
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder for consortium.yaml, raw trial files and truth.")],
    scenario: Annotated[str, typer.Option(help="galante2023 | null | strong | harm")] = "galante2023",
    seed: Annotated[int, typer.Option(help="Random seed; the output is deterministic for a seed.")] = 2023,
    trials: Annotated[int, typer.Option(help="Number of trials.")] = 13,
    n: Annotated[int, typer.Option(help="Total number of participants.")] = 2371,
) -> None:
    """Write a simulated consortium of raw trial files, its consortium.yaml and the truth file."""
    from mbi_predict.data.rawsim import simulate_consortium_files

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
    from mbi_predict.data.harmonise import write_harmonised

    started = time.perf_counter()
    result = run_harmonise(spec, standardisation=standardisation)
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
) -> None:
    """Run every stage that exists on the built-in simulated consortium."""
    from mbi_predict.demo import run_demo

    run_demo(out, seed=seed, console=console)


def entrypoint() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
