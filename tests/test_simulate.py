"""The latent simulator: deterministic, Galante-like, and its truth is what the scenario declares."""

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.simulate import SCENARIOS, simulate_latent
from mbi_predict.errors import MBIError


def test_deterministic_for_a_seed():
    a = simulate_latent("strong", seed=11, n_trials=5, n=600)
    b = simulate_latent("strong", seed=11, n_trials=5, n=600)
    pd.testing.assert_frame_equal(a.ipd, b.ipd)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    c = simulate_latent("strong", seed=12, n_trials=5, n=600)
    assert not np.allclose(a.ipd["age"], c.ipd["age"])


def test_galante_like_consortium():
    sim = simulate_latent("galante2023", seed=2023)
    ipd = sim.ipd
    assert len(ipd) == 2371 and ipd["trial_id"].nunique() == 13
    assert 30 <= ipd["age"].median() <= 38
    assert 0.66 <= (ipd["gender"] == "female").mean() <= 0.76
    assert 0.15 <= ipd["distress_fu1_6"].isna().mean() <= 0.25
    with_active = ipd.loc[ipd["control_type"] == "active", "trial_id"].nunique()
    assert with_active == 4
    truth = sim.truth["true_effect_passive_distress_fu1_6"]
    assert -0.40 < truth.mean() < -0.25
    # weak modifiers: individual effects vary little
    assert truth.std() < 0.15


def test_null_scenario_has_no_within_trial_heterogeneity():
    sim = simulate_latent("null", seed=3, n_trials=6, n=900)
    spread = sim.truth.groupby("trial_id")["true_effect_passive_distress_fu1_6"].std().dropna()
    assert np.allclose(spread, 0.0)


def test_strong_scenario_effect_follows_its_modifiers():
    sim = simulate_latent("strong", seed=3, n_trials=6, n=900)
    merged = sim.ipd.merge(sim.truth, on=["trial_id", "participant_id"])
    ok = merged["true_effect_passive_distress_fu1_6"].notna()
    # more baseline distress -> a larger reduction in distress (more negative effect)
    corr = np.corrcoef(merged.loc[ok, "baseline_distress"].fillna(0),
                       merged.loc[ok, "true_effect_passive_distress_fu1_6"])[0, 1]
    assert corr < -0.5


def test_harm_scenario_marks_a_harmed_subgroup():
    sim = simulate_latent("harm", seed=5, n_trials=6, n=900)
    harmed = sim.truth["harmed_subgroup"] == 1
    effect = sim.truth["true_effect_passive_distress_fu1_6"]
    assert 0.05 < harmed.mean() < 0.35
    assert (effect[harmed].dropna() > 0).all()  # distress goes up: harm
    assert (effect[~harmed].dropna() < 0).all()


def test_observed_difference_matches_truth_on_average():
    sim = simulate_latent("galante2023", seed=99, n_trials=13, n=20000)
    ipd = sim.ipd[(sim.ipd["arm"] == 1) | (sim.ipd["control_type"] == "passive")]
    ipd = ipd.merge(sim.truth, on=["trial_id", "participant_id"])
    observed = ipd.groupby("arm")["distress_fu1_6"].mean()
    # baseline is balanced by randomisation; attrition is MAR on baseline, so adjust for it
    import statsmodels.formula.api as smf

    fit = smf.ols("distress_fu1_6 ~ arm + baseline_distress + C(trial_id)", data=ipd).fit()
    assert abs(fit.params["arm"] - ipd["true_effect_passive_distress_fu1_6"].mean()) < 0.05
    assert observed.notna().all()


def test_bad_arguments():
    with pytest.raises(MBIError, match="unknown scenario"):
        simulate_latent("nope")
    with pytest.raises(MBIError):
        simulate_latent("null", n_trials=10, n=100)
    assert set(SCENARIOS) == {"galante2023", "null", "modest", "strong", "harm", "harm_subgroup",
                              "no_effect_subgroup"}


def test_the_no_effect_subgroup_has_exactly_no_effect_and_no_one_is_harmed():
    latent = simulate_latent("no_effect_subgroup", seed=3, n_trials=4, n=800)
    truth = latent.truth
    column = "true_effect_passive_distress_fu1_6"
    subgroup = truth["harmed_subgroup"] == 1
    assert 0.1 < subgroup.mean() < 0.25
    assert (truth.loc[subgroup, column].dropna() == 0).all()
    assert (truth.loc[~subgroup, column].dropna() < 0).all()  # a reduction in distress: benefit
