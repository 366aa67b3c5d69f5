"""The `mbi-predict` command line: a thin typer layer over the Python API.

Each command parses its options, calls one API function and prints with rich, in tables that fit the terminal
(``--json``/``--csv`` wherever a table is printed). A user-caused problem arrives as an `MBIError` and leaves as one
line on stderr with exit status 2 and no traceback (`--debug` shows it). Heavy modules (pandas, mlflow, econml) are
imported inside the commands so that `--help` stays instant.

Modules: ``_common`` (the app, the error boundary, consoles, table printing), ``printers`` (the verdict, the
run's leaderboard and the per-trial description, which the demo prints too), ``data_commands`` (simulate,
harmonise, describe, meta), ``run_commands`` (run, compare, ui, explain), ``report_commands`` (card, report,
predict, demo). ``python -m mbi_predict.cli`` runs the same app as the console script.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from mbi_predict.cli._common import app, console, err_console, print_table, state

# MLflow's nudge to add type hints to a pyfunc model's `predict` (ours has none on purpose, see deploy.py) is not
# for the user of a command: filtered before any command imports mlflow (deploy.py also opts its class out).
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method", category=UserWarning)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
         ) -> None:
    import os

    state["debug"] = debug
    if not debug:
        # MLflow's INFO lines (database creation, migrations) and its nudges about type hints are noise on a CLI
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # and its "Downloading artifacts" progress bars (one line per refresh when stderr is not a terminal) would
        # bury a one-line error
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # loky's resource tracker (a helper process that inherits the environment) warns on stderr, as the command
        # exits, about semaphores of a worker pool that a worker's error shut down, and then removes them itself:
        # its two warnings would follow the command's one-line error (seen in 1 of 3 slow-suite runs)
        quiet = "ignore:resource_tracker:UserWarning"
        if quiet not in os.environ.get("PYTHONWARNINGS", ""):
            os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), quiet]))


from mbi_predict.cli import data_commands, run_commands  # noqa: E402,F401,I001  (registers commands in order)
from mbi_predict.cli import report_commands  # noqa: E402,F401
from mbi_predict.cli.printers import print_run, print_verdict  # noqa: E402

# older names, kept for callers of the single-module CLI
_print_frame = print_table
_print_run = print_run


def entrypoint() -> None:  # pragma: no cover - console-script shim
    app()


__all__ = ["app", "console", "err_console", "entrypoint", "print_run", "print_table", "print_verdict"]
