"""The IPD contract: every violation is reported with its trial and column."""

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.schema import baseline_of, check_ipd, construct_of, outcome_columns, validate_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import DataError


@pytest.fixture(scope="module")
def ipd() -> pd.DataFrame:
    return simulate_latent("galante2023", seed=7, n_trials=4, n=400).ipd


def test_simulated_table_meets_the_contract(ipd):
    assert validate_ipd(ipd) == []
    checked = check_ipd(ipd)
    assert checked["arm"].dtype.kind == "i"
    assert checked.loc[checked["arm"] == 1, "control_type"].isna().all()


def _problems(frame):
    return [(v.trial, v.column) for v in validate_ipd(frame)]


def test_duplicate_participant_ids_are_named(ipd):
    bad = ipd.copy()
    bad.loc[1, "participant_id"] = bad.loc[0, "participant_id"]
    assert (bad.loc[0, "trial_id"], "participant_id") in _problems(bad)


def test_same_participant_id_in_two_trials_is_fine(ipd):
    bad = ipd.copy()
    other = bad.index[bad["trial_id"] != bad.loc[0, "trial_id"]][0]
    bad.loc[other, "participant_id"] = bad.loc[0, "participant_id"]
    assert _problems(bad) == []


def test_one_arm_trial_and_bad_arm_values(ipd):
    bad = ipd.copy()
    first = bad["trial_id"] == "T01"
    bad.loc[first, "arm"] = 1
    bad.loc[first, "control_type"] = None
    bad.loc[bad.index[~first][0], "arm"] = 2
    problems = _problems(bad)
    assert ("T01", "arm") in problems
    assert (bad.loc[bad.index[~first][0], "trial_id"], "arm") in problems


def test_control_type_rules(ipd):
    bad = ipd.copy()
    control_row = bad.index[bad["arm"] == 0][0]
    mbi_row = bad.index[bad["arm"] == 1][0]
    bad.loc[control_row, "control_type"] = "placebo"
    bad.loc[mbi_row, "control_type"] = "passive"
    problems = _problems(bad)
    assert (bad.loc[control_row, "trial_id"], "control_type") in problems
    assert (bad.loc[mbi_row, "trial_id"], "control_type") in problems


def test_categories_and_study_traits(ipd):
    bad = ipd.copy()
    bad.loc[0, "gender"] = "F"
    bad.loc[0, "setting"] = "prison"
    bad.loc[1, "n_sessions"] = 99
    problems = _problems(bad)
    assert ("T01", "gender") in problems
    assert ("T01", "setting") in problems
    assert ("T01", "n_sessions") in problems


def test_missing_required_column_and_non_snake_case():
    frame = pd.DataFrame({"trial_id": ["a"], "arm": [1], "Age": [3.0]})
    assert (None, "participant_id") in _problems(frame)
    frame["participant_id"] = "p"
    assert (None, "Age") in _problems(frame)


def test_check_ipd_raises_one_line_naming_trial_and_column(ipd):
    bad = ipd.copy()
    bad.loc[3, "participant_id"] = bad.loc[2, "participant_id"]
    with pytest.raises(DataError) as caught:
        check_ipd(bad, source="ipd.parquet")
    message = str(caught.value)
    assert "\n" not in message
    assert "file ipd.parquet" in message and "trial T01" in message and "column participant_id" in message


def test_harm_flags_must_be_binary(ipd):
    bad = ipd.copy()
    bad["deteriorated_distress_fu1_6"] = np.where(bad.index == 0, 2.0, 0.0)
    assert ("T01", "deteriorated_distress_fu1_6") in _problems(bad)


def test_outcome_name_helpers(ipd):
    assert "distress_fu1_6" in outcome_columns(ipd)
    assert baseline_of("distress_fu1_6") == "baseline_distress"
    assert baseline_of("deteriorated_wellbeing_fu6plus") == "baseline_wellbeing"
    assert construct_of("wellbeing_post") == "wellbeing"
    assert baseline_of("age") is None
