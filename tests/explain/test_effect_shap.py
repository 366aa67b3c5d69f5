"""SHAP of the CATE: T-learner differences on a common background add up to CATE - mean CATE(background)."""

from __future__ import annotations

import numpy as np
import pytest
from xgboost import XGBRegressor

from explain_data import OUTCOME
from mbi_predict.errors import ConfigError
from mbi_predict.explain import explain_effect, tlearner_cate_shap
from mbi_predict.models.effect import make_effect_model


def _arm_models(ipd, X):
    y, t = ipd[OUTCOME].to_numpy(), ipd["arm"].to_numpy()
    fit = [XGBRegressor(n_estimators=60, max_depth=3, learning_rate=0.1, n_jobs=1, random_state=0).fit(
        X[t == arm], y[t == arm]) for arm in (0, 1)]
    return fit[0], fit[1]


def test_tlearner_difference_adds_up_to_cate_minus_mean_background_cate(strong):
    ipd, _, X = strong
    control, treated = _arm_models(ipd, X)
    rows, background = X.iloc[:150], X.iloc[500:580]
    explanation = tlearner_cate_shap(control, treated, rows, background)
    cate = treated.predict(rows) - control.predict(rows)
    assert explanation.kind == "tree"
    assert explanation.additivity_error < 1e-4
    np.testing.assert_allclose(explanation.values.sum(axis=1) + explanation.base_value, cate, atol=1e-4)
    background_cate = treated.predict(background) - control.predict(background)
    assert explanation.base_value == pytest.approx(float(np.mean(background_cate)), abs=1e-5)


@pytest.mark.parametrize("name, extra, kind", [("t_learner_xgb", {}, "tree"), ("interaction_linear", {}, "linear"),
                                               ("dr_learner", {}, "linear"),  # the elastic net final stage
                                               ("dr_learner", {"final_model": "linear"}, "linear"),  # OLS
                                               ("s_learner", {}, "tree")])
def test_effect_models_explanations_add_up(strong, name, extra, kind):
    ipd, _, X = strong
    params = {"n_folds": 3, **extra}
    model = make_effect_model(name, **params).fit(ipd[OUTCOME], ipd["arm"], X=X, groups=ipd["trial_id"])
    assert (getattr(model, "final_model_", None) is None) == (extra.get("final_model") == "linear" or
                                                              name != "dr_learner")
    explanation = explain_effect(model, X, background=X, max_rows=120, max_background=60, seed=1)
    assert explanation.kind == kind
    assert explanation.output == "CATE (outcome units)"
    cate = model.effect(X.iloc[explanation.row_index])
    np.testing.assert_allclose(explanation.values.sum(axis=1) + explanation.base_value, cate, atol=1e-4)


def test_linear_cate_shap_is_slope_times_deviation(strong):
    ipd, _, X = strong
    model = make_effect_model("interaction_linear", alpha=0.0).fit(ipd[OUTCOME], ipd["arm"], X=X,
                                                                   groups=ipd["trial_id"])
    background = X.iloc[:200]
    explanation = explain_effect(model, X, background=background, max_rows=50, max_background=200)
    rows = X.iloc[explanation.row_index].to_numpy()
    expected = model.interaction_coef_ * (rows - background.to_numpy().mean(axis=0))
    np.testing.assert_allclose(explanation.values, expected, atol=1e-12)


def test_mapping_back_sums_dummies_to_their_covariate(strong):
    ipd, _, X = strong
    model = make_effect_model("interaction_linear", alpha=0.0).fit(ipd[OUTCOME], ipd["arm"], X=X,
                                                                   groups=ipd["trial_id"])
    encoded = explain_effect(model, X, background=X, max_rows=80, seed=2)
    original = explain_effect(model, X, background=X, max_rows=80, seed=2, original=ipd[["age", "gender",
                              "education", "baseline_distress", "baseline_anxiety", "baseline_depression",
                              "baseline_wellbeing", "baseline_mindfulness"]])
    gender = encoded.values[:, [encoded.feature_names.index(c) for c in ("gender_male", "gender_other")]].sum(axis=1)
    np.testing.assert_allclose(original.values[:, original.feature_names.index("gender")], gender, atol=1e-12)
    assert set(original.data["gender"]) <= {"female", "male", "other"}


def test_requested_feature_not_in_model_is_named(strong):
    ipd, _, X = strong
    model = make_effect_model("interaction_linear", alpha=0.0).fit(ipd[OUTCOME], ipd["arm"], X=X,
                                                                   groups=ipd["trial_id"])
    with pytest.raises(ConfigError, match="shoe_size"):
        explain_effect(model, X, background=X, features=["baseline_distress", "shoe_size"])
    with pytest.raises(ConfigError, match="baseline_distress"):
        explain_effect(model, X.drop(columns="baseline_distress"), background=X)


def test_effect_model_without_exact_path_falls_back_with_a_warning(strong):
    ipd, _, X = strong
    model = make_effect_model("path_risk", n_folds=3).fit(ipd[OUTCOME], ipd["arm"], X=X, groups=ipd["trial_id"])
    with pytest.warns(UserWarning, match="permutation explainer"):
        explanation = explain_effect(model, X, background=X, max_rows=10, max_background=10)
    assert explanation.kind == "permutation"
    assert explanation.additivity_error < 1e-8
