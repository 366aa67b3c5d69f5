"""Runs left RUNNING by a process that no longer exists, found and ended KILLED.

A run ends FINISHED, FAILED or KILLED when its process closes it (`ExperimentRun.__exit__`, including on Ctrl-C and
SIGTERM). A process stopped by SIGKILL, the OOM killer, a crash of the interpreter or a power cut cannot close its
runs: MLflow would show them RUNNING forever. So every run records which process runs it (tags `HOST_TAG`, `PID_TAG`
and `PROCESS_TAG`: the PID namespace, the boot and the process's start time, which tell a reused pid and a reboot
apart), and `reap_dead_runs` - called when a new experiment run starts in the same experiment, and by ``compare`` -
ends the RUNNING runs whose process is gone as KILLED, with `KILLED_REASON_TAG` saying why, together with their child
runs and with their final models still PENDING (FAILED).

Only what can be known is touched: runs of another host or PID namespace, runs without these tags (older versions,
other tools) and runs of live processes are left alone.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable, Mapping

from mbi_predict.io import process_alive

HOST_TAG = "mbi_predict.host"
PID_TAG = "mbi_predict.pid"
PROCESS_TAG = "mbi_predict.process"
KILLED_REASON_TAG = "mbi_predict.killed_reason"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat), None off Linux."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def _process_token(pid: int) -> dict[str, str]:
    token = {"ns": _pid_namespace(), "boot": _read("/proc/sys/kernel/random/boot_id"), "start": _start_ticks(pid)}
    return {k: v for k, v in token.items() if v}


def process_tags() -> dict[str, str]:
    """The tags that name this process on its run: host, pid, and (Linux) ``ns=...;boot=...;start=...``."""
    pid = os.getpid()
    token = _process_token(pid)
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    if token:
        tags[PROCESS_TAG] = ";".join(f"{k}={v}" for k, v in token.items())
    return tags


def owner_alive(tags: Mapping[str, str]) -> bool | None:
    """Is the process that runs a run (by its `process_tags`) still alive? None when this process cannot tell:
    another host or PID namespace, or no such tags."""
    if tags.get(HOST_TAG) != socket.gethostname():
        return None
    try:
        pid = int(tags.get(PID_TAG, ""))
    except ValueError:
        return None
    recorded = dict(part.split("=", 1) for part in (tags.get(PROCESS_TAG) or "").split(";") if "=" in part)
    here = _process_token(os.getpid())
    if recorded.get("ns") and here.get("ns") and recorded["ns"] != here["ns"]:
        return None  # another container on this host: its pids are not ours to look up
    if recorded.get("boot") and here.get("boot") and recorded["boot"] != here["boot"]:
        return False  # the machine has rebooted since
    if not process_alive(pid):
        return False
    if recorded.get("start") and _start_ticks(pid) not in (None, recorded["start"]):
        return False  # the pid now belongs to another process
    return True


def reap_dead_runs(made, experiment_ids: Iterable[str], *, by: str) -> list[str]:
    """End KILLED every RUNNING run of these experiments whose process is gone (`owner_alive` is False), and the
    RUNNING child runs of those; their PENDING logged models become FAILED. ``by`` names who found them (for the
    reason tag). Returns the run ids ended. ``made``: an MlflowClient."""
    ids = [str(e) for e in experiment_ids]
    if not ids:
        return []
    running = {}
    token = None
    while True:
        page = made.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                page_token=token)
        running.update({run.info.run_id: run for run in page})
        token = page.token
        if not token:
            break
    dead = {run_id for run_id, run in running.items() if owner_alive(run.data.tags) is False}
    dead |= {run_id for run_id, run in running.items() if run.data.tags.get("mlflow.parentRunId") in dead}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ended = []
    for run_id in sorted(dead, key=lambda r: "mlflow.parentRunId" not in running[r].data.tags):  # children first
        tags = running[run_id].data.tags
        owner = running.get(tags.get("mlflow.parentRunId", ""), running[run_id]).data.tags
        reason = (f"process {owner.get(PID_TAG, '?')} on {owner.get(HOST_TAG, '?')} ended without closing the run "
                  f"(SIGKILL, a crash or a reboot); marked KILLED by {by} at {now}")
        made.set_tag(run_id, KILLED_REASON_TAG, reason[:500])
        made.set_terminated(run_id, status="KILLED")
        _fail_pending_models(made, ids, run_id)
        ended.append(run_id)
    return ended


def _fail_pending_models(made, experiment_ids: list[str], run_id: str) -> None:
    """A final model whose logging the kill cut short stays PENDING in MLflow: mark it FAILED."""
    from mlflow.entities import LoggedModelStatus

    try:
        models = made.search_logged_models(experiment_ids, filter_string=f"source_run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - an older store or server without logged models: nothing to end
        return
    for model in models:
        if model.source_run_id == run_id and model.status == LoggedModelStatus.PENDING:
            made.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


__all__ = ["HOST_TAG", "KILLED_REASON_TAG", "PID_TAG", "PROCESS_TAG", "owner_alive", "process_tags",
           "reap_dead_runs"]
