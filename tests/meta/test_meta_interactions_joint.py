"""Joint within-trial interactions: adjusted for the other modifiers, equal to statsmodels' OLS, never a crash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mbi_predict.errors import MBIError
from mbi_predict.meta import interactions, pool

OUTCOME = "distress_post"


def make_correlated(seed: int, n_trials: int = 8, n_per_arm: int = 100, rho: float = 0.7,
                    gamma: float = 0.4) -> pd.DataFrame:
    """y depends on arm x x1 only (slope `gamma`); x2 = rho x1 + noise is prognostic but modifies nothing, so its
    one-at-a-time interaction estimates gamma * rho and its joint one 0."""
    rng = np.random.default_rng([seed, 14])
    parts = []
    for t in range(n_trials):
        mu, n = rng.uniform(-1, 1), 2 * n_per_arm
        arm = np.repeat([1, 0], n_per_arm)
        z1 = rng.standard_normal(n)
        z2 = rho * z1 + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
        base = rng.standard_normal(n)
        y = 0.5 * base + 0.2 * z1 + 0.1 * z2 + arm * (0.3 + gamma * z1) + rng.standard_normal(n)
        group = np.where(rng.random(n) < 0.4, "b", "a")
        parts.append(pd.DataFrame({"trial_id": f"T{t:02d}", "arm": arm,
                                   "control_type": np.where(arm == 0, "passive", None), "baseline_distress": base,
                                   "x1": mu + z1, "x2": z2, "group": group, OUTCOME: y}))
    return pd.concat(parts, ignore_index=True)


def by_term(records: list[dict]) -> dict[str, dict]:
    return {r["modifier"]: r for r in records}


def test_joint_mode_removes_the_bias_of_a_correlated_non_modifier():
    seeds = range(30)
    est = {True: [], False: []}
    rejected = {True: 0, False: 0}
    for seed in seeds:
        ipd = make_correlated(seed)
        for joint in (True, False):
            found = by_term(interactions(ipd, OUTCOME, ["x1", "x2"], m=1, joint=joint))
            assert found["x2"]["model"] == ("joint" if joint else "separate") and found["x2"]["k"] == 8
            est[joint].append(found["x2"]["estimate"])
            rejected[joint] += found["x2"]["pvalue"] < 0.05
    # joint: unbiased (se of the mean ~0.011) and rejects near alpha (P(Bin(30, 0.05) >= 6) = 0.003)
    assert abs(np.mean(est[True])) < 0.04
    assert rejected[True] <= 5
    # separate: x2 inherits gamma * rho = 0.28 and is "significant" almost always
    assert np.mean(est[False]) == pytest.approx(0.28, abs=0.05)
    assert rejected[False] >= 27


def test_joint_estimates_equal_statsmodels_ols_per_trial():
    smf = pytest.importorskip("statsmodels.formula.api")
    ipd = make_correlated(3, n_trials=4)
    records = by_term(interactions(ipd, OUTCOME, ["x1", "x2", "group"], m=3, seed=2))
    terms = {"x1": "arm:x1", "x2": "arm:x2", "group[b]": "arm:C(group)[T.b]"}
    for trial, rows in ipd.groupby("trial_id"):
        fit = smf.ols(f"{OUTCOME} ~ arm * (x1 + x2 + C(group)) + baseline_distress", data=rows).fit()
        cov = fit.cov_params()
        for term, name in terms.items():
            row = next(r for r in records[term]["trials"] if r["trial_id"] == trial)
            assert row["estimate"] == pytest.approx(fit.params[name], abs=1e-8)
            assert row["se"] == pytest.approx(fit.bse[name], abs=1e-8)
            assert row["fmi"] == pytest.approx(0, abs=1e-12)  # complete data: the m imputations are identical
            assert row["model_terms"] == ["x1", "x2", "group[b]"] and row["adjusted_for_baseline"]
            for other, other_name in terms.items():
                if other != term:
                    assert row["covariances"][other] == pytest.approx(cov.loc[name, other_name], abs=1e-10)
    for term in terms:  # stage 2: univariate REML on those estimates
        rows = records[term]["trials"]
        ref = pool([r["estimate"] for r in rows], [r["se"] ** 2 for r in rows], method="REML")
        assert records[term]["estimate"] == pytest.approx(ref.estimate, abs=1e-12)
        assert records[term]["se"] == pytest.approx(ref.se, abs=1e-12)


def test_baseline_as_a_modifier_is_not_entered_twice():
    smf = pytest.importorskip("statsmodels.formula.api")
    ipd = make_correlated(5, n_trials=3)
    records = by_term(interactions(ipd, OUTCOME, ["baseline_distress", "x1"], m=1))
    rows = ipd[ipd["trial_id"] == "T01"]
    fit = smf.ols(f"{OUTCOME} ~ arm * (baseline_distress + x1)", data=rows).fit()
    row = next(r for r in records["x1"]["trials"] if r["trial_id"] == "T01")
    assert row["estimate"] == pytest.approx(fit.params["arm:x1"], abs=1e-8)
    assert not row["adjusted_for_baseline"]


def test_unestimable_modifiers_are_dropped_per_trial_with_a_reason():
    ipd = make_correlated(7, n_trials=5)
    ipd["x3"] = ipd["x1"] * 0.5 + np.random.default_rng(8).standard_normal(len(ipd))
    ipd.loc[ipd["trial_id"] == "T01", "x3"] = 2 * ipd.loc[ipd["trial_id"] == "T01", "x1"]  # collinear in T01
    ipd.loc[ipd["trial_id"] == "T02", "x2"] = 1.0  # constant in T02
    small = ipd[(ipd["trial_id"] != "T03") | (ipd.index % 4 == 0)]  # T03: 50 participants
    records = by_term(interactions(small, OUTCOME, ["x1", "x2", "x3"], m=1))
    reasons = {term: {s["trial_id"]: s["reason"] for s in records[term]["skipped_trials"]} for term in records}
    assert "does not vary" in reasons["x2"]["T02"]
    assert "collinear" in reasons["x3"]["T01"]
    # T03: 50 observed outcomes; x1 with the baseline needs 10 x 5 = 50 and is kept, x2 and x3 would need 70, 90
    assert "T03" not in reasons["x1"] and "per parameter" in reasons["x2"]["T03"]
    assert "per parameter" in reasons["x3"]["T03"]
    assert records["x1"]["k"] == 5 and records["x2"]["k"] == 3 and records["x3"]["k"] == 3
    assert all(r["model"] == "joint" for r in records.values())
    t02 = next(r for r in records["x3"]["trials"] if r["trial_id"] == "T02")
    assert t02["model_terms"] == ["x1", "x3"]
    with pytest.raises(MBIError, match="min_per_parameter"):
        interactions(small, OUTCOME, ["x1"], m=1, min_per_parameter=0)


def test_joint_mode_with_missing_outcomes_uses_rubin():
    ipd = make_correlated(9, n_trials=4)
    rng = np.random.default_rng(9)
    ipd.loc[rng.random(len(ipd)) < 0.2, OUTCOME] = np.nan
    records = by_term(interactions(ipd, OUTCOME, ["x1", "x2"], m=4, seed=1))
    assert records["x1"]["k"] == 4 and all(t["fmi"] > 0 for t in records["x1"]["trials"])
    assert records["x1"]["ci_low"] < 0.4 < records["x1"]["ci_high"]


@pytest.mark.slow
def test_simulated_consortium_correlated_baselines_are_rarely_flagged_jointly():
    """simulate_latent('strong'): distress and mindfulness modify the effect; anxiety, depression and wellbeing are
    correlated with distress but modify nothing."""
    from mbi_predict.data.simulate import simulate_latent

    modifiers = ["baseline_distress", "baseline_mindfulness", "baseline_anxiety", "baseline_depression",
                 "baseline_wellbeing"]
    null = modifiers[2:]
    flagged = {True: 0, False: 0}
    for seed in range(5):
        ipd = simulate_latent("strong", seed=seed, n_trials=8, n=1600).ipd
        for joint in (True, False):
            found = by_term(interactions(ipd, OUTCOME, modifiers, seed=seed, joint=joint))
            flagged[joint] += sum(found[m]["pvalue"] < 0.05 for m in null)
    assert flagged[False] >= 10  # of 15 (3 null modifiers x 5 seeds)
    assert flagged[True] <= 3
