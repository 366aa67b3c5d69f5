"""Class 9, property: whatever is done to the raw files and the spec of a consortium (cells, headers, codings,
deleted columns, truncated files, injected inf/NaN/text), `mbi-predict harmonise` either succeeds with a valid IPD
table and its sidecars, or fails with exit 2 and exactly one line, having written nothing; the inputs are
byte-identical afterwards."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hardening_helpers import invoke, tree_hashes
from mbi_predict.data.readers import load_ipd

CELLS = ["inf", "-inf", "NaN", "nan", "1_0", "abc", "", " ", "-99", "999", "1e400", " 3 ", "0x10", "\u2603", "1,5",
         "Yes", "off", "007", "-1", "2.5", "1e3"]
SPEC_EDITS = [("MBSR: mbi", "MBSR: mb"), ("MBSR: mbi", "Yes: mbi"), ("waitlist: passive", "on: passive"),
              ("F: female", "F: woman"), ("instrument: CORE-10", "instrument: CORE-11"), ("post: 0", "post: -3"),
              ("fu12w: 12", "fu12w: 2"), ("missing_codes:\n    - -99", "missing_codes: []"),
              ("file: raw/T01.csv", "file: raw/T09.csv"), ("file: raw/T02.sav", "file: ../T02.sav"),
              ("standardisation: within_trial", "standardisation: norm"), ("out_of_range: error",
                                                                            "out_of_range: set_missing"),
              ("participant_id: pid", "participant_id: age_years"), ("trials:", "trials: &t\n  "),
              ("name:", "name: &a [*a]\nx:")]

mutation = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, 80), st.integers(0, 500), st.sampled_from(CELLS)),
    st.tuples(st.just("header"), st.integers(0, 80), st.sampled_from(["pid", "age_years", "", "x y", "gender"])),
    st.tuples(st.just("drop_column"), st.integers(0, 80)),
    st.tuples(st.just("duplicate_row"), st.integers(0, 80)),
    st.tuples(st.just("truncate"), st.sampled_from(["raw/T01.csv", "raw/T02.sav", "raw/T03.dta",
                                                    "consortium.yaml"]), st.floats(0.0, 0.99)),
    st.tuples(st.just("spec"), st.sampled_from(SPEC_EDITS)),
)


def _rewrite_csv(path: Path, edit) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows:
        return
    edit(rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _apply(folder: Path, change: tuple) -> None:
    kind, raw_csv = change[0], folder / "raw" / "T01.csv"
    if kind == "cell":
        _, column, row, value = change

        def edit(rows):
            body = rows[1:]
            if body:
                target = body[row % len(body)]
                target[column % len(target)] = value
        _rewrite_csv(raw_csv, edit)
    elif kind == "header":
        _rewrite_csv(raw_csv, lambda rows: rows[0].__setitem__(change[1] % len(rows[0]), change[2]))
    elif kind == "drop_column":
        _rewrite_csv(raw_csv, lambda rows: [r.pop(change[1] % len(rows[0])) for r in rows if len(r) == len(rows[0])])
    elif kind == "duplicate_row":
        _rewrite_csv(raw_csv, lambda rows: rows.append(list(rows[1 + change[1] % (len(rows) - 1)]))
                     if len(rows) > 1 else None)
    elif kind == "truncate":
        path = folder / change[1]
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * change[2])])
    else:
        spec = folder / "consortium.yaml"
        old, new = change[1]
        spec.write_text(spec.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(mutation, min_size=1, max_size=3))
@example(changes=[("cell", 2, 3, "inf")])           # age_years: infinity must not reach the table
@example(changes=[("cell", 5, 0, " 3 ")])           # an item with spaces: a number after all
@example(changes=[("cell", 5, 7, "NaN")])           # text NaN is not a missing code unless declared
@example(changes=[("cell", 2, 9, "1_0")])           # Python's float() reads 10; a raw file does not
@example(changes=[("cell", 0, 1, "T01-0001")])      # duplicate participant id
@example(changes=[("header", 3, "age_years")])      # two columns of one name
@example(changes=[("truncate", "raw/T02.sav", 0.5)])
@example(changes=[("spec", ("MBSR: mbi", "Yes: mbi"))])
def test_harmonise_succeeds_or_fails_in_one_line_and_never_touches_its_inputs(consortium_template, changes):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "consortium"
        shutil.copytree(consortium_template, folder)
        for change in changes:
            _apply(folder, change)
        before = tree_hashes(folder)
        out = Path(scratch) / "out"
        result = invoke("harmonise", folder / "consortium.yaml", "--out", out / "ipd.parquet", "--report",
                        out / "report")
        assert tree_hashes(folder) == before, "an input was modified"
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            table = load_ipd(out / "ipd.parquet")
            assert len(table) > 0
            numbers = table.select_dtypes("number").to_numpy(dtype=float)
            assert not np.isinf(numbers).any(), "an infinite value reached the table"
            assert table.groupby("trial_id")["participant_id"].apply(lambda ids: ids.is_unique).all()
            assert (out / "ipd.meta.json").is_file() and (out / "ipd.missingness.csv").is_file()
            assert (out / "report" / "harmonisation_report.md").is_file()
        else:
            assert result.exit_code == 2, (changes, result.output)
            assert len(lines) == 1, (changes, result.output)
            assert not out.exists() or not any(out.rglob("*")), "partial output left behind"
