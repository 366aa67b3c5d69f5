"""Within-trial interactions recover a built-in effect modifier and differ from the ecological slope."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mbi_predict.errors import DataError, MBIError
from mbi_predict.meta import interactions

OUTCOME = "distress_post"


def make_consortium(within: float = 0.3, ecological: float = -0.5, n_trials: int = 10, n_per_arm: int = 120,
                    missing: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Modifier x = mu_t + N(0, 1) in trial t; the MBI effect of a participant is
    delta_t + within * (x - mu_t) with delta_t = 0.2 + ecological * mu_t: inside trials the effect rises with x,
    across trials (confounded by mu_t) it falls. The within-trial analysis must find `within`, the across-trial
    meta-regression `ecological`."""
    rng = np.random.default_rng(seed)
    parts = []
    for t in range(n_trials):
        mu = rng.uniform(-1.5, 1.5)
        delta = 0.2 + ecological * mu
        n = 2 * n_per_arm
        arm = np.repeat([1, 0], n_per_arm)
        x = mu + rng.standard_normal(n)
        base = rng.standard_normal(n)
        y = 0.5 * base + 0.2 * (x - mu) + arm * (delta + within * (x - mu)) + 0.7 * rng.standard_normal(n)
        group = np.where(rng.random(n) < 0.5, "group_a", "group_b")
        y = y + 0.25 * arm * (group == "group_b")  # a binary text modifier with a built-in interaction of 0.25
        parts.append(pd.DataFrame({
            "trial_id": f"T{t:02d}", "arm": arm, "control_type": np.where(arm == 0, "passive", None),
            "baseline_distress": base, "x": x, "group": group, "site_constant": float(t), OUTCOME: y}))
    ipd = pd.concat(parts, ignore_index=True)
    ipd.loc[rng.random(len(ipd)) < missing, OUTCOME] = np.nan
    return ipd


@pytest.fixture(scope="module", params=[True, False], ids=["joint", "separate"])
def found(request) -> dict[str, dict]:
    """Both modes: x and group are independent here, so the joint and the one-at-a-time fits agree in substance."""
    ipd = make_consortium(seed=1)
    records = interactions(ipd, OUTCOME, ["x", "group", "site_constant"], m=1, joint=request.param)
    assert {r["model"] for r in records} == {"joint" if request.param else "separate"}
    return {r["modifier"]: r for r in records}


def test_within_trial_interaction_is_recovered_and_differs_from_the_ecological_one(found):
    x = found["x"]
    assert x["k"] == 10 and x["kind"] == "continuous"
    assert x["ci_low"] < 0.3 < x["ci_high"]
    assert abs(x["estimate"] - 0.3) < 0.1
    assert x["across_trial_estimate"] == pytest.approx(-0.5, abs=0.15)
    assert x["across_trial_k"] == 10
    # the two disagree beyond their uncertainty: this is the ecological bias the within-trial estimate avoids
    gap = x["estimate"] - x["across_trial_estimate"]
    assert gap / math.hypot(x["se"], x["across_trial_se"]) > 3
    assert "per 1 unit" in x["scale"]


def test_binary_text_modifier_is_a_level_contrast(found):
    g = found["group[group_b]"]
    assert g["kind"] == "categorical" and g["variable"] == "group"
    assert g["ci_low"] < 0.25 < g["ci_high"]


def test_modifier_constant_within_trials_is_skipped_everywhere(found):
    s = found["site_constant"]
    assert s["k"] == 0 and math.isnan(s["estimate"])
    assert len(s["skipped_trials"]) == 10
    assert all("does not vary" in item["reason"] for item in s["skipped_trials"])


def test_multilevel_categorical_names_levels_and_skips_trials_without_variation():
    ipd = make_consortium(n_trials=4, n_per_arm=60, seed=2)
    rng = np.random.default_rng(3)
    ipd["setting"] = rng.choice(["clinic", "online", "work"], len(ipd))
    ipd.loc[ipd["trial_id"] == "T03", "setting"] = "clinic"  # does not vary in T03
    res = {r["modifier"]: r for r in interactions(ipd, OUTCOME, ["setting"], m=1, joint=False)}
    joint = {r["modifier"]: r for r in interactions(ipd, OUTCOME, ["setting"], m=1)}
    for term, record in res.items():  # with one modifier the joint model is the one-at-a-time model
        assert record["model"] == "separate" and joint[term]["model"] == "joint"
        assert joint[term]["estimate"] == pytest.approx(record["estimate"], abs=1e-12)
        assert joint[term]["se"] == pytest.approx(record["se"], abs=1e-12)
        assert joint[term]["skipped_trials"] == record["skipped_trials"]
    assert set(res) == {"setting[online]", "setting[work]"}
    for item in res.values():
        assert item["k"] == 3
        assert [s["trial_id"] for s in item["skipped_trials"]] == ["T03"]


def test_interactions_with_missing_outcomes_use_imputation():
    ipd = make_consortium(n_trials=5, n_per_arm=100, missing=0.2, seed=4)
    res = interactions(ipd, OUTCOME, ["x"], m=3, seed=1)[0]
    assert res["k"] == 5 and res["ci_low"] < 0.3 < res["ci_high"]
    assert all(t["fmi"] > 0 for t in res["trials"])


def test_bad_modifier_and_binary_outcome():
    ipd = make_consortium(n_trials=3, n_per_arm=20)
    with pytest.raises(DataError, match="nope"):
        interactions(ipd, OUTCOME, ["nope"], m=1)
    ipd["deteriorated_distress_post"] = (ipd[OUTCOME] > 1).astype(float)
    with pytest.raises(MBIError, match="continuous outcomes only"):
        interactions(ipd, "deteriorated_distress_post", ["x"], m=1)
