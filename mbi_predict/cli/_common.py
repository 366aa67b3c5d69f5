"""What every command shares: the typer app, the error boundary, the consoles and the table printer.

Tables fit the terminal: ``print_table`` splits a wide table into several narrower ones that repeat the key
columns (a trial's or a model's name), so no cell is folded into one-letter columns; the width is the real
terminal's, also when the output is piped (``COLUMNS``, else the terminal on stdout, stderr or stdin, else 80).
``emit`` writes a table as JSON or CSV for ``--json`` / ``--csv``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mbi_predict.errors import MBIError
from mbi_predict.interrupts import (Terminated, forget_sigterms, interrupt_in_chain, redelivered_interrupts,
                                   sigterm_received)

app = typer.Typer(
    name="mbi-predict",
    help="Who benefits from mindfulness-based interventions: harmonise IPD, pool it, predict, explain, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def terminal_width(default: int = 80) -> int:
    """The width to print for: ``COLUMNS`` when set, else the terminal on stdout, stderr or stdin (so a piped
    command still fits the terminal it is typed in), else ``default``."""
    columns = os.environ.get("COLUMNS", "")
    if columns.strip().isdigit() and int(columns) > 0:
        return int(columns)
    for fd in (1, 2, 0):
        try:
            return os.get_terminal_size(fd).columns
        except (OSError, ValueError):
            continue
    return default


def fit_console() -> None:
    """Size the output console for this command: rich measures a real terminal itself; otherwise (a pipe, a
    file, a test) the width of ``terminal_width`` is used instead of rich's fixed fallback."""
    console.width = terminal_width() if not console.is_terminal else console.size.width


def boundary(command: F) -> F:
    """Turn package errors into one line and exit 2; so too an OSError about a path (a file the user named that
    cannot be read or written); unexpected errors into one line and exit 1. Messages are printed as text, never
    as rich markup (a file or trial name may hold brackets)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        forget_sigterms()
        try:
            fit_console()
            quiet_mlflow_store()
            with redelivered_interrupts():
                return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except MBIError as error:
            if state["debug"]:
                raise
            _interrupted_anyway(error)
            err_console.print(f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(code=2) from None
        except OSError as error:  # a path the user gave that cannot be read or written: their input, one line
            if state["debug"]:
                raise
            if not getattr(error, "filename", None):
                internal(error)
            text = " ".join(str(error.strerror or error).split())
            err_console.print(f"[bold red]error:[/] {escape(f'file {error.filename}: {text}')}", markup=True,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt as interrupt:
            interrupted(interrupt)
        except Exception as error:  # noqa: BLE001 - the boundary: one line, not a traceback
            if state["debug"]:
                raise
            _interrupted_anyway(error)
            internal(error)

    return wrapper  # type: ignore[return-value]


def _interrupted_anyway(error: BaseException) -> None:
    """An error that followed Ctrl-C or SIGTERM is the interrupt's consequence (cleanup that failed because of it,
    or a library that swallowed it and then failed, e.g. an import cut off mid-way): report the interrupt."""
    interrupt = interrupt_in_chain(error)
    if interrupt is None and sigterm_received():
        interrupt = Terminated("SIGTERM (swallowed by a library)")
    if interrupt is not None:
        interrupted(interrupt)


def interrupted(interrupt: KeyboardInterrupt, left: str = "no partial output was left behind") -> None:
    """Ctrl-C (exit 130) or SIGTERM (exit 143, 128 + the signal, as a batch scheduler expects): one line, saying
    what the command ``left`` (a command of several stages keeps those it finished)."""
    err_console.print(f"interrupted: {left}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=143 if isinstance(interrupt, Terminated) else 130) from None


def internal(error: BaseException) -> None:
    text = " ".join(str(error).split()) or type(error).__name__
    err_console.print(f"[bold red]internal error:[/] {escape(f'{type(error).__name__}: {text}')} "
                      "(run again with --debug for the traceback)", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=1) from None


def _store_error(record: Any) -> bool:
    """False for the database errors MLflow's SQL store logs, with their traceback, just before it raises them again
    as an MlflowException (which reaches the boundary and is reported there in one line)."""
    return not (record.levelno >= 40 and record.exc_info)


def quiet_mlflow_store() -> None:
    """MLflow's SQL store logs a database error (a locked or unreachable store, a session cut off by Ctrl-C) as an
    ERROR with its traceback and then raises it; the boundary reports the raised error, or the interrupt it followed,
    in one line. Drop the logged copy (not with --debug, where tracebacks are wanted)."""
    if state["debug"]:
        return
    import logging

    store_logger = logging.getLogger("mlflow.store.db.utils")
    if _store_error not in store_logger.filters:
        store_logger.addFilter(_store_error)


def quiet_optuna() -> None:
    """optuna logs a failed tuning trial (e.g. an unknown search-space parameter) as a warning WITH its traceback
    before the error reaches the boundary, which prints it as the one line the user needs. Keep only optuna's
    errors, by a filter on its handler (a handler filter also sees the records of optuna's child loggers and
    survives `optuna.logging.set_verbosity`). In-process only: joblib workers log on their own stderr."""
    if state["debug"]:
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


# ----------------------------------------------------------------------------------------------- tables

def cell(value: Any) -> str:
    """A table cell as text (numbers via `mbi_predict.numbers`, never ``-1.96e-17``)."""
    from mbi_predict.numbers import number

    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value)
    return str(value)


def _table(frame: Any, columns: list[str], title: str | None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", show_edge=False)
    for column in columns:
        numeric = str(frame[column].dtype).startswith(("int", "float"))
        table.add_column(str(column), overflow="fold", justify="right" if numeric else "left")
    for row in frame[columns].itertuples(index=False):
        table.add_row(*[escape(cell(v)) for v in row])
    return table


def column_chunks(frame: Any, keys: list[str], width: int) -> list[list[str]]:
    """The frame's non-key columns split into groups that fit ``width`` beside the key columns."""
    others = [c for c in frame.columns if c not in keys]
    chunks: list[list[str]] = []
    current: list[str] = []
    for column in others:
        trial = keys + current + [column]
        if current and console.measure(_table(frame, trial, None), options=console.options.update_width(
                10_000)).maximum > width:
            chunks.append(current)
            current = [column]
        else:
            current.append(column)
    if current or not chunks:
        chunks.append(current)
    return chunks


def print_table(frame: Any, *, title: str | None = None, keys: list[str] | None = None) -> None:
    """Print ``frame`` to fit the console: wide tables become several, each repeating the ``keys`` columns."""
    if frame is None or len(frame.columns) == 0:
        return
    keys = [k for k in (keys or [frame.columns[0]]) if k in frame.columns]
    chunks = column_chunks(frame, keys, console.width)
    for i, chunk in enumerate(chunks):
        if title is not None:
            label = title if len(chunks) == 1 else f"{title} ({i + 1}/{len(chunks)})"
            console.print(label, style="bold", markup=False, highlight=False)
        console.print(_table(frame, keys + chunk, None))


def emit(frame_or_records: Any, fmt: str) -> None:
    """Write a table (a DataFrame or a list of dicts) to stdout as JSON (records) or CSV."""
    import pandas as pd

    from mbi_predict.io import json_safe, to_json

    frame = frame_or_records if isinstance(frame_or_records, pd.DataFrame) else pd.DataFrame(frame_or_records)
    frame = frame.copy()
    for column in frame.columns:  # timestamps as ISO 8601 text in both formats
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].map(lambda t: t.isoformat() if pd.notna(t) else None)
    if fmt == "json":
        typer.echo(to_json(json_safe(frame.to_dict(orient="records"))))
    else:
        sys.stdout.write(frame.to_csv(index=False))


def output_format(as_json: bool, as_csv: bool) -> str | None:
    if as_json and as_csv:
        raise MBIError("--json and --csv are alternatives: give one")
    return "json" if as_json else "csv" if as_csv else None
