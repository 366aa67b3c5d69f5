"""Two-stage IPD meta-analysis on small generated consortia whose true effect is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mbi_predict.errors import DataError
from mbi_predict.meta import rubin, run_meta, two_stage, write_meta_plots
from mbi_predict.meta.ipd import construct_of, hedges_g_ancova

OUTCOME = "distress_fu1_6"


def make_ipd(n_trials: int = 6, n_per_arm: int = 50, smd: float = -0.4, tau: float = 0.0, missing: float = 0.0,
             rho: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """Outcome = rho*baseline + delta_t*arm + noise with within-arm SD 1, so the true SMD of trial t is delta_t,
    delta_t ~ N(smd, tau²); outcomes missing completely at random with probability `missing`."""
    rng = np.random.default_rng(seed)
    parts = []
    for t in range(n_trials):
        delta = smd + tau * rng.standard_normal()
        arm = np.repeat([1, 0], n_per_arm)
        base = rng.standard_normal(2 * n_per_arm)
        y = rho * base + delta * arm + math.sqrt(1 - rho ** 2) * rng.standard_normal(2 * n_per_arm)
        frame = pd.DataFrame({
            "trial_id": f"T{t:02d}", "participant_id": [f"p{i}" for i in range(2 * n_per_arm)], "arm": arm,
            "control_type": np.where(arm == 0, "passive", None), "baseline_distress": base, OUTCOME: y})
        frame.loc[rng.random(2 * n_per_arm) < missing, OUTCOME] = np.nan
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def test_construct_names():
    assert construct_of("distress_fu1_6") == "distress"
    assert construct_of("deteriorated_wellbeing_post") == "wellbeing"
    assert construct_of("anxiety_fu6plus") == "anxiety"


def test_per_trial_g_matches_an_independent_ancova():
    import statsmodels.formula.api as smf

    ipd = make_ipd(n_trials=3, seed=1)
    result = two_stage(ipd, OUTCOME, m=1)
    for row in result.per_trial:
        trial = ipd[ipd["trial_id"] == row["trial_id"]]
        fit = smf.ols(f"{OUTCOME} ~ arm + baseline_distress", data=trial).fit()
        sd = trial.groupby("arm")[OUTCOME].var(ddof=1)
        n1, n0 = (trial["arm"] == 1).sum(), (trial["arm"] == 0).sum()
        pooled_sd = math.sqrt(((n1 - 1) * sd[1] + (n0 - 1) * sd[0]) / (n1 + n0 - 2))
        d = fit.params["arm"] / pooled_sd
        j = 1 - 3 / (4 * (n1 + n0 - 2) - 1)
        assert row["estimate"] == pytest.approx(j * d, rel=1e-10)
        var = j ** 2 * (fit.bse["arm"] ** 2 / pooled_sd ** 2 + d ** 2 / (2 * (n1 + n0 - 2)))
        assert row["se"] == pytest.approx(math.sqrt(var), rel=1e-10)
        assert row["fmi"] == 0 and row["adjusted_for"] == "baseline_distress"
    assert sum(r["weight"] for r in result.per_trial) == pytest.approx(100)


def test_unadjusted_g_is_the_textbook_hedges_g():
    ipd = make_ipd(n_trials=2, seed=2)
    trial = ipd[ipd["trial_id"] == "T00"]
    y, arm = trial[OUTCOME].to_numpy(), trial["arm"].to_numpy(dtype=float)
    g, v = hedges_g_ancova(y, arm, None)
    n1 = n0 = 50
    sp = math.sqrt((49 * y[arm == 1].var(ddof=1) + 49 * y[arm == 0].var(ddof=1)) / 98)
    d = (y[arm == 1].mean() - y[arm == 0].mean()) / sp
    j = 1 - 3 / (4 * 98 - 1)
    assert g == pytest.approx(j * d)
    # classical variance (n1+n0)/(n1 n0) + d²/(2 df), times J²
    assert v == pytest.approx(j ** 2 * ((n1 + n0) / (n1 * n0) + d ** 2 / (2 * 98)), rel=1e-10)


def test_recovers_a_known_effect_with_missing_outcomes():
    ipd = make_ipd(n_trials=8, n_per_arm=150, smd=-0.5, tau=0.0, missing=0.25, seed=3)
    result = two_stage(ipd, OUTCOME, m=5, seed=1)
    pooled = result.pooled
    assert pooled.k == 8
    assert pooled.ci_low < -0.5 < pooled.ci_high
    assert abs(pooled.estimate + 0.5) < 0.1
    assert all(0 < r["fmi"] < 0.8 for r in result.per_trial)  # missing outcomes => missing information
    assert result.outcome_type == "continuous" and "ANCOVA" in result.measure


def test_reproducible_and_seed_dependent():
    ipd = make_ipd(n_trials=3, missing=0.3, seed=4)
    a = two_stage(ipd, OUTCOME, m=3, seed=7).to_dict()
    b = two_stage(ipd, OUTCOME, m=3, seed=7).to_dict()
    c = two_stage(ipd, OUTCOME, m=3, seed=8).to_dict()
    assert a == b
    assert a["pooled"]["estimate"] != c["pooled"]["estimate"]


def test_rubin_rules():
    res = rubin([1.0, 1.2, 0.8], [0.04, 0.05, 0.03])
    b = np.var([1.0, 1.2, 0.8], ddof=1)
    total = 0.04 + (1 + 1 / 3) * b
    assert res.estimate == pytest.approx(1.0) and res.variance == pytest.approx(total)
    r = (1 + 1 / 3) * b / 0.04
    nu = 2 * (1 + 1 / r) ** 2
    assert res.fmi == pytest.approx((r + 2 / (nu + 3)) / (r + 1))
    assert rubin([0.5], [0.1]).fmi == 0 and rubin([0.5], [0.1]).variance == pytest.approx(0.1)


def test_control_selection_and_skips():
    ipd = make_ipd(n_trials=4, seed=5)
    ipd["control_type"] = ipd["control_type"].astype(object)
    ipd.loc[(ipd["trial_id"] == "T01") & (ipd["arm"] == 0), "control_type"] = "active"  # active only
    ipd = ipd[~((ipd["trial_id"] == "T02") & (ipd["arm"] == 1))]  # no MBI arm
    ipd.loc[(ipd["trial_id"] == "T03") & (ipd["arm"] == 0), OUTCOME] = np.nan  # control outcome never observed
    passive = two_stage(ipd, OUTCOME, m=1)
    reasons = {s["trial_id"]: s["reason"] for s in passive.skipped}
    assert set(reasons) == {"T01", "T02", "T03"}
    assert "no passive control" in reasons["T01"]
    assert "empty MBI arm" in reasons["T02"]
    assert "control arm" in reasons["T03"]
    assert [r["trial_id"] for r in passive.per_trial] == ["T00"]
    # fewer than 2 usable trials: no exception, the single estimate is reported and pooling is refused
    assert passive.pooled.k == 1 and "not done" in passive.pooled.note
    assert passive.pooled.estimate == pytest.approx(passive.per_trial[0]["estimate"])
    assert any("fewer than 2" in note for note in passive.notes)
    active = two_stage(ipd, OUTCOME, control="active", m=1)
    assert [r["trial_id"] for r in active.per_trial] == ["T01"]
    assert active.per_trial[0]["n_control"] == 50


def test_outcome_absent_names_the_column():
    with pytest.raises(DataError, match="distress_post") as info:
        two_stage(make_ipd(n_trials=2), "distress_post")
    assert info.value.column == "distress_post"


def test_bad_control_and_arm_values():
    ipd = make_ipd(n_trials=2)
    with pytest.raises(DataError, match="passive"):
        two_stage(ipd, OUTCOME, control="waitlist")
    ipd.loc[0, "arm"] = 2
    with pytest.raises(DataError, match="arm"):
        two_stage(ipd, OUTCOME)


def make_binary_ipd() -> pd.DataFrame:
    ipd = make_ipd(n_trials=3, n_per_arm=40, seed=6)
    rng = np.random.default_rng(0)
    ipd["deteriorated_distress_fu1_6"] = (rng.random(len(ipd)) < np.where(ipd["arm"] == 1, 0.1, 0.25)).astype(float)
    # trial T00: no event in the MBI arm -> continuity correction; T02: no events at all -> uninformative
    ipd.loc[(ipd["trial_id"] == "T00") & (ipd["arm"] == 1), "deteriorated_distress_fu1_6"] = 0.0
    ipd.loc[ipd["trial_id"] == "T02", "deteriorated_distress_fu1_6"] = 0.0
    return ipd


def test_binary_outcome_log_rr_with_declared_continuity_correction():
    ipd = make_binary_ipd()
    result = two_stage(ipd, "deteriorated_distress_fu1_6", m=1)
    assert result.outcome_type == "binary" and "log risk ratio" in result.measure
    rows = {r["trial_id"]: r for r in result.per_trial}
    assert set(rows) == {"T00", "T01"}
    assert "no events in either arm" in result.skipped[0]["reason"] and result.skipped[0]["trial_id"] == "T02"
    t0 = rows["T00"]
    assert t0["continuity_correction"] == 0.5 and "continuity" in t0["note"]
    trial = ipd[ipd["trial_id"] == "T00"]
    a = trial.loc[trial["arm"] == 1, "deteriorated_distress_fu1_6"].sum() + 0.5
    c = trial.loc[trial["arm"] == 0, "deteriorated_distress_fu1_6"].sum() + 0.5
    log_rr = math.log((a / 41) / (c / 41))
    assert t0["estimate"] == pytest.approx(log_rr)
    assert t0["se"] == pytest.approx(math.sqrt(1 / a - 1 / 41 + 1 / c - 1 / 41))
    assert t0["risk_difference"] == pytest.approx(a / 41 - c / 41)
    assert rows["T01"]["continuity_correction"] == 0.0
    assert "risk_difference" in result.secondary


def test_binary_outcome_with_missing_values_is_imputed_not_dropped():
    ipd = make_binary_ipd()
    rng = np.random.default_rng(1)
    ipd.loc[rng.random(len(ipd)) < 0.3, "deteriorated_distress_fu1_6"] = np.nan
    result = two_stage(ipd, "deteriorated_distress_fu1_6", m=4, seed=2)
    row = {r["trial_id"]: r for r in result.per_trial}["T01"]
    assert row["n"] == 80 and row["n_observed"] < 80  # ITT: every randomised row analysed
    assert row["fmi"] > 0


def test_run_meta_json_shape_and_plots(tmp_path):
    ipd = make_ipd(n_trials=5, missing=0.1, seed=9)
    ipd["age"] = np.random.default_rng(1).normal(40, 10, len(ipd))
    report = run_meta(ipd, OUTCOME, modifiers=["age"], m=2)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert {"outcome", "control", "pooled", "per_trial", "interactions", "egger", "leave_one_out",
            "skipped"} <= set(payload)
    assert payload["outcome"] == OUTCOME and payload["control"] == "passive"
    assert {"trial_id", "n", "estimate", "se", "ci_low", "ci_high", "weight"} <= set(payload["per_trial"][0])
    assert payload["interactions"][0]["modifier"] == "age"
    assert {"estimate", "ci_low", "ci_high", "pvalue", "across_trial_estimate"} <= set(payload["interactions"][0])
    assert payload["egger"]["done"] is False and "10" in payload["egger"]["reason"]
    assert len(payload["leave_one_out"]) == 5
    assert payload["pooled"]["k"] == 5
    paths = write_meta_plots(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["forest.png", "funnel.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert "Egger test: not done" in report.summary()


def test_run_meta_with_one_usable_trial_reports_it_without_raising(tmp_path):
    ipd = make_ipd(n_trials=2, seed=10)
    ipd = ipd[~((ipd["trial_id"] == "T01") & (ipd["arm"] == 0))]
    report = run_meta(ipd, OUTCOME, m=1)
    payload = report.to_dict()
    assert payload["pooled"]["k"] == 1 and "not done" in payload["pooled"]["note"]
    assert len(payload["per_trial"]) == 1 and payload["skipped"][0]["trial_id"] == "T01"
    assert payload["leave_one_out"] == []
    assert len(write_meta_plots(report, tmp_path)) == 2


@pytest.mark.slow
def test_pooled_ci_covers_the_true_smd_about_95_percent():
    """200 simulated consortia (complete data, so m = 1 is exact): REML + z coverage of the true SMD."""
    n_sim, covered = 200, 0
    for rep in range(n_sim):
        ipd = make_ipd(n_trials=10, n_per_arm=40, smd=-0.3, tau=0.0, seed=1000 + rep)
        pooled = two_stage(ipd, OUTCOME, m=1).pooled
        covered += pooled.ci_low <= -0.3 <= pooled.ci_high
    # within 3 binomial standard errors of 95% (roughly 90.4% to 99.6%)
    tolerance = 3 * math.sqrt(0.95 * 0.05 / n_sim)
    assert abs(covered / n_sim - 0.95) <= tolerance, covered
    assert stats.binomtest(covered, n_sim, 0.95).pvalue > 0.001
