"""The pieces the kill tests rely on, in-process: SIGTERM raises while a set of files is staged (so the staging goes),
an interrupt during the publishing renames waits for them, and a SIGKILLed writer's staging folder is removed by the
next writer on the same host (and nothing else is)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

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
