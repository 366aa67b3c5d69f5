"""CATE estimators: contract (clone, params, seeds, checks), known propensity, recovery of a known CATE."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models.effect import (EFFECT_MODELS, CausalForest, DRLearner, InteractionLinear, PathRiskModel,
                                       TLearner, make_effect_model)

FAST = {"causal_forest": dict(n_estimators=48)}  # keeps the contract tests quick


def consortium(n_trials=8, per_trial=150, ratios=(0.5,), seed=0, binary=False, p=5):
    """Pooled trials with a linear CATE tau = 0.6 x0 - 0.4 x1 and trial-level outcome shifts."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_trials), per_trial)
    X = rng.normal(size=(len(groups), p))
    ratio = np.asarray(ratios)[groups % len(ratios)]
    t = (rng.random(len(groups)) < ratio).astype(int)
    tau = 0.6 * X[:, 0] - 0.4 * X[:, 1]
    mu0 = X[:, 2] + 0.5 * X[:, 3] + rng.normal(0, 0.5, n_trials)[groups]
    if binary:
        risk0 = 1 / (1 + np.exp(-(mu0 - 0.5)))
        risk1 = 1 / (1 + np.exp(-(mu0 - 0.5 + 2 * tau)))
        y = (rng.random(len(groups)) < np.where(t == 1, risk1, risk0)).astype(float)
        return y, t, X, groups, risk1 - risk0
    return mu0 + t * tau + rng.normal(size=len(groups)), t, X, groups, tau


@pytest.fixture(scope="module")
def data():
    return consortium()


@pytest.mark.parametrize("name", sorted(EFFECT_MODELS))
def test_clone_params_fit_effect_reproducible(name, data):
    y, t, X, groups, _ = data
    model = make_effect_model(name, **FAST.get(name, {}))
    params = model.get_params()
    twin = clone(model)
    assert twin.get_params() == params and twin is not model
    twin.set_params(random_state=3)
    assert twin.get_params()["random_state"] == 3 and model.get_params()["random_state"] == 0
    first = model.fit(y, t, X=X, groups=groups).effect(X)
    assert first.shape == (len(y),) and np.all(np.isfinite(first))
    second = clone(model).fit(y, t, X=X, groups=groups).effect(X)
    np.testing.assert_allclose(first, second)
    assert not any(k.endswith("_") for k in clone(model).__dict__)  # clone of a fitted model is unfitted


@pytest.mark.parametrize("name", sorted(EFFECT_MODELS))
def test_effect_before_fit_raises(name, data):
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        make_effect_model(name).effect(data[2])


@pytest.mark.parametrize("name", ["causal_forest", "t_learner_xgb", "t_learner_enet", "interaction_linear",
                                  "dr_learner", "x_learner"])
def test_recovers_strong_linear_cate(name):
    y, t, X, groups, tau = consortium(n_trials=10, per_trial=250, seed=1)
    X_new, tau_new = X[:500], tau[:500]
    model = make_effect_model(name).fit(y[500:], t[500:], X=X[500:], groups=groups[500:])
    assert np.corrcoef(model.effect(X_new), tau_new)[0, 1] > 0.8


def test_known_propensity_is_each_trials_randomisation_ratio():
    y, t, X, groups, _ = consortium(ratios=(0.5, 0.75), seed=2)
    share = pd.Series(t).groupby(groups).transform("mean").to_numpy()
    model = CausalForest(n_estimators=48).fit(y, t, X=X, groups=groups)
    np.testing.assert_allclose(model.propensity_, share)
    # the treatment model econml actually used in its cross-fitting returns the same ratio
    for nuisance in model.forest_.models_t[0]:
        np.testing.assert_allclose(nuisance.predict_proba(np.column_stack([X, share]))[:, 1], share)
    no_groups = TLearner(base_learner="ridge").fit(y, t, X=X)
    np.testing.assert_allclose(no_groups.propensity_, t.mean())
    given = np.full(len(y), 0.6)
    np.testing.assert_allclose(TLearner(base_learner="ridge").fit(y, t, X=X, propensity=given).propensity_, given)


def test_estimated_propensity_is_cross_fitted_and_clipped(data):
    y, t, X, groups, _ = data
    e = TLearner(base_learner="ridge", propensity="estimated").fit(y, t, X=X, groups=groups).propensity_
    assert np.all((e >= 0.01) & (e <= 0.99)) and abs(e.mean() - t.mean()) < 0.05
    with pytest.raises(ConfigError):
        TLearner(propensity="estimated").fit(y, t, X=X, propensity=np.full(len(y), 0.5))


def test_unequal_randomisation_ratios_do_not_bias_the_t_learner():
    """Trials randomised 1:1 and 4:1 with different outcome levels and no effect: weighting keeps the ATE ~ 0."""
    rng = np.random.default_rng(5)
    groups = np.repeat([0, 1], 2000)
    t = (rng.random(4000) < np.where(groups == 0, 0.5, 0.8)).astype(int)
    X = rng.normal(size=(4000, 2))
    y = 2.0 * groups + X[:, 0] + rng.normal(size=4000)  # trial shifts the outcome; X does not reveal the trial
    weighted = TLearner(base_learner="ridge").fit(y, t, X=X, groups=groups).ate(X)
    naive = y[t == 1].mean() - y[t == 0].mean()
    assert abs(weighted) < 0.1 < abs(naive)


def test_binary_outcome_t_learner_gives_risks():
    y, t, X, groups, true_rd = consortium(binary=True, seed=3, per_trial=250)
    model = TLearner(base_learner="elasticnet").fit(y, t, X=X, groups=groups)
    risk0, risk1 = model.predict_risk(X)
    assert np.all((risk0 >= 0) & (risk0 <= 1) & (risk1 >= 0) & (risk1 <= 1))
    np.testing.assert_allclose(model.effect(X), risk1 - risk0)
    assert np.corrcoef(model.effect(X), true_rd)[0, 1] > 0.6
    for name in ("dr_learner", "interaction_linear", "s_learner", "x_learner", "causal_forest", "path_risk"):
        cate = make_effect_model(name, **FAST.get(name, {})).fit(y, t, X=X, groups=groups).effect(X)
        assert np.all(np.abs(cate) <= 1.5)  # risk differences from a linear-probability fit
    with pytest.raises(ConfigError):
        TLearner(base_learner="ridge").fit(*consortium()[:2], X=consortium()[2]).predict_risk(X)


def test_intervals_where_defensible(data):
    y, t, X, groups, tau = data
    for model in (DRLearner(outcome_learner="ridge", final_model="linear"),
                  InteractionLinear(alpha=0.0), CausalForest(n_estimators=48)):
        model.fit(y, t, X=X, groups=groups)
        low, high = model.effect_interval(X[:50])
        est = model.effect(X[:50])
        assert low.shape == (50,) and np.all(low <= est + 1e-12) and np.all(est <= high + 1e-12)
        assert np.all(high > low)
    dr = DRLearner(outcome_learner="ridge", final_model="linear").fit(y, t, X=X, groups=groups)
    assert dr.final_df_ == len(np.unique(groups)) - 1
    low, high = dr.effect_interval(X)
    assert 0.8 < np.mean((low <= tau) & (tau <= high)) <= 1.0  # linear truth: pointwise CIs cover mostly
    # the default DR-learner's penalised final stage, like the default InteractionLinear's, gives none
    for model in (TLearner(base_learner="ridge"), InteractionLinear(), PathRiskModel(),
                  DRLearner(outcome_learner="ridge")):
        with pytest.raises(ConfigError, match="no defensible"):
            model.fit(y, t, X=X, groups=groups).effect_interval(X)


def test_interaction_linear_penalises_interactions_only(data):
    y, t, X, groups, tau = data
    heavy = InteractionLinear(alpha=100.0).fit(y, t, X=X, groups=groups)
    assert np.allclose(heavy.interaction_coef_, 0)
    assert abs(heavy.treatment_coef_ - tau.mean()) < 0.15  # the average effect is not shrunk
    ols = InteractionLinear(alpha=0.0).fit(y, t, X=X, groups=groups)
    np.testing.assert_allclose(ols.interaction_coef_[:2], [0.6, -0.4], atol=0.15)


def test_path_risk_finds_risk_based_heterogeneity():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(6), 300)
    X = rng.normal(size=(1800, 3))
    t = rng.integers(0, 2, 1800)
    risk = X[:, 0] + 0.5 * X[:, 1]
    y = risk + t * (-0.2 - 0.5 * risk) + rng.normal(size=1800)  # those at higher risk benefit more
    stratified = PathRiskModel(n_groups=4).fit(y, t, X=X, groups=groups)
    assert np.all(np.diff(stratified.group_effects_) < 0) and stratified.group_sizes_.sum() == 1800
    smooth = PathRiskModel(smooth=True).fit(y, t, X=X, groups=groups)
    assert abs(smooth.smooth_coef_[1] + 0.5) < 0.15


def test_pandas_feature_names_are_kept_and_checked(data):
    y, t, X, groups, _ = data
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    model = TLearner(base_learner="ridge").fit(y, t, X=frame, groups=groups)
    assert list(model.feature_names_in_) == list(frame.columns)
    np.testing.assert_allclose(model.effect(frame), model.effect(X))
    with pytest.raises(DataError, match="columns differ"):
        model.effect(frame[frame.columns[::-1]])
    with pytest.raises(DataError, match="covariates"):
        model.effect(X[:, :2])


@pytest.mark.parametrize("case, message", [
    ("t_not_binary", "coded 0"), ("one_arm", "one arm"), ("constant_y", "constant"),
    ("too_few", "too few"), ("nan_x", "missing"), ("single_arm_trial", "only one arm"), ("nan_y", "missing"),
])
def test_bad_inputs_raise_data_errors(case, message, data):
    y, t, X, groups, _ = (a.copy() for a in data)
    if case == "t_not_binary":
        t = t * 2
    elif case == "one_arm":
        t[:] = 1
    elif case == "constant_y":
        y[:] = 1.0
    elif case == "too_few":
        y, t, X, groups = y[:12], np.r_[np.ones(6), np.zeros(6)].astype(int), X[:12], groups[:12]
    elif case == "nan_x":
        X[0, 0] = np.nan
    elif case == "single_arm_trial":
        t[groups == 0] = 1
    elif case == "nan_y":
        y[3] = np.nan
    with pytest.raises(DataError, match=message):
        TLearner(base_learner="ridge").fit(y, t, X=X, groups=groups)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown effect model"):
        make_effect_model("deep_forest")
    with pytest.raises(ConfigError):
        make_effect_model("causal_forest", n_trees=10)
    y, t, X, groups, _ = consortium(n_trials=4, per_trial=60)
    with pytest.raises(ConfigError, match="multiple"):
        CausalForest(n_estimators=50).fit(y, t, X=X, groups=groups)
    with pytest.raises(ConfigError):
        TLearner(base_learner="lightgbm").fit(y, t, X=X, groups=groups)
    with pytest.raises(ConfigError):
        TLearner(propensity="guessed").fit(y, t, X=X, groups=groups)


def test_inner_tuning_and_dr_ate_respect_trials(data, recorded_folds):
    y, t, X, groups, tau = data
    enet = TLearner(base_learner="elasticnet").fit(y, t, X=X, groups=groups)
    assert len(recorded_folds) == 2   # one per arm: the penalty is chosen over folds of whole trials
    for folds, arm_groups in recorded_folds:
        assert len(folds) == 5
        assert all(not set(arm_groups[train]) & set(arm_groups[test]) for train, test in folds)
    assert all(model.cv == 5 for model in enet.models_)   # the folds' row indices are not kept after the fit
    before = len(recorded_folds)
    DRLearner(outcome_learner="ridge", final_model="linear").fit(y, t, X=X, groups=groups)
    cross_fitting = len(recorded_folds) - before
    dr = DRLearner(outcome_learner="ridge").fit(y, t, X=X, groups=groups)
    assert dr.ate_["n_clusters"] == len(np.unique(groups)) and dr.ate_["ci_low"] < tau.mean() < dr.ate_["ci_high"]
    # the default final stage (an elastic net of the pseudo-outcomes) chooses its penalty over whole trials too:
    # one grouped split more than the OLS final stage's fit
    assert len(recorded_folds) - before == 2 * cross_fitting + 1
    final_folds, final_groups = recorded_folds[-1]
    assert len(final_groups) == len(y) and len(final_folds) == 5
    assert all(not set(final_groups[train]) & set(final_groups[test]) for train, test in final_folds)
    assert dr.final_model_.cv == 5


def test_dr_learner_final_stage_shrinks_towards_a_constant_effect_where_none_varies():
    """With no effect modifier the elastic net final stage keeps the average effect and shrinks the slopes that
    OLS fits to the pseudo-outcomes' noise (its error is lower in every one of six consortia and, on average, by
    more than a fifth); with a linear modifier it keeps the modifier's direction and most of its size (the penalty
    shrinks true slopes a little too)."""
    ratios = []
    for seed in range(6):
        y, t, X, groups, tau = consortium(n_trials=10, per_trial=300, seed=seed)
        constant = np.where(t == 1, y - tau + 0.3, y)  # the same data with a constant effect of 0.3
        pehe = {}
        for final in ("linear", "elasticnet"):
            model = DRLearner(outcome_learner="ridge", final_model=final).fit(constant, t, X=X, groups=groups)
            pehe[final] = np.sqrt(np.mean((model.effect(X) - 0.3) ** 2))
            assert abs(model.effect(X).mean() - 0.3) < 0.15
        ratios.append(pehe["elasticnet"] / pehe["linear"])
        slopes = DRLearner(outcome_learner="ridge").fit(y, t, X=X, groups=groups).final_model_.coef_
        assert slopes[0] == pytest.approx(0.6, abs=0.2) and slopes[1] == pytest.approx(-0.4, abs=0.2)
        assert np.all(np.abs(slopes[2:]) < 0.15)  # the covariates that modify nothing stay near 0
    assert max(ratios) < 1 and np.mean(ratios) < 0.8


def test_causal_forest_auto_nuisance_picks_ridge_for_linear_and_boosting_for_nonlinear_prognosis():
    """model_y="auto": econml's first-stage selection between ridge and xgboost by cross-fitted error over the same
    whole-trial folds; a linear prognosis goes to ridge, a step-shaped one to boosting."""
    y, t, X, groups, tau = consortium(n_trials=8, per_trial=200, seed=4)
    linear = CausalForest(n_estimators=48).fit(y, t, X=X, groups=groups)
    assert linear.selected_model_y_ == "Ridge"
    rng = np.random.default_rng(5)
    stepped = 3.0 * np.sign(X[:, 2]) * (np.abs(X[:, 3]) > 1) + t * tau + rng.normal(size=len(y))
    boosted = CausalForest(n_estimators=48).fit(stepped, t, X=X, groups=groups)
    assert boosted.selected_model_y_ == "XGBRegressor"
    fixed = CausalForest(n_estimators=48, model_y="xgboost").fit(y, t, X=X, groups=groups)
    assert fixed.selected_model_y_ == "XGBRegressor"
    # with an estimated propensity there is no selection: the outcome model's errors would bias the effect
    observational = CausalForest(n_estimators=48, propensity="estimated").fit(y, t, X=X, groups=groups)
    assert observational.selected_model_y_ == "XGBRegressor"


def test_causal_forest_ridge_penalty_is_chosen_over_whole_trials():
    """econml runs the ridge nuisance's penalty search over the forest's cross-fitting folds of whole trials (a
    grid search). A penalty chosen row by row (RidgeCV's own leave-one-out, which is faster) lets the propensity
    column, constant within a trial, fit the training trials' outcome shifts: below zero R^2 on held-out trials."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import GridSearchCV

    from mbi_predict.models import _effect_common as common

    y, t, X, groups, tau = consortium(n_trials=8, per_trial=200, seed=4)
    forest = CausalForest(n_estimators=8, model_y="ridge").fit(y, t, X=X, groups=groups)
    nuisance_X = np.column_stack([X, common.known_propensity(t, groups)])   # what econml's model_y sees
    folds = common.make_folds(t, groups, forest.n_folds, forest._seed())
    alphas = common.make_regressor("ridge", 0).alphas
    by_trials = GridSearchCV(Ridge(), {"alpha": list(alphas)}, cv=folds).fit(nuisance_X, y).best_params_["alpha"]
    fitted = forest.forest_.models_y[0]
    assert [type(m).__name__ for m in fitted] == ["Ridge"] * len(folds)
    loo_scores = []
    for (train, test), model in zip(folds, fitted):
        assert model.alpha == by_trials
        assert model.score(nuisance_X[test], y[test]) > 0.2
        loo_scores.append(RidgeCV(alphas=alphas).fit(nuisance_X[train], y[train]).score(nuisance_X[test], y[test]))
    assert min(loo_scores) < 0


def test_causal_forest_rows_per_tree_are_capped_only_for_large_data():
    from mbi_predict.models.effect import MAX_TREE_ROWS

    forest = CausalForest()
    assert forest._max_samples(2_000) == 0.45
    assert forest._max_samples(int(MAX_TREE_ROWS / 0.45)) == 0.45
    assert forest._max_samples(186_853) == MAX_TREE_ROWS  # a 240k consortium's passive-control comparison
    assert CausalForest(max_samples=0.3)._max_samples(10 ** 6) == 0.3
    y, t, X, groups, _ = consortium(n_trials=4, per_trial=100, seed=6)
    with pytest.raises(ConfigError, match="max_samples"):
        CausalForest(max_samples=0.7).fit(y, t, X=X, groups=groups)
    with pytest.raises(ConfigError, match="criterion"):
        CausalForest(criterion="gini").fit(y, t, X=X, groups=groups)
