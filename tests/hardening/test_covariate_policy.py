"""Class 3, leakage: outcomes (any window, `_raw` totals, harm and improvement flags), ids, trial and arm columns can
never be covariates or study traits; the error is one ConfigError naming the column."""

from __future__ import annotations

import pytest

from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError
from mbi_predict.validate.loto import prepare_data


@pytest.fixture(scope="module")
def ipd():
    frame = check_ipd(simulate_latent("galante2023", seed=2, n_trials=4, n=400).ipd)
    frame["distress_fu1_6_raw"] = frame["distress_fu1_6"] * 3 + 10
    frame["baseline_distress_raw"] = frame["baseline_distress"] * 3 + 10
    frame["deteriorated_distress_post"] = (frame["distress_post"] > 1).astype(float)
    frame["improved_distress_post"] = (frame["distress_post"] < -1).astype(float)
    return frame


@pytest.mark.parametrize("column", ["distress_post", "anxiety_fu6plus", "distress_fu1_6_raw",
                                    "deteriorated_distress_post", "improved_distress_post", "participant_id",
                                    "trial_id", "arm", "control_type"])
def test_outcomes_ids_and_design_columns_are_refused_as_covariates(ipd, column):
    with pytest.raises(ConfigError) as excinfo:
        prepare_data(ipd, outcome="distress_fu1_6", covariates=["age", column])
    message = str(excinfo.value)
    assert "\n" not in message and f"column {column}" in message and "cannot be a covariate" in message


@pytest.mark.parametrize("column", ["participant_id", "distress_post"])
def test_and_as_study_traits(ipd, column):
    with pytest.raises(ConfigError, match=f"column {column}"):
        prepare_data(ipd, outcome="distress_fu1_6", covariates=["age"], study_traits=[column])


def test_the_outcome_itself_is_refused(ipd):
    with pytest.raises(ConfigError, match="column distress_fu1_6"):
        prepare_data(ipd, outcome="distress_fu1_6", covariates=["age", "distress_fu1_6"])


def test_baseline_scores_and_ordinary_covariates_are_allowed(ipd):
    from mbi_predict.data.schema import predictor_refusal
    data = prepare_data(ipd, outcome="distress_fu1_6", covariates=["age", "baseline_distress",
                                                                     "baseline_distress_raw"],
                        study_traits=["setting"])
    assert list(data.covariates) == ["age", "baseline_distress", "baseline_distress_raw", "setting"]
    assert "participant_id" not in data.X.columns and "trial_id" not in data.X.columns
    for name in ("age", "gender", "school_poverty", "bl_probing_depth", "outcome_expectancy", "posture",
                 "post_graduate"):
        assert predictor_refusal(name) is None, name
