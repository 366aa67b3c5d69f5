"""Stability across folds, the within-trial permutation null, the ranking records, side by side, figures."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from mbi_predict.explain import (RANKING_KEYS, null_reference, permutation_null, permute_within_groups,
                                 ranking_records, side_by_side, stability)
from mbi_predict.explain import plots


def test_permutation_within_groups_keeps_each_groups_treated_count(rng):
    groups = np.repeat(["T01", "T02", "T03"], [40, 25, 60])
    T = np.concatenate([np.r_[np.ones(20), np.zeros(20)], np.r_[np.ones(17), np.zeros(8)],
                        np.r_[np.ones(30), np.zeros(30)]]).astype(int)
    permuted = permute_within_groups(T, groups, rng)
    for g in np.unique(groups):
        assert permuted[groups == g].sum() == T[groups == g].sum()
    assert not np.array_equal(permuted, T)


def test_stability_t_interval_ranks_and_top_k():
    folds = {"T1": {"a": 1.0, "b": 0.5, "c": 0.1}, "T2": {"a": 0.7, "b": 0.8, "c": 0.2},
             "T3": {"a": 0.9, "b": 0.2, "c": 0.3}}
    table = stability(folds, top_k=1).set_index("feature")
    values = np.array([1.0, 0.7, 0.9])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert table.loc["a", "importance"] == pytest.approx(values.mean())
    assert table.loc["a", "ci_high"] == pytest.approx(values.mean() + half)
    assert table.loc["a", "top_k_frequency"] == pytest.approx(2 / 3)
    assert table.loc["b", "rank_T2"] == 1 and table.loc["b", "rank_min"] == 1 and table.loc["b", "rank_max"] == 3
    assert list(table.index) == ["a", "b", "c"]


def test_stability_pools_with_the_meta_module_when_variances_are_given():
    from mbi_predict.meta import pool

    folds = {"T1": {"a": 1.0}, "T2": {"a": 0.6}, "T3": {"a": 0.9}, "T4": {"a": 0.8}}
    variances = {"T1": {"a": 0.01}, "T2": {"a": 0.02}, "T3": {"a": 0.01}, "T4": {"a": 0.04}}
    row = stability(folds, variances_by_fold=variances).iloc[0]
    expected = pool([1.0, 0.6, 0.9, 0.8], [0.01, 0.02, 0.01, 0.04], method="REML")
    assert row["importance"] == pytest.approx(expected.estimate)
    assert row["ci_high"] == pytest.approx(expected.ci_high)
    assert row["pooling"].startswith("random effects")


def test_null_reference_decisions_and_attainable_p():
    observed = {"strong": 5.0, "noise": 1.0}
    null_rows = [{"strong": 1.0 + 0.1 * b, "noise": 0.8 + 0.1 * (b % 4)} for b in range(19)]
    ref = null_reference(observed, null_rows)
    assert ref.rule == "pvalue" and ref.min_attainable_p == pytest.approx(0.05) and ref.test_status == "tested"
    assert ref.beats_null == {"strong": True, "noise": False}
    assert ref.pvalue["strong"] == pytest.approx(1 / 20) and ref.pvalue_familywise["strong"] == pytest.approx(1 / 20)
    assert ref.pvalue_familywise["noise"] >= ref.pvalue["noise"] > 0.05
    # B = 5 cannot reach 0.05: no decision at all (the old rule said "yes" at level 1/6)
    with pytest.warns(UserWarning, match=r"B = 5 cannot reach alpha 0.05 family-wise \(needs B >= 19\)"):
        small = null_reference(observed, null_rows[:5])
    assert small.test_status == "not_tested" and small.beats_null == {"strong": None, "noise": None}
    assert "not tested" in small.describe_rule() and small.to_dict()["reason"].startswith("B = 5")
    with pytest.warns(DeprecationWarning), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        strict = null_reference(observed, null_rows[:5], rule="exceeds_null_max")
    assert not any(strict.beats_null.values()) and strict.rule == "pvalue"


def test_permutation_null_calls_back_with_permuted_arms(rng):
    groups = np.repeat(["A", "B"], 50)
    T = np.tile([0, 1], 50)
    seen = []

    def fit_and_explain(t):
        seen.append(t.copy())
        return {"x": float(np.mean(t[:10]))}

    with pytest.warns(UserWarning, match="cannot reach"):
        ref = permutation_null(fit_and_explain, T, groups, B=4, seed=3)
    assert ref.B == 4 and len(seen) == 5
    assert all(s[groups == g].sum() == T[groups == g].sum() for s in seen for g in ("A", "B"))
    assert ref.null.shape == (4, 1)


def test_ranking_records_shape_and_order():
    folds = {"T1": {"a": 0.2, "b": 0.5}, "T2": {"a": 0.3, "b": 0.6}}
    table = stability(folds, top_k=1)
    ref = null_reference({"a": 0.25, "b": 0.55}, [{"a": 0.3, "b": 0.1}] * 19)
    records = ranking_records(table, ref)
    assert [tuple(r) for r in records] == [RANKING_KEYS] * 2
    assert [r["feature"] for r in records] == ["b", "a"]
    assert records[0]["beats_null"] is True and records[1]["beats_null"] is False
    assert records[0]["null_p"] == pytest.approx(0.05) and records[0]["null_status"] == "tested"
    untested = ranking_records(table)
    assert [r["beats_null"] for r in untested] == [None, None] and untested[0]["null_status"] == "no_null"


def test_side_by_side_maps_categorical_terms_back():
    ranking = pd.DataFrame({"feature": ["baseline_distress", "gender", "age"], "importance": [0.3, 0.1, 0.05],
                            "ci_low": [0.2, 0.05, 0.0], "ci_high": [0.4, 0.2, 0.1], "top_k_frequency": [1, .5, 0]})
    interactions = [{"modifier": "gender[male]", "estimate": 0.1, "ci_low": -0.1, "ci_high": 0.3, "pvalue": 0.4},
                    {"modifier": "gender[other]", "estimate": 0.2, "ci_low": -0.5, "ci_high": 0.9, "pvalue": 0.6},
                    {"modifier": "baseline_distress", "variable": "baseline_distress", "estimate": -0.3,
                     "ci_low": -0.4, "ci_high": -0.2, "pvalue": 0.001},
                    {"modifier": "education[tertiary]", "estimate": 0.0, "ci_low": -0.1, "ci_high": 0.1,
                     "pvalue": 0.9}]
    table = side_by_side(ranking, interactions)
    assert list(table["feature"]) == ["baseline_distress", "gender", "gender", "age", "education"]
    assert table.loc[0, "interaction_estimate"] == -0.3
    assert set(table.loc[table.feature == "gender", "interaction_term"]) == {"gender[male]", "gender[other]"}
    assert math.isnan(table.loc[3, "interaction_estimate"]) and math.isnan(table.loc[4, "shap_importance"])


def test_figures_are_built_without_pyplot(strong):
    from mbi_predict.explain import explain_effect
    from mbi_predict.models.effect import make_effect_model
    from explain_data import OUTCOME

    ipd, _, X = strong
    model = make_effect_model("interaction_linear", alpha=0.0).fit(ipd[OUTCOME], ipd["arm"], X=X,
                                                                   groups=ipd["trial_id"])
    original = ipd[["age", "gender", "baseline_distress", "baseline_mindfulness"]].assign(
        baseline_anxiety=X["baseline_anxiety"], baseline_depression=X["baseline_depression"],
        baseline_wellbeing=X["baseline_wellbeing"], education=ipd["education"])
    explanation = explain_effect(model, X, background=X, max_rows=200, original=original)
    folds = {"T1": explanation.importance(), "T2": explanation.importance()}
    ref = null_reference(explanation.importance(), [{f: 0.01 * (1 + b % 3) for f in explanation.feature_names}
                                                    for b in range(19)])
    arm = ipd["arm"].to_numpy()[explanation.row_index]
    figures = [plots.beeswarm(explanation), plots.beeswarm(explanation, participant_level=True),
               plots.importance_bars(stability(folds), ref),
               plots.dependence(explanation, top=2, color_by=arm),
               plots.dependence(explanation, ["gender"], anonymise=False),
               plots.benefit_profile(model.effect(X), ipd, ["baseline_distress", "gender"])]
    assert all(isinstance(f, Figure) for f in figures)
    profile_axes = figures[-1].axes[0]
    # aggregates only: no scatter of participants in the benefit profile
    assert not profile_axes.collections or all(len(c.get_offsets()) <= 10 for c in profile_axes.collections)
    # the default beeswarm and dependence plots: aggregates, never one mark per participant
    for figure in (figures[0], figures[3]):
        for ax in figure.axes:
            assert all(len(c.get_offsets()) < 20 for c in ax.collections if hasattr(c, "get_offsets"))
            assert all(len(line.get_xdata()) <= 10 for line in ax.lines)
    assert any(len(c.get_offsets()) == explanation.n_rows for c in figures[1].axes[0].collections)
