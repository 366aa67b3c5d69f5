"""scikit-learn's estimator checks, parametrised over every effect model.

The effect models follow econml's fitting signature (``fit(Y, T, *, X, groups)``), not scikit-learn's ``fit(X, y)``,
so ``check_estimator`` as a whole does not apply; the checks below are scikit-learn's own for everything that does
not call ``fit(X, y)`` (construction, parameters, cloning), and the same contracts scikit-learn checks after fitting
(inputs not modified, no public parameter changed by ``fit``, same ``random_state`` same effects, refit idempotent,
pickle round trip, clone of a fitted model unfitted) written for the econml signature.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from mbi_predict.models.effect import CausalForest, DRLearner, InteractionLinear, SLearner, TLearner, XLearner
from mbi_predict.models._effect_linear import PathRiskModel

FAST = {"TLearner": dict(base_learner="ridge"), "SLearner": dict(base_learner="ridge"),
        "XLearner": dict(base_learner="ridge"), "DRLearner": dict(base_learner="ridge"),
        "CausalForest": dict(n_estimators=40), "InteractionLinear": {}, "PathRiskModel": {}}
ESTIMATORS = [TLearner, SLearner, XLearner, DRLearner, CausalForest, InteractionLinear, PathRiskModel]


def _make(cls):
    estimator = cls(random_state=0)
    params = {k: v for k, v in FAST[cls.__name__].items() if k in estimator.get_params()}
    return estimator.set_params(**params)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 600
    X = rng.normal(size=(n, 4))
    groups = np.repeat(np.array(["A", "B", "C", "D"]), n // 4)
    T = rng.integers(0, 2, size=n)
    Y = X[:, 0] + T * (0.5 * X[:, 1] - 0.3) + rng.normal(scale=0.5, size=n)
    return Y, T, X, groups


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_scikit_learn_construction_and_parameter_checks(cls):
    name, estimator = cls.__name__, cls()
    check_parameters_default_constructible(name, estimator)
    check_no_attributes_set_in_init(name, estimator)
    check_get_params_invariance(name, estimator)
    check_set_params(name, estimator)
    assert clone(estimator).get_params() == estimator.get_params()


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_fit_contracts(cls, data):
    Y, T, X, groups = data
    copies = [a.copy() for a in (Y, T, X, groups)]
    estimator = _make(cls)
    before = estimator.get_params()
    with pytest.raises(NotFittedError):
        estimator.effect(X[:5])
    fitted = estimator.fit(Y, T, X=X, groups=groups)
    assert fitted is estimator
    for original, copy in zip((Y, T, X, groups), copies):  # inputs untouched
        assert np.array_equal(original, copy)
    assert estimator.get_params() == before  # fit sets no public parameter
    tau = estimator.effect(X)
    assert tau.shape == (len(X),) and np.isfinite(tau).all()

    again = _make(cls).fit(Y, T, X=X, groups=groups)
    assert np.allclose(again.effect(X), tau, rtol=1e-10, atol=1e-12)  # same random_state, same effects
    estimator.fit(Y, T, X=X, groups=groups)
    assert np.allclose(estimator.effect(X), tau, rtol=1e-10, atol=1e-12)  # refitting is idempotent

    restored = pickle.loads(pickle.dumps(estimator))
    assert np.array_equal(restored.effect(X), estimator.effect(X))
    with pytest.raises(NotFittedError):
        clone(estimator).effect(X[:5])
