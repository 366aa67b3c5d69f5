"""Group effects, harm and treatment rules of held-out trials (validate.groups, validate.groups_summary)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from mbi_predict.validate import groups as g
from mbi_predict.validate.groups_summary import describe_group, harm_pvalue, simes


def test_groups_are_cut_at_the_training_quantiles():
    training = np.arange(100, dtype=float)
    groups = g.group_of(np.array([-5.0, 10.0, 30.0, 55.0, 99.0, 500.0]), training, 5)
    assert groups.tolist() == [1, 1, 2, 3, 5, 5]


def test_weighted_mean_with_unit_weights_is_the_mean_with_its_standard_error():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    mean, variance = g.weighted_mean(x, np.ones(50))
    assert mean == pytest.approx(x.mean())
    assert variance == pytest.approx(x.var(ddof=1) / 50)
    assert all(math.isnan(v) for v in g.weighted_mean(x[:9], np.ones(9)))  # below MIN_GROUP: not estimated


def test_inverse_probability_of_observation_removes_the_dropout_bias():
    rng = np.random.default_rng(1)
    n = 20000
    x = rng.normal(size=n)
    arm = rng.integers(0, 2, n)
    outcome = 1.0 + x  # those with high x drop out more: the complete-case mean is biased low
    observed = rng.random(n) < 1 / (1 + np.exp(-(0.5 - 1.2 * x)))
    weights = g.observation_weights(observed, x[:, None], arm)
    complete_case = outcome[observed].mean()
    reweighted = np.sum(weights * outcome[observed]) / weights.sum()
    assert abs(complete_case - 1.0) > 0.3
    assert abs(reweighted - 1.0) < 0.05


def test_rule_search_finds_one_and_two_trait_rules_and_says_them():
    rng = np.random.default_rng(2)
    n = 4000
    frame = pd.DataFrame({"distress": rng.normal(size=n), "age": rng.uniform(18, 70, n),
                          "noise": rng.normal(size=n)})
    # benefit for everyone except the young and very distressed
    harmed = (frame["distress"] > 1.0) & (frame["age"] < 30)
    reward = np.where(harmed, -1.0, 0.3) + rng.normal(0, 0.05, n)
    rule = g.learn_rule(frame, reward, depth=2, min_leaf=20)
    offer = rule.apply(frame)
    assert (offer == ~harmed).mean() > 0.95
    sentence = rule.sentence()
    assert sentence.startswith("offer the MBI unless") and "distress >" in sentence and "age <=" in sentence
    target = frame["noise"] > 0.54  # the 0.7 quantile rounded to two digits: a candidate threshold
    one = g.learn_rule(frame, np.where(target, 1.0, -1.0), depth=1)
    assert one.sentence() in ("offer the MBI unless noise <= 0.54", "offer the MBI only if noise > 0.54")
    assert (one.apply(frame) == target).mean() > 0.99
    assert g.learn_rule(frame, np.full(n, 0.2)).sentence() == "offer the MBI to everyone"
    assert g.learn_rule(frame, np.full(n, -0.2)).sentence() == "offer the MBI to no one"


def test_policy_values_against_all_and_none():
    score = np.array([1.0] * 20 + [-2.0] * 20)
    offer = np.array([True] * 20 + [False] * 20)
    values = g.policy_values(score, offer, np.ones(40))
    assert values["policy_value_vs_all"][0] == pytest.approx(1.0)   # not offering to the -2 group gains 2 x 0.5
    assert values["policy_value_vs_none"][0] == pytest.approx(0.5)
    assert values["policy_share_offered"][0] == pytest.approx(0.5)


def test_the_harmed_group_is_described_by_its_traits():
    rng = np.random.default_rng(3)
    traits = pd.DataFrame({"distress": rng.normal(size=3000), "age": rng.uniform(18, 70, 3000)})
    members = ((traits["distress"] > 1.0) & (traits["age"] < 30)).to_numpy()
    described = describe_group(members, traits)
    assert described and "distress > 1" in described[0] and "age <= 30" in described[0]
    assert describe_group(np.zeros(3000, dtype=bool), traits) == []


def test_harm_p_value_uses_the_null_spread_and_tests_nothing_without_it():
    p, used = harm_pvalue(-3.0, np.random.default_rng(0).normal(0.0, 1.0, 19))
    assert used == 19 and p < 0.05
    wide, _ = harm_pvalue(-3.0, np.random.default_rng(0).normal(0.0, 3.0, 19))
    assert wide > p
    assert harm_pvalue(-3.0, None) == (None, 0)
    assert harm_pvalue(-3.0, np.array([0.1, np.nan, 0.2]))[0] is None


def test_simes_combination():
    assert simes([0.04]) == pytest.approx(0.04)
    assert simes([0.03, 0.04]) == pytest.approx(0.04)      # both small: the larger p, not twice the smaller
    assert simes([0.01, 0.5]) == pytest.approx(0.02)       # one small: Bonferroni
    assert simes([0.6, 0.9]) == pytest.approx(0.9) and simes([0.7, 0.7]) == pytest.approx(0.7)
    assert simes([0.9, 1.0]) <= 1.0


def test_simes_holds_its_level_for_positively_dependent_one_sided_tests():
    rng = np.random.default_rng(11)
    z = rng.normal(size=(20000, 1)) * np.sqrt(0.6) + rng.normal(size=(20000, 2)) * np.sqrt(0.4)  # correlation 0.6
    from scipy import stats
    p = stats.norm.cdf(z)
    rejections = np.mean([simes(list(row)) < 0.05 for row in p])
    assert 0.03 < rejections <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p))


def test_runner_reports_group_effects_harm_and_a_rule(tmp_path):
    from mbi_predict.runner import run_experiment

    config = {"experiment": "groups", "outcome": "distress_fu1_6",
              "data": {"simulate": {"scenario": "harm_subgroup", "seed": 4, "n_trials": 5, "n": 1200}},
              "covariates": ["age", "baseline_distress", "baseline_mindfulness"],
              "models": [{"name": "lin", "kind": "effect", "estimator": "interaction_linear", "params": {"alpha": 0}}],
              "validation": {"n_jobs": 1, "bootstrap": 10}, "heterogeneity": {"null_B": 5},
              "who_benefits": {"n_groups": 3}, "tracking": {"enabled": False}, "seed": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_experiment(config, out_dir=tmp_path, progress=False).summary
    block = summary["models"]["lin"]
    assert [group["group"] for group in block["gates"]["groups"]] == [1, 2, 3]
    assert block["gates"]["top_minus_bottom"]["B"] == 5
    harm = block["harm"]
    assert set(harm) >= {"flagged", "threshold", "group_share", "group_effect", "p_value", "described_by", "tests"}
    # two candidate groups, each tested against its own null spread; the verdict's p is their Simes combination
    tests = harm["tests"]
    assert set(tests) == {"predicted_harm_group", "lowest_benefit_group"}
    assert tests["lowest_benefit_group"]["effect"] == {k: block["gates"]["groups"][0][k] for k in tests[
        "lowest_benefit_group"]["effect"]}
    ps = [t["p_value"] for t in tests.values() if t["p_value"] is not None]
    assert ps and harm["p_value"] == pytest.approx(simes(ps))
    assert harm["flagged"] == (harm["p_value"] < harm["alpha"])
    assert harm["described_group"] == min((t for t in tests if tests[t]["p_value"] is not None),
                                          key=lambda t: tests[t]["p_value"])
    assert block["policy"]["rule"].startswith("offer the MBI")
    assert {"value_vs_all", "value_vs_none"} <= set(block["policy"])
    assert "harm_flagged" in summary and isinstance(summary["harm_flagged"]["flagged"], bool)
    for row in block["per_trial"]:
        assert "gates_1" in row and "policy_value_vs_all" in row
    projection = summary["best_linear_projection"]
    assert [t["term"] for t in projection["terms"]] == ["intercept", "age", "baseline_distress",
                                                         "baseline_mindfulness"]
    assert projection["clusters"] == "trial_id" and 3 <= projection["n_clusters"] <= 5  # trials without mindfulness drop


def test_a_projection_covariate_not_in_the_analysis_is_one_line(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from mbi_predict.cli import app

    config = {"experiment": "groups", "outcome": "distress_fu1_6",
              "data": {"simulate": {"scenario": "null", "seed": 4, "n_trials": 4, "n": 600}},
              "covariates": ["age", "baseline_distress"],
              "models": [{"name": "lin", "kind": "effect", "estimator": "interaction_linear"}],
              "who_benefits": {"projection": ["shoe_size"]}, "tracking": {"enabled": False}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "o")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "shoe_size" in lines[0]


def test_deterioration_difference_and_its_variance():
    rng = np.random.default_rng(3)
    arm = np.repeat([1, 0], 4000)
    flag = np.concatenate([rng.random(4000) < 0.20, rng.random(4000) < 0.10]).astype(float)
    flag[::7] = np.nan  # missing flags are left out
    value, variance = g.deterioration_difference(flag, arm)
    assert value == pytest.approx(0.10, abs=0.02)
    n1, n0 = np.isfinite(flag[arm == 1]).sum(), np.isfinite(flag[arm == 0]).sum()
    assert variance == pytest.approx(0.2 * 0.8 / n1 + 0.1 * 0.9 / n0, rel=0.1)
    # nobody deteriorated: a difference of 0 with a usable (positive) variance
    zero, zero_var = g.deterioration_difference(np.zeros(40), np.repeat([1, 0], 20))
    assert zero == 0 and zero_var > 0
    assert all(math.isnan(x) for x in g.deterioration_difference(np.zeros(8), np.array([1, 1, 1, 1, 0, 0, 0, 0])))


def test_the_outcomes_deterioration_flag_is_found_and_never_a_covariate():
    from mbi_predict.data.rawsim import simulate_ipd
    from mbi_predict.data.schema import deterioration_of
    from mbi_predict.validate.prepared import prepare_data

    assert deterioration_of("distress_fu1_6") == "deteriorated_distress_fu1_6"
    assert deterioration_of("deteriorated_distress_post") is None and deterioration_of("age") is None
    ipd, _ = simulate_ipd("harm", seed=2, n_trials=3, n=300)
    data = prepare_data(ipd, outcome="distress_fu1_6")
    assert data.deteriorated is not None and len(data.deteriorated) == data.n
    assert not any(c.startswith("deteriorated_") for c in data.X.columns)
    kept = ipd.loc[(ipd["arm"] == 1) | (ipd["control_type"] == "passive")]
    kept = kept[kept.groupby("trial_id")["arm"].transform("nunique") == 2]
    assert np.nansum(data.deteriorated) == np.nansum(kept["deteriorated_distress_fu1_6"].to_numpy(dtype=float))
    assert prepare_data(ipd.drop(columns=["deteriorated_distress_fu1_6"]), outcome="distress_fu1_6").deteriorated \
        is None


def test_trial_effects_are_the_null_draws_constant_effects():
    from mbi_predict.validate.verdict_null import constant_effect_outcome, trial_effects

    rng = np.random.default_rng(5)
    trial = np.repeat(["B", "A"], 200)
    arm = np.tile([0, 1], 200)
    y = rng.normal(size=400) + np.where(trial == "A", 0.5, -0.2) * arm
    y[::9] = np.nan
    tau = trial_effects(y, arm, trial)
    for k in ("A", "B"):
        rows = (trial == k) & np.isfinite(y)
        assert tau[k] == pytest.approx(y[rows & (arm == 1)].mean() - y[rows & (arm == 0)].mean())
    # a draw that flips every arm moves each outcome by exactly its trial's tau
    flipped = constant_effect_outcome(y, arm, 1 - arm, trial)
    shift = np.array([tau[k] for k in trial]) * ((1 - arm) - arm)
    assert np.allclose(flipped[np.isfinite(y)], (y + shift)[np.isfinite(y)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deterioration_variance_is_agresti_caffos_of_statsmodels(seed):
    """The variance is the one behind statsmodels' Agresti-Caffo interval for a difference of two proportions."""
    from scipy.stats import norm
    from statsmodels.stats.proportion import confint_proportions_2indep

    rng = np.random.default_rng(seed)
    arm = np.repeat([1, 0], [60, 45])
    flag = (rng.random(len(arm)) < np.where(arm == 1, 0.2, 0.1)).astype(float)
    _, variance = g.deterioration_difference(flag, arm)
    low, high = confint_proportions_2indep(flag[arm == 1].sum(), 60, flag[arm == 0].sum(), 45,
                                           method="agresti-caffo", compare="diff", alpha=0.05)
    assert variance == pytest.approx(((high - low) / (2 * norm.ppf(0.975))) ** 2, rel=1e-9)
