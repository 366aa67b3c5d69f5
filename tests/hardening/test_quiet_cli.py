"""Class 6, noise: MLflow's two-line "add type hints" UserWarning used to precede the output of every command that
imports the deployed-model class (card, predict, explain). Run as a real process, so imports happen as a user's do."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd


def test_predict_with_a_bad_file_prints_exactly_one_line(tmp_path):
    data = tmp_path / "new.csv"
    pd.DataFrame({"age": [30.0]}).to_csv(data, index=False)
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    done = subprocess.run([sys.executable, "-m", "mbi_predict.cli", "predict", "--model", str(model), "--data",
                           str(data), "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert "participant_id" in lines[0] and "Warning" not in lines[0]


def test_importing_the_deployed_model_class_warns_nothing():
    code = "import mbi_predict.deploy; print('imported')"
    done = subprocess.run([sys.executable, "-W", "always::UserWarning", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Add type hints" not in done.stderr, done.stderr


def test_the_store_s_logged_copy_of_a_database_error_is_dropped_and_its_warnings_kept(monkeypatch):
    """MLflow's SQL store logs a database error with its traceback, then raises it (the boundary prints that one
    line); a Ctrl-C that cut a session off made a kill test print 511 lines this way."""
    import logging

    from mbi_predict.cli import _common

    monkeypatch.setitem(_common.state, "debug", False)
    store_logger = logging.getLogger("mlflow.store.db.utils")
    monkeypatch.setattr(store_logger, "filters", list(store_logger.filters))
    _common.quiet_mlflow_store()
    _common.quiet_mlflow_store()  # idempotent
    assert store_logger.filters.count(_common._store_error) == 1
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    store_logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("database is locked")
        except RuntimeError:
            store_logger.exception("SQLAlchemy database error. The following exception is caught.")
        store_logger.warning("a warning without a traceback")
    finally:
        store_logger.removeHandler(handler)
    assert seen == ["a warning without a traceback"]


def test_with_debug_the_store_s_errors_are_kept(monkeypatch):
    import logging

    from mbi_predict.cli import _common

    monkeypatch.setitem(_common.state, "debug", True)
    store_logger = logging.getLogger("mlflow.store.db.utils")
    monkeypatch.setattr(store_logger, "filters", [])
    _common.quiet_mlflow_store()
    assert store_logger.filters == []


_LEAK = """
from joblib.externals.loky.backend import resource_tracker
resource_tracker.ensure_running()
resource_tracker.register("/mbi-test-never-created", "semlock")
"""


def test_loky_s_resource_tracker_is_quiet_under_the_cli(monkeypatch):
    """After a worker's error shut a pool down, loky's resource tracker (a helper process inheriting the
    environment) warned about the pool's semaphores as the command exited, after its one-line error (a slow test saw
    it once in three runs). The CLI's environment silences those warnings; the tracker still removes what it finds."""
    import os

    from mbi_predict import cli

    for name in ("PYTHONWARNINGS", "MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setitem(cli.state, "debug", False)
    cli.main(debug=False)
    cli.main(debug=False)  # idempotent
    assert os.environ["PYTHONWARNINGS"] == "ignore:resource_tracker:UserWarning"
    # the tracker outlives the script and holds its stderr pipe: run() returns once the tracker has written
    quiet = subprocess.run([sys.executable, "-c", _LEAK], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ))
    assert "leaked" not in quiet.stderr, quiet.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    loud = subprocess.run([sys.executable, "-c", _LEAK], capture_output=True, text=True, timeout=60, env=env)
    assert "leaked semlock" in loud.stderr  # the warning this silences (so the test can fail)
