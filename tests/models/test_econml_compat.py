"""The package's CATE estimators answer econml's calls (shapes as econml 0.17 returns them for a vector outcome and
a binary treatment), and econml's interpreters accept a fitted estimator."""

import numpy as np
import pytest

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models.effect import DRLearner, InteractionLinear, TLearner

econml = pytest.importorskip("econml")
from econml.cate_interpreter import SingleTreeCateInterpreter, SingleTreePolicyInterpreter  # noqa: E402

COVARIATES = ["age", "baseline_distress", "baseline_anxiety", "baseline_depression", "baseline_wellbeing",
              "baseline_mindfulness"]


@pytest.fixture(scope="module")
def trials():
    """The simulated consortium's passive comparison, covariates numeric and complete (mean-imputed)."""
    ipd = simulate_latent("strong", seed=1, n_trials=6, n=900).ipd
    rows = ((ipd["arm"] == 1) | (ipd["control_type"] == "passive")) & ipd["distress_fu1_6"].notna()
    data = ipd.loc[rows]
    data = data.loc[data.groupby("trial_id")["arm"].transform("nunique") == 2].reset_index(drop=True)
    X = data[COVARIATES].astype(float)
    X = X.fillna(X.mean()).to_numpy()
    X = np.column_stack([X, (data["gender"] == "female").to_numpy(dtype=float)])
    return X, data["distress_fu1_6"].to_numpy(float), data["arm"].to_numpy(int), data["trial_id"].to_numpy(str)


@pytest.fixture(scope="module")
def fitted(trials):
    X, y, t, g = trials
    return TLearner(base_learner="ridge", random_state=0).fit(y, t, X=X, groups=g)


def test_shapes_and_contrasts_follow_econml(fitted, trials):
    X = trials[0][:50]
    tau = fitted.effect(X)
    assert tau.shape == (50,)
    cme = fitted.const_marginal_effect(X)
    assert cme.shape == (50, 1) and np.array_equal(cme[:, 0], tau)
    assert np.array_equal(fitted.effect(X, T0=0, T1=1), tau)
    assert np.allclose(fitted.effect(X, T0=1, T1=0), -tau)
    assert np.allclose(fitted.effect(X, T0=0, T1=0), 0.0)
    per_row = np.r_[np.zeros(25), np.ones(25)]
    assert np.allclose(fitted.effect(X, T0=per_row, T1=1), np.where(per_row == 0, tau, 0.0))
    assert np.array_equal(fitted.marginal_effect(0, X), cme)
    assert np.array_equal(fitted.marginal_effect(np.ones(50), X), cme)
    assert fitted.const_marginal_ate(X).shape == (1,)
    assert fitted._d_y == () and fitted._d_t == (1,)
    with pytest.raises(DataError, match="0 \\(control\\) or 1"):
        fitted.effect(X, T0=0, T1=2)
    with pytest.raises(ConfigError):
        fitted.const_marginal_effect_interval(X)


def test_econml_conventions_match_econml_itself(trials):
    """An econml estimator with a discrete binary treatment and a vector outcome gives the same shapes."""
    from econml.dml import LinearDML
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, y, t, _ = trials
    reference = LinearDML(model_y=LinearRegression(), model_t=LogisticRegression(), discrete_treatment=True,
                          cv=2, random_state=0).fit(y, t, X=X)
    assert reference.const_marginal_effect(X[:5]).shape == (5, 1)
    assert reference.effect(X[:5]).shape == (5,)
    assert reference.marginal_effect(0, X[:5]).shape == (5, 1)
    assert reference._d_y == () and tuple(reference._d_t) == (1,)


def test_intervals_with_contrast(trials):
    X, y, t, g = trials
    model = DRLearner(outcome_learner="ridge", final_model="linear", random_state=0).fit(y, t, X=X, groups=g)
    low, high = model.effect_interval(X[:20])
    flipped_low, flipped_high = model.effect_interval(X[:20], T0=1, T1=0)
    assert np.allclose(flipped_low, -high) and np.allclose(flipped_high, -low)
    cl, ch = model.const_marginal_effect_interval(X[:20], alpha=0.05)
    assert cl.shape == (20, 1) and np.allclose(cl[:, 0], low) and np.allclose(ch[:, 0], high)


def test_econml_interpreters_accept_a_fitted_estimator(fitted, trials):
    X = trials[0]
    tree = SingleTreeCateInterpreter(max_depth=2, min_samples_leaf=50).interpret(fitted, X)
    leaves = [node for node, info in tree.node_dict_.items() if tree.tree_model_.tree_.children_left[node] < 0]
    assert leaves and np.isclose(tree.node_dict_[0]["mean"][0], fitted.effect(X).mean())
    # distress: higher is worse, a benefit is a negative CATE; econml's policy tree maximises, so fit on -Y
    X_, y, t, g = trials
    benefit = TLearner(base_learner="ridge", random_state=0).fit(-y, t, X=X_, groups=g)
    policy = SingleTreePolicyInterpreter(max_depth=2, min_samples_leaf=50).interpret(benefit, X)
    assert policy.policy_value_ >= max(0.0, float(policy.always_treat_value_[0])) - 1e-9
    assert set(np.unique(policy.treat(X))) <= {0, 1}


def test_interaction_linear_gets_the_same_methods(trials):
    X, y, t, g = trials
    model = InteractionLinear(alpha=0.0).fit(y, t, X=X, groups=g)
    assert model.const_marginal_effect(X[:3]).shape == (3, 1)
    assert np.allclose(model.effect(X[:3], T0=1, T1=0), -model.effect(X[:3]))
