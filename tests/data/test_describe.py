"""Per-trial description and the missingness table on small frames whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.describe import describe_ipd
from mbi_predict.data.missingness import analysis_variables, missingness_table


def small_ipd() -> pd.DataFrame:
    return pd.DataFrame({
        "trial_id": ["A"] * 4 + ["B"] * 3,
        "participant_id": ["1", "2", "3", "4", "1", "2", "3"],
        "arm": [1, 1, 0, 0, 1, 0, 0],
        "control_type": [None, None, "passive", "active", None, "passive", "passive"],
        "age": [20.0, 30.0, 40.0, 50.0, 25.0, 35.0, np.nan],
        "gender": ["female", "male", "female", None, "female", "female", "male"],
        "baseline_distress": [0.5, -0.5, 1.0, np.nan, 0.0, 1.0, 2.0],
        "distress_fu1_6": [0.1, np.nan, np.nan, np.nan, 0.2, 0.3, 0.4],
        "distress_fu1_6_raw": [3.0, np.nan, np.nan, np.nan, 4.0, 5.0, 6.0],
        "mbi_type": ["MBSR"] * 4 + ["MBCT"] * 3,
    })


def test_missingness_by_trial_and_arm():
    table = missingness_table(small_ipd()).set_index(["trial_id", "variable"])
    row = table.loc[("A", "distress_fu1_6")]
    assert (row["n"], row["n_missing"], row["share_missing"]) == (4, 3, 0.75)
    assert row["share_missing_mbi"] == 0.5 and row["share_missing_control"] == 1.0
    assert table.loc[("B", "age"), "share_missing_control"] == 0.5
    assert table.loc[("B", "age"), "share_missing_mbi"] == 0.0
    assert table.loc[("A", "gender"), "n_missing"] == 1


def test_missingness_skips_ids_traits_and_raw_copies():
    variables = analysis_variables(small_ipd())
    assert variables == ["age", "gender", "baseline_distress", "distress_fu1_6"]
    with pytest.raises(KeyError):
        missingness_table(small_ipd(), ["not_there"])


def test_describe_one_row_per_trial():
    described = describe_ipd(small_ipd()).set_index("trial_id")
    assert described.loc["A", "n"] == 4 and described.loc["A", "n_mbi"] == 2
    assert described.loc["A", "n_passive"] == 1 and described.loc["A", "n_active"] == 1
    assert described.loc["A", "control_types"] == "active, passive"
    assert described.loc["A", "mean_baseline_distress"] == pytest.approx(1 / 3)
    assert described.loc["A", "pct_female"] == pytest.approx(200 / 3)  # 2 of 3 with a recorded gender
    assert described.loc["B", "median_age"] == 30.0
    assert described.loc["B", "outcome_coverage"] == 1.0 and described.loc["A", "outcome_coverage"] == 0.25
    assert described.loc["B", "mbi_type"] == "MBCT"
    assert "participant_id" not in described.columns
