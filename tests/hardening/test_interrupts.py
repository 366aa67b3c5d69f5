"""The pieces the kill tests rely on, in-process: SIGTERM raises while a set of files is staged (so the staging goes),
an interrupt during the publishing renames waits for them, and a SIGKILLed writer's staging folder is removed by the
next writer on the same host (and nothing else is)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mbi_predict import io


def test_sigterm_while_a_set_is_staged_removes_the_staging_and_the_folders_made(tmp_path):
    out = tmp_path / "new" / "deeper"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(io.Terminated):
        with io.output_set([out / "a.csv", out / "table.parquet"]) as temps:
            temps[0].write_text("x")
            signal.raise_signal(signal.SIGTERM)
    assert not (tmp_path / "new").exists()
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(io.Terminated, KeyboardInterrupt)


def test_an_interrupt_during_the_renames_waits_for_the_whole_set(tmp_path, monkeypatch):
    real_replace = os.replace
    seen = []

    def replace(src, dst):
        if not seen:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first rename
        seen.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with io.output_set([tmp_path / "a.csv", tmp_path / "b.json", tmp_path / "table.parquet"]) as temps:
            for tmp in temps:
                tmp.write_text("new")
    assert seen == ["a.csv", "b.json", "table.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.json", "table.parquet"]


def test_the_previous_table_is_never_paired_with_a_new_set(tmp_path, monkeypatch):
    (tmp_path / "meta.json").write_text("old")
    (tmp_path / "table.parquet").write_text("old")
    real_replace = os.replace
    states = []

    def replace(src, dst):
        real_replace(src, dst)
        names = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
        if "table.parquet" in names:
            states.append(((tmp_path / "meta.json").read_text(), (tmp_path / "table.parquet").read_text()))

    monkeypatch.setattr(io.os, "replace", replace)
    with io.output_set([tmp_path / "meta.json", tmp_path / "table.parquet"]) as temps:
        for tmp in temps:
            tmp.write_text("new")
    assert states and all(meta == table for meta, table in states), states


def test_a_dead_writers_staging_is_removed_and_nothing_else(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    here = io.staging_prefix().split(".")[2]
    assert io.staging_prefix() == f".mbi-staging.{here}.{os.getpid()}."
    folders = {name: tmp_path / name for name in (
        f".mbi-staging.{here}.{dead}.abc",       # this host, dead: removed
        f".mbi-staging.{here}.{os.getpid()}.def",  # this host, alive: kept
        f".mbi-staging.other-host.{dead}.ghi",    # another host: kept
        ".mbi-staging.jkl",                         # an older name without its owner: kept
    )}
    for folder in folders.values():
        folder.mkdir()
        (folder / "ipd.parquet").write_text("x")
    assert io.remove_stale_staging(tmp_path) == [folders[f".mbi-staging.{here}.{dead}.abc"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(folders) - {f".mbi-staging.{here}.{dead}.abc"})


def test_process_alive():
    assert io.process_alive(os.getpid())
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    assert not io.process_alive(dead)
    assert not io.process_alive(0)


# ------------------------------------------------- interrupts that land inside a library's calls or finalisers

class _Dies:
    """An object whose finaliser is cut off by Ctrl-C (as SQLAlchemy's registry cleanup was in a kill test)."""

    def __init__(self, interrupt: type[KeyboardInterrupt] = KeyboardInterrupt) -> None:
        self.interrupt = interrupt

    def __del__(self) -> None:
        raise self.interrupt()


def _wait_for_a_signal(seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.001)
    pytest.fail(f"no interrupt within {seconds} s")


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_again_and_not_printed(capsys):
    from mbi_predict.interrupts import redelivered_interrupts

    before = sys.unraisablehook
    with pytest.raises(KeyboardInterrupt):
        with redelivered_interrupts():
            _Dies()  # Python swallows the finaliser's KeyboardInterrupt; the signal comes back within moments
            _wait_for_a_signal()
    assert "Exception ignored" not in capsys.readouterr().err
    assert sys.unraisablehook is before


def test_a_swallowed_sigterm_comes_back_as_sigterm():
    from mbi_predict.interrupts import redelivered_interrupts, sigterm_interrupts

    with pytest.raises(io.Terminated):
        with sigterm_interrupts(), redelivered_interrupts():
            _Dies(io.Terminated)
            _wait_for_a_signal()


def test_other_unraisable_errors_go_to_the_hook_in_place(monkeypatch):
    from mbi_predict.interrupts import redelivered_interrupts

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(type(unraisable.exc_value)))

    class Fails:
        def __del__(self):
            raise ValueError("not an interrupt")

    with redelivered_interrupts():
        Fails()
    assert seen == [ValueError]


def test_calls_through_interrupts_held_finish_before_the_interrupt_lands():
    from mbi_predict.interrupts import InterruptsHeld

    class Store:
        label = "store"

        def __init__(self):
            self.written = []

        def write(self, value):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of a transaction
            self.written.append(value)
            return value

    store = Store()
    held = InterruptsHeld(store)
    assert held.label == "store" and held.target is store
    with pytest.raises(KeyboardInterrupt):
        held.write(1)
    assert store.written == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_SWALLOWED_CTRL_C = """
import sys
import time
from mbi_predict.cli import app
from mbi_predict.data import rawsim

real = rawsim.simulate_consortium_files

class Dies:
    def __del__(self):
        raise KeyboardInterrupt

def cut_off(*args, **kwargs):
    Dies()  # the user's Ctrl-C lands in a finaliser the garbage collector runs mid-command ...
    time.sleep(30)  # ... which goes on working (the signal comes back within moments)
    return real(*args, **kwargs)

rawsim.simulate_consortium_files = cut_off
sys.argv = ["mbi-predict", "simulate", "--out", sys.argv[1], "--n", "200", "--trials", "2"]
app()
"""


def test_a_ctrl_c_swallowed_by_a_finaliser_still_interrupts_the_command(tmp_path):
    """End to end: the command stops with exit 130 and its one line, and writes nothing (without the redelivery it
    went on to exit 0 with five lines of "Exception ignored" on stderr)."""
    script = tmp_path / "swallowed.py"
    script.write_text(_SWALLOWED_CTRL_C)
    out = tmp_path / "sim"
    ended = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120)
    lines = [line for line in ended.stderr.splitlines() if line.strip()]
    assert ended.returncode == 130, ended.stderr[-800:]
    assert lines == ["interrupted: no partial output was left behind"], lines
    assert not out.exists()


def _mkdtemp_then_ctrl_c(real):
    def mkdtemp(*args, **kwargs):
        folder = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # the folder exists, its name not yet returned: the kill test's moment
        return folder
    return mkdtemp


def test_ctrl_c_the_moment_the_run_staging_folder_appears_leaves_nothing(tmp_path, monkeypatch):
    """CI caught a run SIGINTed right after its staging folder appeared leaving that folder behind: the signal
    landed between the folder's creation and its name being bound, so nothing knew to remove it."""
    import tempfile

    from mbi_predict.pipeline.sinks import run_folder

    monkeypatch.setattr(run_folder.tempfile, "mkdtemp", _mkdtemp_then_ctrl_c(tempfile.mkdtemp))
    with pytest.raises(KeyboardInterrupt), run_folder.staging_folder(tmp_path / "new" / "run"):
        pass  # not reached: the interrupt is delivered once the folder is bound, before the block
    assert not (tmp_path / "new").exists()


def test_ctrl_c_the_moment_an_output_set_staging_folder_appears_leaves_nothing(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(io.tempfile, "mkdtemp", _mkdtemp_then_ctrl_c(tempfile.mkdtemp))
    kept = tmp_path / "kept.csv"
    kept.write_text("old")
    with pytest.raises(KeyboardInterrupt), io.output_set([tmp_path / "new" / "a.csv", kept]):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.csv"] and kept.read_text() == "old"


def test_ctrl_c_as_the_plot_workers_start_waits_for_them_before_the_staging_goes(tmp_path, monkeypatch):
    """An interrupt that lands while the renderer starts its workers (before its name is bound) must still wait for
    them: a worker writing a figure after the staging folder was removed leaves it behind."""
    import threading
    import time
    from types import SimpleNamespace

    from mbi_predict.pipeline import run as pipeline_run

    started = []

    class SlowRenderer:
        def __init__(self, tasks, n_jobs):
            started.append(self)
            self.folder = Path(tasks)
            self.thread = threading.Thread(target=self.render)
            self.thread.start()
            signal.raise_signal(signal.SIGINT)

        def render(self):
            time.sleep(0.3)
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "late.png").write_bytes(b"png")

        def wait(self):
            self.thread.join()

    monkeypatch.setattr(pipeline_run, "plot_tasks", lambda finished, folder: folder)
    monkeypatch.setattr(pipeline_run, "PlotRenderer", SlowRenderer)
    finished = SimpleNamespace(inputs=SimpleNamespace(config=SimpleNamespace(validation=SimpleNamespace(n_jobs=1))))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pipeline_run._write(finished, None, out, save_predictions=False)
    started[0].wait()  # the worker has written what it would
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_ctrl_c_the_moment_an_atomic_temporary_file_appears_leaves_nothing(tmp_path, monkeypatch):
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        made = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)
        return made

    monkeypatch.setattr(io.tempfile, "mkstemp", mkstemp)
    with pytest.raises(KeyboardInterrupt), io.atomic_path(tmp_path / "out.json"):
        pass
    assert list(tmp_path.iterdir()) == []
