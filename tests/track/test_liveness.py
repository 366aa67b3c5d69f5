"""Runs whose process died without ending them (SIGKILL, a crash) are ended KILLED by the next experiment run in the
experiment and by compare, with the reason; runs of live processes, of other hosts and without process tags are
left alone. An error raised while an interrupt was being handled still ends the runs KILLED."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from mbi_predict.track import ExperimentRun, compare
from mbi_predict.track.liveness import (HOST_TAG, KILLED_REASON_TAG, PID_TAG, PROCESS_TAG, owner_alive,
                                        process_tags)
from mbi_predict.track.mapping import RUN_TYPE_TAG

MODELS = [{"name": "reference", "kind": "prognostic", "estimator": "reference"}]


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def _orphan(store: str, experiment: str, tags: dict[str, str]) -> tuple[str, str]:
    """A parent run and one model run left RUNNING by the process the tags name; returns their ids."""
    made = MlflowClient(store)
    found = made.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else made.create_experiment(experiment)
    parent = made.create_run(experiment_id, run_name=f"{experiment}-orphan",
                             tags={RUN_TYPE_TAG: "experiment", **tags}).info.run_id
    child = made.create_run(experiment_id, run_name="reference", tags={
        RUN_TYPE_TAG: "model", "mlflow.parentRunId": parent, "mbi_predict.model_kind": "prognostic"}).info.run_id
    return parent, child


def _status(store: str, run_id: str) -> str:
    return MlflowClient(store).get_run(run_id).info.status


def test_runs_record_their_process(store):
    with ExperimentRun(store, "liveness_tags", models=MODELS) as run:
        made = MlflowClient(store)
        for run_id in (run.run_id, *run.model_runs.values()):
            tags = made.get_run(run_id).data.tags
            assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == socket.gethostname()
            assert owner_alive(tags) is True
    assert process_tags()[PID_TAG] == str(os.getpid())


def test_the_next_run_ends_a_dead_process_runs_killed(store, dead_pid):
    parent, child = _orphan(store, "liveness_dead", {HOST_TAG: socket.gethostname(), PID_TAG: str(dead_pid)})
    made = MlflowClient(store)
    experiment_id = made.get_experiment_by_name("liveness_dead").experiment_id
    pending = made.create_logged_model(experiment_id, source_run_id=child)
    assert pending.status == LoggedModelStatus.PENDING
    with ExperimentRun(store, "liveness_dead", models=MODELS) as run:
        assert _status(store, parent) == "KILLED" and _status(store, child) == "KILLED"
    assert _status(store, run.run_id) == "FINISHED"
    for run_id in (parent, child):
        reason = made.get_run(run_id).data.tags[KILLED_REASON_TAG]
        assert f"process {dead_pid} on {socket.gethostname()}" in reason and "experiment run" in reason
    assert made.get_logged_model(pending.model_id).status == LoggedModelStatus.FAILED


def test_compare_shows_a_dead_process_run_as_killed(store, dead_pid):
    parent, _ = _orphan(store, "liveness_compare", {HOST_TAG: socket.gethostname(), PID_TAG: str(dead_pid)})
    board = compare("liveness_compare", store)
    assert list(board["status"]) == ["KILLED"] and list(board["run_id"]) == [parent]
    assert "mbi-predict compare" in MlflowClient(store).get_run(parent).data.tags[KILLED_REASON_TAG]


def test_a_reused_pid_is_told_apart_by_the_process_start(store):
    mine = process_tags()
    if PROCESS_TAG not in mine:
        pytest.skip("no /proc: the process start time is not known here")
    token = ";".join(part if not part.startswith("start=") else "start=1" for part in mine[PROCESS_TAG].split(";"))
    parent, child = _orphan(store, "liveness_reused", {**mine, PROCESS_TAG: token})
    with ExperimentRun(store, "liveness_reused", models=MODELS):
        pass
    assert _status(store, parent) == "KILLED" and _status(store, child) == "KILLED"


@pytest.mark.parametrize("tags", [
    pytest.param("live", id="a live process"),
    pytest.param({HOST_TAG: "another-host.example", PID_TAG: "1"}, id="another host"),
    pytest.param({}, id="no process tags"),
])
def test_runs_that_cannot_be_known_dead_are_left_running(store, tags):
    tags = process_tags() if tags == "live" else tags
    experiment = f"liveness_alone_{len(tags)}_{tags.get(HOST_TAG, 'none')[:7]}"
    parent, child = _orphan(store, experiment, tags)
    with ExperimentRun(store, experiment, models=MODELS):
        pass
    compare(experiment, store)
    assert _status(store, parent) == "RUNNING" and _status(store, child) == "RUNNING"
    MlflowClient(store).set_terminated(child)
    MlflowClient(store).set_terminated(parent)


def test_an_error_raised_while_handling_an_interrupt_still_ends_the_runs_killed(store):
    with pytest.raises(RuntimeError):
        with ExperimentRun(store, "liveness_chain", models=MODELS) as run:
            try:
                raise KeyboardInterrupt
            finally:  # cleanup that fails because of the same Ctrl-C (a worker pool it broke)
                raise RuntimeError("pool broken") from ValueError("remote traceback")
    assert _status(store, run.run_id) == "KILLED"
    reason = MlflowClient(store).get_run(run.run_id).data.tags[KILLED_REASON_TAG]
    assert reason.startswith("interrupted")


def test_the_compare_table_says_a_run_was_killed(store, dead_pid):
    from typer.testing import CliRunner

    from mbi_predict.cli import app

    _orphan(store, "liveness_table", {HOST_TAG: socket.gethostname(), PID_TAG: str(dead_pid)})
    shown = CliRunner().invoke(app, ["compare", "--experiment", "liveness_table", "--tracking-uri", store])
    assert shown.exit_code == 0, shown.output
    assert "KILLED" in shown.output, shown.output
