"""Class 8, harmonise outputs as one set: a reader never sees the table without its sidecar and missingness table,
whenever the process stops; an error publishes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from mbi_predict.data.harmonise import harmonise
from mbi_predict.data.publish import write_harmonised


def _state(folder):
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _complete_whenever_table_visible(names: set[str]) -> bool:
    return "ipd.parquet" not in names or {"ipd.meta.json", "ipd.missingness.csv"} <= names


def test_the_table_is_published_last(consortium, monkeypatch):
    result = harmonise(consortium / "consortium.yaml")
    out = consortium / "out"
    out.mkdir()
    seen: list[set[str]] = []
    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        seen.append(_state(out))

    monkeypatch.setattr(os, "replace", replace)
    written = write_harmonised(result, out / "ipd.parquet")
    assert seen and all(_complete_whenever_table_visible(state) for state in seen), seen
    assert seen[-1] == {p.name for p in written}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_an_error_while_writing_publishes_nothing(consortium, monkeypatch):
    from mbi_predict.data import publish
    result = harmonise(consortium / "consortium.yaml")
    out = consortium / "out"

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", "ipd.parquet")

    monkeypatch.setattr(publish, "_write_table", broken)
    with pytest.raises(OSError):
        write_harmonised(result, out / "ipd.parquet", report_dir=out / "report")
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.slow
def test_sigkill_at_any_moment_never_leaves_the_table_alone(consortium):
    spec = consortium / "consortium.yaml"
    command = [sys.executable, "-m", "mbi_predict.cli", "harmonise", str(spec)]
    for attempt, delay in enumerate([0.5, 1.0, 1.5, 2.0, 2.3, 2.6, 2.9, 3.2, 3.6, 4.0]):
        out = consortium / f"out{attempt}"
        process = subprocess.Popen([*command, "--out", str(out / "ipd.parquet")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        names = _state(out) if out.exists() else set()
        assert _complete_whenever_table_visible(names), (delay, names)
        assert not [n for n in names if n.endswith(".part")]
