"""econml's CATE-estimator calls on this package's estimators (`EconMLCompatMixin`), and the treatment levels
(`treatment_levels`) those calls accept.

An estimator here implements ``fit(Y, T, *, X, groups)`` and ``effect(X)``; the mixin adds what econml's tools call
(``const_marginal_effect``, ``effect(X, T0, T1)``, ``marginal_effect``, the interval variants, the name methods), so
``econml.cate_interpreter`` accepts a fitted estimator. Kept apart from ``_effect_common`` (input checks, learners,
folds), which re-exports both names.
"""

from __future__ import annotations

import functools

import numpy as np

from mbi_predict.errors import ConfigError, DataError


def treatment_levels(T, n: int, name: str) -> np.ndarray:
    """A treatment level per row (scalar broadcast) as 0.0/1.0: the estimators model the binary arm only."""
    try:
        values = np.asarray(T, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be 0 (control) or 1 (MBI)") from None
    values = np.full(n, float(values)) if values.ndim == 0 else values.reshape(-1)
    if len(values) != n:
        raise DataError(f"{name} has {len(values)} rows but X has {n}")
    if not np.all(np.isin(values, (0.0, 1.0))):
        raise DataError(f"{name} must be 0 (control) or 1 (MBI): the effect models a binary arm, and extrapolating "
                        "it to other treatment levels has no meaning")
    return values


def _is_default_contrast(T0, T1) -> bool:
    return np.ndim(T0) == 0 and np.ndim(T1) == 0 and T0 == 0 and T1 == 1


def _marked(wrapped):
    del wrapped.__wrapped__  # so help() and inspect show the signature that is actually called
    wrapped._econml_contrast = True
    return wrapped


def _with_contrast(effect):
    """``effect(X)`` -> econml's ``effect(X, T0=0, T1=1)``: tau(x) * (T1 - T0), exactly ``effect(X)`` by default."""
    @functools.wraps(effect)
    def wrapped(self, X, T0=0, T1=1):
        tau = effect(self, X)
        if _is_default_contrast(T0, T1):
            return tau
        tau = np.asarray(tau, dtype=float).reshape(-1)
        return tau * (treatment_levels(T1, len(tau), "T1") - treatment_levels(T0, len(tau), "T0"))

    return _marked(wrapped)


def _with_contrast_interval(effect_interval):
    """``effect_interval(X, alpha)`` -> econml's ``effect_interval(X, alpha, *, T0=0, T1=1)``; a negative
    contrast flips the interval's ends."""
    @functools.wraps(effect_interval)
    def wrapped(self, X, alpha: float = 0.05, *, T0=0, T1=1):
        low, high = effect_interval(self, X, alpha)
        if _is_default_contrast(T0, T1):
            return low, high
        low, high = (np.asarray(v, dtype=float).reshape(-1) for v in (low, high))
        d = treatment_levels(T1, len(low), "T1") - treatment_levels(T0, len(low), "T0")
        return np.minimum(low * d, high * d), np.maximum(low * d, high * d)

    return _marked(wrapped)


class EconMLCompatMixin:
    """econml's CATE-estimator calls on top of ``fit(Y, T, *, X, groups)`` / ``effect(X)``, so econml tools
    (``econml.cate_interpreter.SingleTreeCateInterpreter`` / ``SingleTreePolicyInterpreter``, code written for
    ``econml.dml``) accept a fitted estimator of this package.

    Shapes follow econml 0.17 (``econml/_cate_estimator.py``, ``LinearCateEstimator``) for a vector outcome and a
    binary (discrete) treatment, whose one-hot featurisation has one column: ``const_marginal_effect(X)`` is
    (n, 1) (``_d_y = ()`` collapses the outcome axis, ``_d_t = (1,)`` keeps the treatment axis), ``effect(X, T0,
    T1)`` is (n,) and equals tau(x) * (T1 - T0) with T0, T1 in {0, 1}, ``marginal_effect(T, X)`` equals
    ``const_marginal_effect(X)`` (a binary treatment's effect does not depend on the base level).

    Subclasses keep writing ``effect(self, X)`` (and ``effect_interval(self, X, alpha)``); ``__init_subclass__``
    wraps them once to accept ``T0``/``T1``, leaving the default call's result untouched.

    Sign: econml's policy tools treat a larger effect as better. For an outcome where higher is worse (distress) a
    benefit is a negative CATE here, so fit on ``-Y`` (or read the policy tree's "treat" leaves as "do not treat")
    before handing the estimator to ``SingleTreePolicyInterpreter``.
    """

    _d_y: tuple = ()        # a single outcome, given as a vector
    _d_t: tuple = (1,)      # a binary treatment, one column after econml's one-hot featurisation (drop first)
    _d_t_in: tuple = ()     # the treatment as given to fit: a vector

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, wrap in (("effect", _with_contrast), ("effect_interval", _with_contrast_interval)):
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_econml_contrast", False):
                setattr(cls, name, wrap(own))

    def _n_rows(self, X) -> int:
        if X is None:
            raise DataError("X is required: the effect models are conditional on covariates")
        return int(np.shape(X)[0])

    def const_marginal_effect(self, X) -> np.ndarray:
        """theta(x): the effect of arm 1 vs arm 0 per row, shape (n, 1) as econml returns it."""
        return np.asarray(self.effect(X), dtype=float).reshape(-1, 1)

    def marginal_effect(self, T, X) -> np.ndarray:
        """The marginal effect at base treatment ``T`` (0/1, scalar or per row): ``const_marginal_effect(X)``."""
        treatment_levels(T, self._n_rows(X), "T")
        return self.const_marginal_effect(X)

    def const_marginal_effect_interval(self, X, *, alpha: float = 0.05):
        """``effect_interval`` as (n, 1) arrays; estimators without a defensible interval raise ConfigError."""
        low, high = self.effect_interval(X, alpha)
        return tuple(np.asarray(v, dtype=float).reshape(-1, 1) for v in (low, high))

    def marginal_effect_interval(self, T, X, *, alpha: float = 0.05):
        treatment_levels(T, self._n_rows(X), "T")
        return self.const_marginal_effect_interval(X, alpha=alpha)

    def const_marginal_ate(self, X) -> np.ndarray:
        """Mean theta(x) over the rows of X, shape (1,)."""
        return np.mean(self.const_marginal_effect(X), axis=0)

    def const_marginal_ate_inference(self, X=None):
        raise ConfigError(f"{type(self).__name__} has no econml inference object; interpret with "
                          "include_model_uncertainty=False (trial-clustered average effects: "
                          "mbi_predict.models.inference.trial_aware_ate)")

    def cate_feature_names(self, feature_names=None):
        if feature_names is not None:
            return list(feature_names)
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(n) for n in names]

    def cate_output_names(self, output_names=None):
        return list(output_names) if output_names is not None else ["Y0"]  # econml's default for a vector Y

    def cate_treatment_names(self, treatment_names=None):
        return list(treatment_names) if treatment_names is not None else ["arm_1"]  # arm 1 vs the base level 0
