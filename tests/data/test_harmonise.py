"""Harmonising a small hand-made trial: correct values, and every kind of bad input as a one-line error."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mbi_predict.data.harmonise import UndeclaredLabel, harmonise, recode
from mbi_predict.data.spec import label_key
from mbi_predict.errors import DataError, SpecError
from mbi_predict.io import sha256_file

PHQ_ITEMS = [f"phq_{i}_t0" for i in range(1, 10)]


def trial_frame() -> pd.DataFrame:
    """Eight participants, three arms; PHQ-9 as items at baseline and a total at 12 weeks."""
    rng = np.random.default_rng(1)
    items = rng.integers(0, 4, size=(8, 9)).astype(object)
    items[0, 3] = -99  # one skipped item: prorated (8 of 9 answered)
    items[1, :3] = "NA"  # three skipped: fewer than 80% answered -> missing total
    frame = pd.DataFrame(items, columns=PHQ_ITEMS)
    frame.insert(0, "pid", [f"P{i}" for i in range(1, 9)])
    frame.insert(1, "grp", ["MBSR", "waitlist", "MBSR", "exercise", "MBSR", "waitlist", "exercise", "MBSR"])
    frame.insert(2, "age", [30, 41, -99, 25, 52, 38, 47, 29])
    frame.insert(3, "sex", ["F", "M", "F", "F", " ", "M", "F", "X"])
    frame["phq_w12"] = [5, 9, -99, 12, 3, 20, 7, 1]
    return frame


TRIAL_SPEC = {
    "file": "t01.csv",
    "missing_codes": [-99, "NA"],
    "columns": {"participant_id": "pid", "arm": "grp", "age": "age", "gender": "sex"},
    "arms": {"MBSR": "mbi", "waitlist": "passive", "exercise": "active"},
    "recodes": {"gender": {"F": "female", "M": "male", "X": "other"}},
    "followups": {"w12": 12},
    "instruments": {"depression": {"baseline": {"instrument": "PHQ-9", "items": "phq_{i}_t0"},
                                   "w12": {"instrument": "PHQ-9", "total": "phq_w12"}}},
    "traits": {"mbi_type": "MBSR", "n_sessions": 8, "delivery": "group_in_person", "setting": "community",
               "country": "UK"},
}


def write_consortium(tmp_path, frame=None, trial_changes=None, **top) -> str:
    frame = trial_frame() if frame is None else frame
    frame.to_csv(tmp_path / "t01.csv", index=False)
    trial = copy.deepcopy(TRIAL_SPEC)
    trial.update(trial_changes or {})
    path = tmp_path / "consortium.yaml"
    path.write_text(yaml.safe_dump({"name": "mini", **top, "trials": {"T01": trial}}), encoding="utf-8")
    return str(path)


def one_line_error(spec_path, error=DataError, **kwargs) -> str:
    with pytest.raises(error) as info:
        harmonise(spec_path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def expected_totals() -> np.ndarray:
    frame = trial_frame()
    items = frame[PHQ_ITEMS].replace({-99: np.nan, "NA": np.nan}).astype(float).to_numpy()
    totals = np.nansum(items, axis=1) * 9 / np.isfinite(items).sum(axis=1)
    totals[np.isfinite(items).sum(axis=1) < 8] = np.nan
    return totals


def test_values_covariates_and_arms(tmp_path):
    result = harmonise(write_consortium(tmp_path))
    ipd = result.ipd
    assert len(ipd) == 8  # intention to treat: nobody is dropped
    assert ipd["participant_id"].tolist() == [f"P{i}" for i in range(1, 9)]
    assert ipd["arm"].tolist() == [1, 0, 1, 0, 1, 0, 0, 1]
    def text(column):
        return [None if pd.isna(v) else v for v in ipd[column]]

    assert text("control_type") == [None, "passive", None, "active", None, "passive", "active", None]
    assert text("gender") == ["female", "male", "female", "female", None, "male", "female", "other"]
    assert np.isnan(ipd["age"][2]) and ipd["age"][0] == 30
    totals = expected_totals()
    np.testing.assert_allclose(ipd["baseline_depression_raw"], totals)
    assert math.isnan(ipd["baseline_depression_raw"][1]) and ipd["baseline_depression_raw"][0] % 1 != 0
    mean, sd = np.nanmean(totals), np.nanstd(totals, ddof=1)
    np.testing.assert_allclose(ipd["baseline_depression"], (totals - mean) / sd)
    follow = np.array([5, 9, np.nan, 12, 3, 20, 7, 1], dtype=float)
    np.testing.assert_allclose(ipd["depression_fu1_6"], (follow - mean) / sd)
    rci = (follow - totals) / (math.sqrt(2) * sd * math.sqrt(1 - 0.89))
    expected_flag = np.where(np.isnan(rci), np.nan, (rci > 1.96).astype(float))
    np.testing.assert_array_equal(ipd["deteriorated_depression_fu1_6"], expected_flag)
    assert result.metadata["trials"]["T01"]["prorated_totals"] == {"phq_{i}_t0": 1}
    assert result.metadata["standardisation"] == "within_trial"
    assert set(ipd["mbi_type"]) == {"MBSR"} and set(ipd["setting"]) == {"community"}


def test_norm_standardisation_uses_the_registry_norm(tmp_path):
    ipd = harmonise(write_consortium(tmp_path), standardisation="norm").ipd
    np.testing.assert_allclose(ipd["baseline_depression"], (expected_totals() - 2.91) / 3.52)
    np.testing.assert_allclose(ipd["depression_fu1_6"][:2], (np.array([5, 9]) - 2.91) / 3.52)


def test_input_file_is_not_modified(tmp_path):
    spec = write_consortium(tmp_path)
    before = sha256_file(tmp_path / "t01.csv")
    harmonise(spec)
    assert sha256_file(tmp_path / "t01.csv") == before


def test_unreadable_file(tmp_path):
    spec = write_consortium(tmp_path, trial_changes={"file": "t01.sav"})
    (tmp_path / "t01.sav").write_bytes(b"not spss at all")
    message = one_line_error(spec)
    assert f"file {tmp_path / 't01.sav'}" in message and "cannot read as sav" in message


def test_mapped_column_absent(tmp_path):
    spec = write_consortium(tmp_path, frame=trial_frame().drop(columns="phq_w12"))
    message = one_line_error(spec)
    assert message.startswith(f"file {tmp_path / 't01.csv'}, trial T01, column phq_w12: mapped column is absent")
    assert "instruments.depression.w12" in message


def test_unknown_instrument_is_a_spec_error(tmp_path):
    instruments = copy.deepcopy(TRIAL_SPEC["instruments"])
    instruments["depression"]["w12"]["instrument"] = "PHQ10"
    message = one_line_error(write_consortium(tmp_path, trial_changes={"instruments": instruments}), SpecError)
    assert message == (f"file {tmp_path / 'consortium.yaml'}, trial T01: key instruments.depression.w12.instrument: "
                       "unknown instrument 'PHQ10'")


def test_arm_label_without_mapping(tmp_path):
    frame = trial_frame()
    frame.loc[3, "grp"] = "yoga"
    message = one_line_error(write_consortium(tmp_path, frame=frame))
    assert "trial T01, column grp: arm label 'yoga' has no mapping under `arms`" in message


def test_duplicate_participant_ids(tmp_path):
    frame = trial_frame()
    frame.loc[5, "pid"] = "P2"
    message = one_line_error(write_consortium(tmp_path, frame=frame))
    assert "trial T01, column pid: 1 participant ids occur more than once (first repeat at data row 6)" in message
    assert "P2" not in message  # ids are not echoed


def test_trial_with_one_arm(tmp_path):
    frame = trial_frame()
    frame["grp"] = "MBSR"
    message = one_line_error(write_consortium(tmp_path, frame=frame))
    assert "trial T01, column grp: the data hold only one arm" in message


def test_out_of_range_under_error_and_set_missing(tmp_path):
    frame = trial_frame()
    frame.loc[2, "phq_4_t0"] = 7  # items are 0-3
    frame.loc[6, "phq_w12"] = 28  # totals are 0-27
    message = one_line_error(write_consortium(tmp_path, frame=frame))
    assert "trial T01, column phq_4_t0: 1 values outside the item range 0-3 of PHQ-9 (first at data row 3)" in message
    result = harmonise(write_consortium(tmp_path, frame=frame, out_of_range="set_missing"))
    assert result.metadata["trials"]["T01"]["out_of_range_set_missing"] == {"phq_4_t0": 1, "phq_w12": 1}
    assert np.isnan(result.ipd["depression_fu1_6"][6])
    assert not np.isnan(result.ipd["baseline_depression"][2])  # 8 of 9 items left: prorated


def test_undeclared_gender_label_and_non_numeric_score(tmp_path):
    frame = trial_frame()
    frame.loc[0, "sex"] = "female"
    assert "column sex: value 'female' has no mapping under recodes.gender" in one_line_error(
        write_consortium(tmp_path, frame=frame))
    frame = trial_frame()
    frame["phq_w12"] = frame["phq_w12"].astype(object)
    frame.loc[0, "phq_w12"] = "refused"
    message = one_line_error(write_consortium(tmp_path, frame=frame))
    assert "column phq_w12: 1 cells are not finite numbers (first at data row 1)" in message
    assert "refused" not in message  # cell content is not echoed


def test_missing_participant_id_or_arm_is_an_error_not_a_dropped_row(tmp_path):
    frame = trial_frame()
    frame.loc[4, "grp"] = "NA"
    assert "column grp: 1 rows have no arm" in one_line_error(write_consortium(tmp_path, frame=frame))


LABELS = st.text(alphabet="abcXYZ12 -", min_size=1, max_size=6).filter(lambda s: s.strip() != "")


@given(st.dictionaries(LABELS, st.sampled_from(["female", "male", "other"]), min_size=1, max_size=6), st.data())
def test_recode_maps_every_declared_label_and_rejects_undeclared(declared, data):
    mapping = {label_key(k): v for k, v in declared.items()}
    raw = data.draw(st.lists(st.sampled_from(sorted(declared)), min_size=1, max_size=20))
    labels = pd.Series([label_key(v) for v in raw] + [None], dtype=object)
    out = recode(labels, mapping)
    assert out.tolist()[:-1] == [mapping[label_key(v)] for v in raw] and out.iloc[-1] is None
    stranger = data.draw(LABELS.filter(lambda s: label_key(s) not in mapping))
    with pytest.raises(UndeclaredLabel) as info:
        recode(pd.Series([raw[0], label_key(stranger)], dtype=object), mapping)
    assert info.value.label == label_key(stranger)


CELLS = st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1e6, 1e6), st.just(float("nan")),
                  st.text(alphabet="0123456789.-eNA x", max_size=6))


@given(st.lists(CELLS, min_size=1, max_size=30))
def test_vectorised_labels_agree_with_label_key(cells):
    from mbi_predict.data.harmonise import _is_blank, canonical_labels

    got = canonical_labels(pd.Series(cells, dtype=object)).tolist()
    assert got == [None if _is_blank(v) else label_key(v) for v in cells]


def test_csv_output_round_trips_through_load_ipd(tmp_path):
    from mbi_predict.data.publish import write_harmonised
    from mbi_predict.data.readers import load_ipd

    result = harmonise(write_consortium(tmp_path))
    written = write_harmonised(result, tmp_path / "out" / "ipd.csv")
    assert (tmp_path / "out" / "ipd.meta.json") in written
    loaded = load_ipd(tmp_path / "out" / "ipd.csv")
    assert loaded["participant_id"].tolist() == result.ipd["participant_id"].tolist()
    np.testing.assert_allclose(loaded["baseline_depression"], result.ipd["baseline_depression"])
    with pytest.raises(SpecError, match="parquet or .csv"):
        write_harmonised(result, tmp_path / "out" / "ipd.xlsx")
