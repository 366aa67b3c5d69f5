"""The README's performance table is the one the benchmarks' raw rows give (`experiments/benchmarks/readme_table.py`):
a figure typed by hand, or a raw row added without regenerating the table, fails here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


@pytest.fixture(scope="module")
def readme_table():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import readme_table
        yield readme_table
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_readme_table_is_generated_from_the_raw_rows(readme_table, capsys):
    assert readme_table.main(["--check"]) == 0, capsys.readouterr().err


def test_a_hand_edited_figure_fails_the_check(readme_table, monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    text = readme_table.README.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `make demo`"))
    readme.write_text(text.replace(row, row.replace(" s ", " s (typed by hand) ", 1)), encoding="utf-8")
    monkeypatch.setattr(readme_table, "README", readme)
    assert readme_table.main(["--check"]) == 1
    assert readme_table.main(["--write"]) == 0 and readme.read_text(encoding="utf-8") == text


def _demo(seconds: float, **provenance) -> dict:
    made = {"commit": "abc1234", "dirty": False, "started_utc": "2026-12-01 10:00", "load": [0.2, 0.3, 0.4],
            "ended_utc": "2026-12-01 10:04", "load_end": [1.9, 1.0, 0.5], **provenance}
    return {"benchmark": "demo_end_to_end", "models": 14, "wall_seconds": [seconds, seconds + 1.0],
            "cpu_seconds": [50.0, 52.0], "peak_child_rss_gib": 0.5, "target_seconds": 30.0, "provenance": made}


def test_the_target_verdict_and_conditions_come_from_the_rows(readme_table, monkeypatch):
    monkeypatch.setattr(readme_table, "rows_of", lambda name: [_demo(100.0)])
    missed = readme_table.demo_row()
    assert "100 s and 101 s" in missed["measured"] and "CPU 51 s per run" in missed["measured"]
    assert missed["target"] == "<= 30 s: **not met**"
    assert missed["when"] == "2026-12-01 10:00-10:04 UTC, abc1234, load 0.2-1.9"
    monkeypatch.setattr(readme_table, "rows_of", lambda name: [_demo(100.0), _demo(29.0, dirty=True)])
    latest = readme_table.demo_row()   # the latest run of the file is the one shown
    assert latest["target"] == "<= 30 s: met" and "with uncommitted changes" in latest["when"]


def test_rows_written_before_provenance_say_where_their_conditions_come_from(readme_table):
    assert readme_table.when({}, "harm_rates_12x2400.jsonl").endswith("(RESULTS 13)")
    assert readme_table.when({}, "unknown.jsonl") == "conditions not recorded"
