"""Scientific checks against the simulator's truth: the true modifiers rank first and beat the within-trial
permutation null on `strong` (family-wise, B = 19); on `null`, nothing beats it in at least 90% of seeds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from explain_data import OUTCOME, numeric_design, passive_analysis_rows
from mbi_predict.explain import explain_effect, make_fit_and_explain, permutation_null
from mbi_predict.models.effect import TLearner

TRUE_MODIFIERS = {"baseline_distress", "baseline_mindfulness"}


def _null_test(scenario: str, seed: int, *, n_trials: int, n: int, B: int = 19):
    ipd, _ = passive_analysis_rows(scenario, seed=seed, n_trials=n_trials, n=n)
    X = numeric_design(ipd)
    fit_and_explain = make_fit_and_explain(TLearner(base_learner=LinearRegression()), ipd[OUTCOME].to_numpy(), X,
                                           groups=ipd["trial_id"].to_numpy(), max_rows=300, max_background=50,
                                           seed=seed)
    return permutation_null(fit_and_explain, ipd["arm"].to_numpy(), ipd["trial_id"].to_numpy(), B=B, seed=seed,
                            Y=ipd[OUTCOME].to_numpy())


def test_true_modifiers_rank_first_for_a_tlearner_cate(strong):
    ipd, truth, X = strong
    model = TLearner(base_learner="xgboost").fit(ipd[OUTCOME], ipd["arm"], X=X, groups=ipd["trial_id"])
    explanation = explain_effect(model, X, background=X, max_rows=300, max_background=60)
    importance = explanation.importance()
    assert max(importance, key=importance.get) == "baseline_distress"
    linear = TLearner(base_learner="elasticnet").fit(ipd[OUTCOME], ipd["arm"], X=X, groups=ipd["trial_id"])
    importance = explain_effect(linear, X, background=X, max_rows=300, max_background=60).importance()
    assert set(sorted(importance, key=importance.get, reverse=True)[:2]) == TRUE_MODIFIERS
    # the explained CATE tracks the true individual effect
    cate = linear.effect(X)
    assert np.corrcoef(cate, truth["true_effect_passive_distress_fu1_6"].fillna(0))[0, 1] > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_modifiers_beat_the_within_trial_permutation_null(seed):
    ref = _null_test("strong", seed, n_trials=10, n=6000)
    top_two = sorted(ref.observed, key=ref.observed.get, reverse=True)[:2]
    assert set(top_two) == TRUE_MODIFIERS
    assert {f for f, beats in ref.beats_null.items() if beats} >= TRUE_MODIFIERS


@pytest.mark.slow
def test_nothing_beats_the_null_when_there_is_no_heterogeneity():
    seeds = range(10)
    clean = [not any(_null_test("null", seed, n_trials=8, n=3000).beats_null.values()) for seed in seeds]
    assert np.mean(clean) >= 0.9, f"features beat the null in seeds {[s for s, ok in zip(seeds, clean) if not ok]}"
