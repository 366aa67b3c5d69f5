"""Kill tests (issue #13, "Done means"): SIGINT, SIGTERM and SIGKILL at several points of `mbi-predict run` and
`mbi-predict harmonise`; afterwards no partial output, no RUNNING MLflow run for a dead process, and the next command
into the same output and store works.

What is checked after every kill:

* exit status non-zero; after SIGINT / SIGTERM at most one line on stderr, and it says the command was interrupted;
* no partial output. A run folder (--out) is published by the runner from a ``.staging-*`` folder inside it,
  ``summary.json`` LAST, so it is complete when ``summary.json`` is there (and is the summary of a FINISHED run);
  visible files without it are a partial output. A harmonisation is the table, its sidecar, its missingness table
  and the report (`harmonised_paths`), the table last: complete when all are there and the sidecar describes the
  table beside it. After SIGINT / SIGTERM no ``.staging-*`` / ``.mbi-staging*`` folder may be left; after SIGKILL
  at most such a hidden folder, which the next command removes (harmonise) or ignores (run);
* no MLflow run left RUNNING for a dead process: after SIGINT / SIGTERM the runs of the process are KILLED with the
  reason; after SIGKILL they stay RUNNING (nothing can run in a SIGKILLed process) until the next experiment run in
  the experiment ends them KILLED, naming the dead process, and ``compare`` shows them KILLED;
* the next command into the same --out and store works and leaves a complete output, no RUNNING run and no
  PENDING logged model.

Points are reached by state, not by guessed delays: a pause at a named function (kill_shim.py: the real command,
held at that call) or polling files, processes and the store. ``run``: early = harmonising the spec (the experiment
run is open); middle = leave-one-trial-out fitting (the run's worker processes exist, --out does not); late = writing
outputs and tracking (the staging folder exists in --out: MLflow logging, final models, plots). ``harmonise``:
reading = after the first trial file is read; staged = while the table is written into staging; publishing = just
before the table's rename. Signals go to the main process (``kill PID``); Ctrl-C and a batch scheduler's stop reach
the whole process group (the ``*_to_the_group`` tests). Every process a test starts runs in its own session and is
ended with it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hardening_helpers import invoke

SHIM = Path(__file__).with_name("kill_shim.py")
CLI = [str(Path(sys.executable).with_name("mbi-predict"))]
SHIM_CLI = [sys.executable, str(SHIM)]
TIMEOUT = 300  # seconds for any one command on a loaded 2-core machine
INTERRUPT = (signal.SIGINT, signal.SIGTERM)


# --------------------------------------------------------------------------------------------------- fixtures

@dataclass(frozen=True)
class Kit:
    root: Path
    spec: Path       # a simulated consortium of 4 trials, 480 participants
    other: Path      # another consortium (another seed): a harmonisation whose metadata differ
    store: Path      # an sqlite MLflow store shared by this module's runs (each test has its own experiment)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store}"


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Kit:
    from mbi_predict.data.rawsim import simulate_consortium_files

    root = tmp_path_factory.mktemp("kills")
    spec = simulate_consortium_files(root / "consortium", seed=5, n_trials=4, n=480)
    other = simulate_consortium_files(root / "other", seed=6, n_trials=4, n=480)
    return Kit(root, Path(spec), Path(other), root / "mlflow.db")


def write_config(folder: Path, kit: Kit, experiment: str) -> Path:
    """A run of ~10-30 s: two models (one with workers' fitting, final models logged), four trials, two workers."""
    config = {
        "experiment": experiment, "data": {"spec": str(kit.spec)}, "outcome": "distress_fu1_6",
        "study_traits": ["setting"],
        "models": [{"name": "reference", "estimator": "reference"},
                   {"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 30}}],
        "validation": {"bootstrap": 10, "n_jobs": 2},
        "tracking": {"log_final_models": True},
        "seed": 3,
    }
    path = folder / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------- processes

@dataclass
class Ended:
    returncode: int
    stderr: list[str]   # non-empty lines


class Command:
    """One command in its own session (so its workers can be found and ended with it), output to files."""

    def __init__(self, argv: list[str], folder: Path, *, pause: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.marker = folder / f"paused-{time.monotonic_ns()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MBI_KILL_")}
        if pause:
            env.update({"MBI_KILL_MARKER": str(self.marker), **pause})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM.parent), env.get("PYTHONPATH")]))
        self.err_path = folder / f"stderr-{time.monotonic_ns()}.txt"
        with open(os.devnull, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(argv, cwd=folder, stdout=out, stderr=err, start_new_session=True,
                                            env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        try:
            return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            return []

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the command ended (status {self.process.returncode}) before {what}: "
                            f"{self.err_path.read_text()[-800:]}")
            if time.monotonic() > deadline:
                self.end_session()
                pytest.fail(f"no {what} within {TIMEOUT} s")
            time.sleep(0.05)

    def paused(self) -> None:
        self.wait_for(self.marker.exists, "the pause")

    def signal(self, sig: int, *, group: bool = False) -> Ended:
        if group:
            os.killpg(self.pid, sig)
        else:
            self.process.send_signal(sig)
        return self.finish()

    def finish(self) -> Ended:
        try:
            self.process.wait(timeout=TIMEOUT)
        finally:
            self.end_session()
        lines = [line for line in self.err_path.read_text().splitlines() if line.strip()]
        return Ended(self.process.returncode, lines)

    def end_session(self) -> None:
        """End what is left of this command's session: workers orphaned by a SIGKILL keep running for minutes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run_command(config: Path, out: Path, kit: Kit) -> list[str]:
    return [str(config), "--out", str(out), "--tracking-uri", kit.uri, "--no-progress"]


# ------------------------------------------------------------------------------------------------- checks

def visible_files(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


#: the run folder's staging folders (the runner's ``.staging-*``; ``.mbi-staging.*`` if it adopts `io.staging_prefix`)
STAGING = (".staging-", ".mbi-staging.")


def staging_folders(out: Path) -> list[Path]:
    return [p for p in out.glob(".*") if p.name.startswith(STAGING) and p.is_dir()] if out.is_dir() else []


def hidden_entries(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob(".*")}


def check_interrupted(ended: Ended, sig: int) -> None:
    assert ended.returncode != 0, ended
    if sig in INTERRUPT:
        assert len(ended.stderr) <= 1, ended.stderr
        assert all("Traceback" not in line for line in ended.stderr)
        if ended.returncode > 0:  # handled (a negative status: ended by the signal itself, before any handler)
            assert ended.stderr and ended.stderr[0].startswith("interrupted"), ended.stderr


def check_run_folder(out: Path, sig: int, kit: Kit) -> None:
    """Absent, empty or complete; no staging after SIGINT / SIGTERM, at most a hidden staging folder after SIGKILL."""
    files = visible_files(out)
    if files:
        assert "summary.json" in files, f"partial run folder: {sorted(files)}"
        summary = json.loads((out / "summary.json").read_text())
        assert status_of(kit, summary["mlflow_run_id"]) == "FINISHED"
    hidden = hidden_entries(out)
    if sig in INTERRUPT:
        assert not hidden, hidden
    else:
        assert all(name.split("/")[0].startswith(STAGING) for name in hidden), hidden


def client(kit: Kit):
    from mlflow.tracking import MlflowClient

    return MlflowClient(kit.uri)


def status_of(kit: Kit | str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(kit if isinstance(kit, str) else kit.uri).get_run(run_id).info.status


def runs_of(kit: Kit, experiment: str, pid: int | None = None) -> list:
    made = client(kit)
    found = made.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = made.search_runs([found.experiment_id], max_results=1000)
    if pid is not None:
        runs = [r for r in runs if r.data.tags.get("mbi_predict.pid") == str(pid)]
    return runs


def run_opened(kit: Kit, experiment: str, pid: int):
    """A condition: the experiment run of process ``pid`` exists in the store (read directly, without MLflow)."""
    def opened() -> bool:
        if not kit.store.exists():
            return False
        try:
            with sqlite3.connect(f"file:{kit.store}?mode=ro", uri=True, timeout=1) as db:
                row = db.execute("SELECT count(*) FROM runs r "
                                 "JOIN experiments e ON e.experiment_id = r.experiment_id "
                                 "JOIN tags t ON t.run_uuid = r.run_uuid "
                                 "WHERE e.name = ? AND t.key = 'mbi_predict.pid' AND t.value = ?",
                                 (experiment, str(pid))).fetchone()
            return row[0] > 0
        except sqlite3.Error:
            return False
    return opened


def check_runs_after(kit: Kit, experiment: str, pid: int, sig: int) -> None:
    runs = runs_of(kit, experiment, pid)
    if sig in INTERRUPT:
        assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
        assert all(r.data.tags.get("mbi_predict.killed_reason") for r in runs)
    else:
        assert {r.info.status for r in runs} <= {"RUNNING"}  # nothing can end them from inside a SIGKILLed process


def check_next_run(kit: Kit, config: Path, out: Path, experiment: str, killed_pids: list[int], sig: int) -> None:
    """The next run into the same --out and store completes; the killed processes' runs are KILLED (for SIGKILL:
    by the new run, naming the dead process), nothing is RUNNING or PENDING, and compare shows KILLED."""
    ended = Command([*CLI, "run", *run_command(config, out, kit)], out.parent / "next").finish()
    assert ended.returncode == 0, ended.stderr[-5:]
    summary = json.loads((out / "summary.json").read_text())
    assert status_of(kit, summary["mlflow_run_id"]) == "FINISHED"
    assert any(name.startswith("plots/") for name in visible_files(out))
    assert all(name.split("/")[0].startswith(STAGING) for name in hidden_entries(out))
    if sig in INTERRUPT:
        assert not hidden_entries(out)
    for pid in killed_pids:
        runs = runs_of(kit, experiment, pid)
        assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
        if sig == signal.SIGKILL:
            assert all(f"process {pid} " in r.data.tags["mbi_predict.killed_reason"] for r in runs)
    assert "RUNNING" not in {r.info.status for r in runs_of(kit, experiment)}
    made = client(kit)
    experiment_id = made.get_experiment_by_name(experiment).experiment_id
    from mlflow.entities import LoggedModelStatus

    assert LoggedModelStatus.PENDING not in {m.status for m in made.search_logged_models([experiment_id])}
    from mbi_predict.track import compare

    board = compare(experiment, kit.uri)
    assert set(board["status"]) == {"FINISHED", "KILLED"}, set(board["status"])
    shown = invoke("compare", "--experiment", experiment, "--tracking-uri", kit.uri, "--runs", "0", "--json")
    assert shown.exit_code == 0, shown.output
    assert {row["status"] for row in json.loads(shown.output)} == {"FINISHED", "KILLED"}


# --------------------------------------------------------------------------------------------------- points

def kill_run(kit: Kit, config: Path, out: Path, experiment: str, point: str, sig: int, *,
             group: bool = False) -> tuple[int, Ended]:
    folder = out.parent / f"{point}-{signal.Signals(sig).name}"
    if point == "early":  # held while harmonising the spec (after the first trial file), the experiment run open
        command = Command([*SHIM_CLI, "run", *run_command(config, out, kit)], folder, pause={
            "MBI_KILL_PAUSE": "mbi_predict.data.harmonise:read_raw_coded", "MBI_KILL_CALL": "2"})
        command.paused()
        assert run_opened(kit, experiment, command.pid)()
    else:
        command = Command([*CLI, "run", *run_command(config, out, kit)], folder)
        if point == "middle":  # leave-one-trial-out fitting: the workers exist, nothing is written yet
            command.wait_for(lambda: run_opened(kit, experiment, command.pid)() and len(command.workers()) >= 2
                             and not out.exists(), "leave-one-trial-out fitting")
        else:  # late: outputs staged in --out while MLflow is written and plots render
            command.wait_for(lambda: bool(staging_folders(out)), "the run's staging folder")
    return command.pid, command.signal(sig, group=group)


# ------------------------------------------------------------------------------------------------- run: fast

def test_sigterm_while_fitting_ends_the_run_killed_and_writes_nothing(kit, tmp_path):
    experiment = "kill_fast_sigterm"
    config, out = write_config(tmp_path, kit, experiment), tmp_path / "run"
    pid, ended = kill_run(kit, config, out, experiment, "middle", signal.SIGTERM)
    check_interrupted(ended, signal.SIGTERM)
    assert ended.returncode == 143  # 128 + SIGTERM
    assert not out.exists()
    runs = runs_of(kit, experiment, pid)
    assert {r.info.run_name.split("-")[0] for r in runs} >= {"reference", "xgboost", experiment}
    assert {r.info.status for r in runs} == {"KILLED"}
    assert {r.data.tags.get("mbi_predict.killed_reason") for r in runs} == {"SIGTERM"}


# ------------------------------------------------------------------------------------------------- run: slow

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_run_killed_early_middle_and_late_then_the_next_run_works(kit, tmp_path, sig):
    experiment = f"kill_{signal.Signals(sig).name.lower()}"
    config, out = write_config(tmp_path, kit, experiment), tmp_path / "run"
    killed = []
    for point in ("early", "middle", "late"):
        pid, ended = kill_run(kit, config, out, experiment, point, sig)
        killed.append(pid)
        check_interrupted(ended, sig)
        if sig == signal.SIGKILL:
            assert ended.returncode == -signal.SIGKILL and not ended.stderr
        check_run_folder(out, sig, kit)
        if point != "late":
            assert not out.exists(), point  # nothing is written before the outputs are staged
        check_runs_after(kit, experiment, pid, sig)
    check_next_run(kit, config, out, experiment, killed, sig)


@pytest.mark.slow
def test_ctrl_c_to_the_group_while_fitting(kit, tmp_path):
    """Ctrl-C in a terminal reaches the workers too: they start with SIGINT blocked (`mbi_predict.workers`), so none
    prints a traceback, even one still importing when the signal lands."""
    experiment = "kill_group_middle"
    config, out = write_config(tmp_path, kit, experiment), tmp_path / "run"
    pid, ended = kill_run(kit, config, out, experiment, "middle", signal.SIGINT, group=True)
    check_interrupted(ended, signal.SIGINT)
    assert ended.returncode == 130 and not out.exists()
    check_runs_after(kit, experiment, pid, signal.SIGINT)


@pytest.mark.slow
def test_sigterm_to_the_group_while_plots_render(kit, tmp_path):
    """A batch scheduler's stop (or Ctrl-C in a terminal) reaches the plot workers as well as the main process. Held
    while the model runs' results are logged, signalled once the first figure is rendered (more are on their way)."""
    experiment = "kill_group_plots"
    config, out = write_config(tmp_path, kit, experiment), tmp_path / "run"
    command = Command([*SHIM_CLI, "run", *run_command(config, out, kit)], tmp_path / "late", pause={
        "MBI_KILL_PAUSE": "mbi_predict.track.run:ExperimentRun.log_results"})
    command.paused()
    command.wait_for(lambda: any(p for f in staging_folders(out) for p in f.glob("plots/*.png")), "the first figure")
    ended = command.signal(signal.SIGTERM, group=True)
    check_run_folder(out, signal.SIGTERM, kit)
    check_runs_after(kit, experiment, command.pid, signal.SIGTERM)  # KILLED even so: track.run follows the chain
    check_interrupted(ended, signal.SIGTERM)


@pytest.mark.slow
def test_an_interrupted_run_leaves_no_empty_out_folder(kit, tmp_path):
    experiment = "kill_empty_out"
    config, out = write_config(tmp_path, kit, experiment), tmp_path / "run"
    _, ended = kill_run(kit, config, out, experiment, "late", signal.SIGINT)
    check_interrupted(ended, signal.SIGINT)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, id="SIGKILL"),
                                 pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow),
                                 pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.slow)])
def test_killed_while_creating_the_store_leaves_a_store_the_next_run_can_use(kit, tmp_path, sig):
    """The earliest point of a first run: MLflow migrating a new sqlite store (dozens of steps). A store stopped
    half-way used to be unusable for good ("table _alembic_tmp_tags already exists")."""
    from mbi_predict.track import ExperimentRun, check_tracking_uri

    store = tmp_path / "new.db"
    uri = f"sqlite:///{store}"
    config = write_config(tmp_path, kit, "kill_store")
    command = Command([*SHIM_CLI, "run", str(config), "--out", str(tmp_path / "run"), "--tracking-uri", uri],
                      tmp_path / "first", pause={"MBI_KILL_PAUSE": "mlflow.store.db.utils:_upgrade_db"})
    command.paused()
    ended = command.signal(sig)
    check_interrupted(ended, sig)
    assert not (tmp_path / "run").exists()
    left = sorted(p.name for p in tmp_path.glob("*new.db*"))
    assert left in ([], ["new.db.lock"]) if sig in INTERRUPT else \
        [name for name in left if name != "new.db.lock" and not name.startswith(".new.db.creating-")] == [], left
    assert check_tracking_uri(uri) == uri  # the next process removes a SIGKILLed one's half-made store
    with ExperimentRun(uri, "after_the_kill", models=[{"name": "reference", "estimator": "reference"}]) as run:
        pass
    assert status_of(uri, run.run_id) == "FINISHED"
    assert sorted(p.name for p in tmp_path.glob("*new.db*")) == ["new.db", "new.db.lock"]


# ------------------------------------------------------------------------------------------------- harmonise

def harmonised(out: Path) -> list[Path]:
    from mbi_predict.data.publish import harmonised_paths

    return harmonised_paths(out / "ipd.parquet", out / "report")


def check_harmonised_set(out: Path, sig: int) -> str:
    """Absent (the folders this command made removed), or complete and consistent; returns which."""
    from mbi_predict.data.publish import read_parquet_metadata

    targets = harmonised(out)
    hidden = hidden_entries(out)
    if sig in INTERRUPT:
        assert not hidden, hidden
    else:  # at most the staging folders of the set (beside the table and in the report folder)
        left = [entry for folder in (out, out / "report") if folder.is_dir() for entry in folder.iterdir()
                if entry.name.startswith(".")]
        assert all(entry.name.startswith(".mbi-staging.") and entry.is_dir() for entry in left), left
    table = out / "ipd.parquet"
    if table.exists():
        assert all(p.exists() for p in targets), [p.name for p in targets if not p.exists()]
        sidecar = json.loads((out / "ipd.meta.json").read_text())
        assert sidecar == read_parquet_metadata(table), "the sidecar describes another table"
        return "complete"
    if sig in INTERRUPT:
        assert not visible_files(out), sorted(visible_files(out))
    return "absent"


def harmonise_args(spec: Path, out: Path) -> list[str]:
    return ["harmonise", str(spec), "--out", str(out / "ipd.parquet"), "--report", str(out / "report")]


POINTS = {
    "reading": {"MBI_KILL_PAUSE": "mbi_predict.data.harmonise:read_raw_coded", "MBI_KILL_CALL": "2"},
    "staged": {"MBI_KILL_PAUSE": "mbi_predict.data.publish:_write_table"},
    # held inside the renames; an interrupt there is held until the set is published, so the pause is short
    "publishing": {"MBI_KILL_PAUSE": "os:replace", "MBI_KILL_WHEN": "harmonised/ipd.parquet", "MBI_KILL_SECONDS": "3"},
}
FAST_HARMONISE = {("staged", signal.SIGTERM), ("publishing", signal.SIGKILL)}


@pytest.mark.parametrize(("point", "sig"), [
    pytest.param(point, sig, id=f"{point}-{sig.name}",
                 marks=() if (point, sig) in FAST_HARMONISE else pytest.mark.slow)
    for point in POINTS for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)])
def test_harmonise_killed_then_the_next_harmonise_works(kit, tmp_path, point, sig):
    out = tmp_path / "harmonised"
    if point == "publishing":  # a previous set is there: it must never be paired with the new set's files
        first = Command([*CLI, *harmonise_args(kit.other, out)], tmp_path / "previous").finish()
        assert first.returncode == 0, first.stderr
    command = Command([*SHIM_CLI, *harmonise_args(kit.spec, out)], tmp_path / point, pause=POINTS[point])
    command.paused()
    ended = command.signal(sig)
    check_interrupted(ended, sig)
    state = check_harmonised_set(out, sig)
    if point == "reading" or (point == "staged" and sig in INTERRUPT):
        assert state == "absent" and not out.exists(), sorted(hidden_entries(out) | visible_files(out))
    if point == "publishing" and sig in INTERRUPT:
        assert state == "complete"  # the interrupt waited for the renames: the new set, whole
    nxt = Command([*CLI, *harmonise_args(kit.spec, out)], tmp_path / "next").finish()
    assert nxt.returncode == 0, nxt.stderr
    assert check_harmonised_set(out, sig) == "complete"
    assert not hidden_entries(out), hidden_entries(out)  # a SIGKILLed command's staging is gone too


def session_processes(leader: int) -> list[int]:
    """The processes of the session ``leader`` started (its workers keep it after their parent dies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == leader and fields[0] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", INTERRUPT, ids=["SIGINT", "SIGTERM"])
def test_the_demo_interrupted_in_its_meta_stage_leaves_no_worker(tmp_path, sig):
    """The demo's meta-analyses run in the worker pool its experiment reuses: SIGINT or SIGTERM while the stage holds
    the pool (paused at writing the first analysis's figures, the pool up) ends the demo with its interrupt status
    and one line, and no process of its session outlives it (before, a SIGTERM there ended the demo at once and
    left its workers running for minutes)."""
    command = Command(SHIM_CLI + ["demo", "--out", str(tmp_path / "out")], tmp_path / "cwd",
                      pause={"MBI_KILL_PAUSE": "mbi_predict.meta.plots:write_meta_plots"})
    try:
        command.paused()
        assert command.workers(), "the meta stage's worker pool should be up at the pause"
        command.process.send_signal(sig)
        command.process.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + 20
        while session_processes(command.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = session_processes(command.pid)
    finally:
        command.end_session()
    assert command.process.returncode == 128 + sig, command.err_path.read_text()[-800:]
    lines = [line for line in command.err_path.read_text().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    # the demo keeps the stages it finished (the raw files, the harmonised table): the line says so, not "no output"
    assert lines[0].startswith("interrupted: the stages the demo finished are in"), lines
    assert (tmp_path / "out" / "ipd.parquet").is_file()
    assert not left, f"processes of the demo's session still running after it ended: {left}"
