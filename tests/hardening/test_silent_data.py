"""Class 4, silently wrong data: infinite and implausible values, ids parsed as numbers, duplicate ids, two columns
of one name, YAML turning labels into booleans, and YAML alias bombs. Each is a one-line error (or, for ids and
labels, the right value), never a participant's value in the message."""

from __future__ import annotations

import csv
import time

import numpy as np
import pandas as pd
import pytest

from hardening_helpers import invoke, one_line_error
from mbi_predict.data.harmonise import harmonise
from mbi_predict.data.readers import load_ipd
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import DataError, SpecError
from mbi_predict.io import parse_yaml


def edit_csv(path, edit) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows[0], rows[1:])
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def set_cell(path, column: str, row: int, value: str) -> None:
    edit_csv(path, lambda header, body: body[row].__setitem__(header.index(column), value))


def harmonise_line(consortium, *needles):
    return one_line_error(invoke("harmonise", consortium / "consortium.yaml", "--out", consortium / "ipd.parquet"),
                          *needles)


@pytest.mark.parametrize("value", ["inf", "-Infinity", "NaN", "1_0"])
def test_non_finite_or_python_only_numbers_in_a_raw_column(consortium, value):
    set_cell(consortium / "raw" / "T01.csv", "age_years", 3, value)
    line = harmonise_line(consortium, "trial T01", "column age_years", "not finite numbers", "data row 4")
    assert value not in line
    assert not (consortium / "ipd.parquet").exists()


def test_implausible_age_is_an_error_with_a_count_not_the_value(consortium):
    set_cell(consortium / "raw" / "T01.csv", "age_years", 0, "999")
    set_cell(consortium / "raw" / "T01.csv", "age_years", 1, "-4")
    line = harmonise_line(consortium, "trial T01", "column age", "2 values outside the plausible range 10-110")
    assert "999" not in line


def test_the_plausible_range_is_configurable_in_the_spec(consortium):
    set_cell(consortium / "raw" / "T01.csv", "age_years", 0, "7")
    spec = consortium / "consortium.yaml"
    spec.write_text(spec.read_text().replace("trials:", "plausible_ranges: {age: [5, 110]}\ntrials:", 1))
    result = harmonise(spec)
    assert result.ipd["age"].min() == 7
    assert result.metadata["plausible_ranges"]["age"] == [5.0, 110.0]


def test_check_ipd_refuses_infinity_in_any_numeric_column_and_load_ipd_too(tmp_path):
    ipd = check_ipd(simulate_latent("galante2023", seed=1, n_trials=3, n=300).ipd)
    first = ipd["trial_id"].iloc[0]
    bad = ipd.copy()
    bad.loc[bad.index[:2], "baseline_distress"] = np.inf
    with pytest.raises(DataError) as excinfo:
        check_ipd(bad)
    assert f"trial {first}, column baseline_distress: 2 values are infinite" in str(excinfo.value)
    bad.to_parquet(tmp_path / "ipd.parquet")
    with pytest.raises(DataError, match="infinite"):
        load_ipd(tmp_path / "ipd.parquet")
    line = one_line_error(invoke("meta", tmp_path / "ipd.parquet", "--outcome", "distress_post"), "infinite")
    assert "inf " not in line


def test_ids_are_text_in_csv(consortium):
    ids = {0: "007", 1: "7", 2: "0012001", 3: "12001"}
    for row, value in ids.items():
        set_cell(consortium / "raw" / "T01.csv", "pid", row, value)
    table = harmonise(consortium / "consortium.yaml").ipd
    t01 = table.loc[table["trial_id"] == "T01", "participant_id"].tolist()
    assert t01[:4] == ["007", "7", "0012001", "12001"]


def test_ids_are_text_in_excel(consortium):
    frame = pd.read_csv(consortium / "raw" / "T01.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "pid"], frame.loc[1, "pid"] = "007", "7"
    numeric = [c for c in frame.columns if c not in ("pid", "arm_label", "gender", "education_level")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric)
    frame.to_excel(consortium / "raw" / "T01.xlsx", index=False, engine="openpyxl")
    spec = consortium / "consortium.yaml"
    spec.write_text(spec.read_text().replace("file: raw/T01.csv\n    format: csv", "file: raw/T01.xlsx\n    "
                                             "format: xlsx", 1))
    table = harmonise(spec).ipd
    assert table.loc[table["trial_id"] == "T01", "participant_id"].tolist()[:2] == ["007", "7"]


def test_numeric_ids_are_written_without_loss():
    from mbi_predict.data.readers import id_text
    values = pd.Series([2001.0, 1.5, float(2**60), np.nan, 7], dtype=object)
    assert id_text(values).tolist() == ["2001", "1.5", str(2**60), None, "7"]
    assert id_text(pd.Series([" 007 ", "7", ""])).tolist() == ["007", "7", None]


def test_duplicate_ids_within_a_trial_are_one_line_without_the_ids(consortium):
    set_cell(consortium / "raw" / "T01.csv", "pid", 5, "T01-0001")
    line = harmonise_line(consortium, "trial T01", "column pid", "1 participant ids occur more than once")
    assert "T01-0001" not in line


def test_two_columns_of_one_name_are_an_error(consortium):
    edit_csv(consortium / "raw" / "T01.csv", lambda header, body: header.__setitem__(header.index("gender"),
                                                                                       "age_years"))
    harmonise_line(consortium, "column age_years", "two columns have this name")


def test_yes_no_on_off_labels_stay_labels(consortium):
    path = consortium / "raw" / "T01.csv"
    edit_csv(path, lambda header, body: [row.__setitem__(header.index("arm_label"),
                                                         {"MBSR": "Yes", "waitlist": "No"}[row[header.index(
                                                             "arm_label")]]) for row in body])
    spec = consortium / "consortium.yaml"
    spec.write_text(spec.read_text().replace("      MBSR: mbi\n      waitlist: passive\n",
                                             "      Yes: mbi\n      No: passive\n", 1))
    table = harmonise(spec).ipd
    t01 = table[table["trial_id"] == "T01"]
    assert set(t01["arm"]) == {0, 1} and set(t01.loc[t01["arm"] == 0, "control_type"]) == {"passive"}
    assert parse_yaml("a: [Yes, No, on, off, y, n, true, False]", source="x", error=SpecError) == \
        {"a": ["Yes", "No", "on", "off", "y", "n", True, False]}


def test_an_alias_bomb_fails_fast_with_one_line(consortium):
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    spec = consortium / "consortium.yaml"
    spec.write_text("\n".join(lines) + "\nname: *l9\n" + spec.read_text().split("\n", 1)[1].replace(
        "name:", "description:", 1).replace("description:", "# description:", 1))
    started = time.perf_counter()
    harmonise_line(consortium, "expands to more than")
    assert time.perf_counter() - started < 5
    with pytest.raises(SpecError, match="refers to the node that contains it"):
        parse_yaml("a: &a [1, *a]", source="x", error=SpecError)
