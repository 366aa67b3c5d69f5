"""The stacked base learner ('stack': an elastic net and xgboost, non-negative weights on cross-fitted predictions), the
default of the X-learner and of ``t_learner_stack``: folds of whole trials, accuracy where xgboost alone is noisy,
and exact SHAP through the stack."""

from __future__ import annotations

import numpy as np
import pytest

from mbi_predict.errors import ConfigError
from mbi_predict.models import _effect_common as common
from mbi_predict.models.effect import make_effect_model


def _trials(seed: int, n: int = 1600, n_trials: int = 8):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    t = rng.integers(0, 2, n)
    trial = rng.integers(0, n_trials, n)
    tau = 0.5 * X[:, 0] - 0.3 * X[:, 1]          # the effect varies smoothly with two traits
    y = X[:, 2] + 0.3 * trial + t * tau + rng.normal(size=n)
    return X, t, trial, tau, y


def test_the_stack_combines_an_elastic_net_and_xgboost_over_folds_of_whole_trials(recorded_folds):
    """The stack's folds and the elastic net's penalty search, on all rows and inside each stack fold, are all folds
    of whole trials; the penalty search of a fold sees only that fold's training trials."""
    X, t, trial, _, y = _trials(0)
    model = common.fit_weighted(common.make_regressor("stack", 0), X, y, groups=trial)
    is_stack_split = [len(groups) == len(y) and len(folds) == common.STACK_FOLDS for folds, groups in recorded_folds]
    assert sum(is_stack_split) == 1
    inner = [split for split, stack in zip(recorded_folds, is_stack_split) if not stack]
    # the elastic net on all rows (8 trials, 5 folds) and in each of the 3 stack folds (5-6 trials, 5 folds)
    assert len(inner) == 1 + common.STACK_FOLDS and all(len(folds) == 5 for folds, _ in inner)
    assert sorted(len(set(groups)) for _, groups in inner)[-1] == 8 and min(len(set(g)) for _, g in inner) < 8
    for folds, groups in recorded_folds:
        for train, test in folds:
            assert not set(groups[train]) & set(groups[test])   # no trial on both sides of a fold
    weights = model.final_estimator_.coef_
    assert np.all(weights >= 0) and weights.sum() > 0
    # the folds' row indices are not kept in the fitted model, nor a trial splitter in the unfitted one
    assert model.cv == common.STACK_FOLDS and model.get_params()["elasticnet__cv"] == 5
    seen = len(recorded_folds)
    without_groups = common.fit_weighted(common.make_regressor("stack", 0), X, y)
    assert without_groups.cv == common.STACK_FOLDS and len(recorded_folds) == seen   # plain K-fold without trials
    np.testing.assert_allclose(without_groups.final_estimator_.coef_.sum(), weights.sum(), rtol=0.5)


def test_unit_weights_fit_the_elastic_net_as_no_weights_do():
    """`_fit_routed` gives the stack unit weights when none are given (routing refuses an unrequested None): the
    elastic net's penalty search and fit are the same as without weights, on the same folds of whole trials."""
    from sklearn.linear_model import ElasticNetCV
    from sklearn.model_selection import GroupKFold

    X, t, trial, _, y = _trials(7, n=700)
    folds = list(GroupKFold(n_splits=5).split(X, y, trial))
    plain = ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9], alphas=common.ENET_PENALTIES, cv=folds).fit(X, y)
    unit = ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9], alphas=common.ENET_PENALTIES, cv=folds).fit(
        X, y, sample_weight=np.ones(len(y)))
    assert (plain.alpha_, plain.l1_ratio_) == (unit.alpha_, unit.l1_ratio_)
    np.testing.assert_allclose(plain.coef_, unit.coef_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n_trials", [2, 3])
def test_stacked_learners_fit_on_two_or_three_trials(n_trials):
    """With 2 trials each stack fold trains on one trial, and the DR-learner's own cross-fitting leaves 2 of 3: the
    elastic net then searches its penalty over rows of that trial (nothing to hold out across trials)."""
    X, t, trial, _, y = _trials(8, n=300 * n_trials, n_trials=n_trials)
    for name, params in (("x_learner", {}), ("t_learner_stack", {}), ("dr_learner", {"outcome_learner": "stack"})):
        model = make_effect_model(name, random_state=0, **params).fit(y, t, X=X, groups=trial)
        assert np.all(np.isfinite(model.effect(X[:50]))), name
    assert list(common.TrialFolds(n_splits=5).split(X[:40], y[:40], np.zeros(40)))   # one trial: folds of rows
    assert len(list(common.TrialFolds(n_splits=5).split(X[:40], y[:40]))) == 5        # no labels: folds of rows


@pytest.mark.parametrize("rows, labels", [(40, None), (40, np.zeros(40)), (3, None),
                                          (40, np.repeat([0, 1, 2], [10, 10, 20])), (40, np.arange(40) % 7)],
                         ids=["no labels", "one trial", "3 rows", "3 trials", "7 trials"])
def test_trial_folds_report_the_folds_they_make(rows, labels):
    """scikit-learn asks a splitter how many folds it makes: the count is capped at the trials present, and with
    fewer than 2 trials it is that of the folds of rows."""
    X = np.arange(2.0 * rows).reshape(rows, 2)
    folds = common.TrialFolds(n_splits=5)
    made = len(list(folds.split(X, None, labels)))
    assert folds.get_n_splits(X, None, labels) == made
    assert made == (min(5, rows) if labels is None or len(set(labels)) < 2 else min(5, len(set(labels))))
    assert folds.get_n_splits() == 5
    if labels is not None and len(set(labels)) >= 2:   # scikit-learn's group splitters are asked with labels alone
        assert folds.get_n_splits(groups=labels) == made


def test_stacked_learners_beat_xgboost_alone_where_the_effect_is_smooth():
    """Held-out PEHE over three draws: the stacked T- and X-learners well below the T-learner on xgboost alone."""
    errors = {"t_learner_xgb": [], "t_learner_stack": [], "x_learner": []}
    for seed in (1, 2, 3):
        X, t, trial, tau, y = _trials(seed)
        test = trial == 0
        for name in errors:
            model = make_effect_model(name, random_state=seed).fit(y[~test], t[~test], X=X[~test],
                                                                    groups=trial[~test])
            errors[name].append(np.sqrt(np.mean((model.effect(X[test]) - tau[test]) ** 2)))
    xgb = np.mean(errors["t_learner_xgb"])
    assert np.mean(errors["t_learner_stack"]) < 0.75 * xgb, errors
    assert np.mean(errors["x_learner"]) < 0.75 * xgb, errors


def test_shap_explains_a_stacked_learner_exactly_through_its_base_models():
    from mbi_predict.explain.effect_shap import explain_effect

    X, t, trial, _, y = _trials(4, n=900)
    for name in ("t_learner_stack", "x_learner"):
        model = make_effect_model(name, random_state=4).fit(y, t, X=X, groups=trial)
        explanation = explain_effect(model, X[:120], background=X[120:240], max_rows=120, max_background=60)
        assert explanation.additivity_error < 1e-4
        assert "permutation" not in explanation.method.lower(), explanation.method


def test_an_unknown_base_learner_names_the_choices():
    with pytest.raises(ConfigError, match="stack"):
        common.make_regressor("boosted", 0)


def test_every_stack_a_learner_fits_gets_folds_of_whole_trials(monkeypatch, recorded_folds):
    """Also the DR-learner's outcome models of a 0/1 outcome (classifiers); the causal forest refuses a stacked
    outcome model (econml cross-fits it itself, without the trials)."""
    X, t, trial, _, y = _trials(5, n=800)
    binary = (y > np.median(y)).astype(float)
    stacks = []
    real = common.fit_weighted

    def spy(model, X_, y_, sample_weight=None, groups=None):
        if common._is_stack(model):
            stacks.append(groups)
        return real(model, X_, y_, sample_weight, groups)

    monkeypatch.setattr(common, "fit_weighted", spy)
    make_effect_model("dr_learner", outcome_learner="stack", random_state=0).fit(binary, t, X=X, groups=trial)
    stack_splits = [(folds, groups) for folds, groups in recorded_folds if len(folds) == common.STACK_FOLDS]
    assert stacks and len(stack_splits) >= len(stacks)   # every stack fitted got trial folds
    for folds, groups in stack_splits:
        assert all(not set(groups[a]) & set(groups[b]) for a, b in folds)
    with pytest.raises(ConfigError, match="model_y"):
        make_effect_model("causal_forest", model_y="stack").fit(y, t, X=X, groups=trial)


def test_a_stack_that_passes_the_features_through_is_not_split_into_its_base_models():
    """A user's ``StackingRegressor(passthrough=True)`` also weights the raw features: splitting it into its base
    models would drop them, so it is explained as one model (permutation), and its additivity still holds."""
    import warnings

    from sklearn.ensemble import StackingRegressor
    from sklearn.linear_model import LinearRegression, RidgeCV

    from mbi_predict.explain.effect_shap import explain_effect

    X, t, trial, _, y = _trials(6, n=600)
    stack = StackingRegressor([("ridge", RidgeCV())], final_estimator=LinearRegression(), passthrough=True, cv=3)
    model = make_effect_model("t_learner_xgb", base_learner=stack, random_state=0).fit(y, t, X=X, groups=trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        explanation = explain_effect(model, X[:30], background=X[30:60], max_rows=30, max_background=30)
    assert "permutation" in explanation.method.lower()
    assert explanation.additivity_error < 1e-4
