"""Run lifecycle: the parent and model runs exist (RUNNING) from the start, end FAILED on an exception and KILLED on
SIGTERM; two runs starting together on a new sqlite store both succeed; an unreachable server is one line."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from mbi_predict.errors import ConfigError
from mbi_predict.track import ExperimentRun, RunTerminated, check_tracking_uri

MODELS = [{"name": "reference", "kind": "prognostic", "estimator": "reference"},
          {"name": "t_learner", "kind": "effect", "estimator": "t_learner_enet"}]

SCRIPT = textwrap.dedent("""
    import sys, time
    from mbi_predict.track import ExperimentRun
    models = [{"name": "reference", "kind": "prognostic", "estimator": "reference"},
              {"name": "t_learner", "kind": "effect", "estimator": "t_learner_enet"}]
    with ExperimentRun(sys.argv[1], sys.argv[2], models=models) as run:
        print(run.run_id, flush=True)
        if sys.argv[3] == "wait":
            time.sleep(120)
""")


def _statuses(store, parent_id):
    client = MlflowClient(store)
    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return parent.info.status, {c.info.run_name: c.info.status for c in children}


def test_runs_exist_while_running_and_fail_on_an_exception(store):
    with pytest.raises(RuntimeError, match="boom"):
        with ExperimentRun(store, "lifecycle", models=MODELS, run_name="my-run") as run:
            assert _statuses(store, run.run_id) == ("RUNNING", {"reference": "RUNNING", "t_learner": "RUNNING"})
            raise RuntimeError("boom")
    assert _statuses(store, run.run_id) == ("FAILED", {"reference": "FAILED", "t_learner": "FAILED"})
    assert MlflowClient(store).get_run(run.run_id).info.run_name == "my-run"


def test_keyboard_interrupt_is_killed_and_the_sigterm_handler_is_restored(store):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with ExperimentRun(store, "lifecycle", models=MODELS) as run:
            assert signal.getsignal(signal.SIGTERM) is not before
            raise KeyboardInterrupt
    assert signal.getsignal(signal.SIGTERM) is before
    assert _statuses(store, run.run_id) == ("KILLED", {"reference": "KILLED", "t_learner": "KILLED"})
    assert issubclass(RunTerminated, KeyboardInterrupt)


def test_sigterm_ends_the_runs_killed(store):
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, store, "lifecycle", "wait"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        run_id = process.stdout.readline().strip()
        assert run_id, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _statuses(store, run_id) == ("KILLED", {"reference": "KILLED", "t_learner": "KILLED"})


def test_two_runs_starting_together_on_a_new_store(tmp_path):
    store = f"sqlite:///{tmp_path}/new.db"
    processes = [subprocess.Popen([sys.executable, "-c", SCRIPT, store, "together", "go"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-500:] for _, err in outputs]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("together")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mbi_predict.run_type` = 'experiment'")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def test_an_unreachable_server_is_one_line_before_any_fitting():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match="unreachable") as info:
        check_tracking_uri(f"http://127.0.0.1:{port}", registry=True)
    assert "\n" not in str(info.value)
