"""The base class every CATE estimator shares: the fit/effect contract, input checks and the known propensity."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models import _effect_common as common


class EffectEstimator(common.EconMLCompatMixin, BaseEstimator):
    """Base for CATE estimators: ``fit(Y, T, *, X, groups=None, propensity=None)``, ``effect(X)``,
    ``effect_interval(X, alpha)``.

    Conventions (all subclasses):

    * CATE(x) = E[Y(1) - Y(0) | X = x] in outcome units, arm 1 = MBI. For distress (higher = worse) a benefit of
      MBI is a *negative* CATE. For a 0/1 outcome the CATE is a risk difference.
    * ``propensity="known"`` (default, randomised trials): the propensity array passed to ``fit`` if given, else each
      trial's share of MBI participants computed from ``groups`` (overall share without groups). ``"estimated"``:
      a cross-fitted logistic model with trial-grouped folds (observational data only). The propensity used is kept
      in ``propensity_``.
    * Cross-fitting folds hold whole trials (``groups``); with one trial or no groups, arm-stratified row folds.
    * ``random_state`` (default 0) seeds every random step, so fits are reproducible run to run.
    """

    _parameter_constraints: dict = {}

    def _validate_params_as_config(self) -> None:
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None

    def _seed(self) -> int:
        """A deterministic seed for sub-models when ``random_state`` is an int."""
        return int(check_random_state(self.random_state).randint(common.SEED_MAX))

    def _fit_inputs(self, Y, T, X, groups, propensity):
        """Check the data, remember X's shape/names, resolve the propensity. Returns (y, t, X, groups, e)."""
        self._validate_params_as_config()
        Xa, names = common.as_2d_numeric(X)
        y = common.check_outcome(Y, len(Xa))
        t = common.check_treatment(T, len(Xa))
        g = common.check_groups(groups, len(Xa))
        self.n_features_in_ = Xa.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        e = common.resolve_propensity(self.propensity, t, Xa, g, propensity, self.n_folds, self._seed())
        self.propensity_ = e
        return y, t, Xa, g, e

    def _effect_inputs(self, X) -> np.ndarray:
        check_is_fitted(self)
        Xa, names = common.as_2d_numeric(X)
        if Xa.shape[1] != self.n_features_in_:
            raise DataError(f"X has {Xa.shape[1]} covariates but the model was fitted on {self.n_features_in_}")
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is not None and list(names) != list(fitted_names):
            raise DataError("X's columns differ from those the model was fitted on (names or order)")
        return Xa

    def effect(self, X) -> np.ndarray:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def effect_interval(self, X, alpha: float = 0.05):
        """Estimators without a defensible pointwise CATE interval refuse rather than return a misleading one."""
        raise ConfigError(f"{type(self).__name__} gives no defensible CATE interval; use dr_learner with "
                          "final_model='linear' (trial-clustered), interaction_linear with alpha=0, or causal_forest")

    def ate(self, X) -> float:
        """Mean predicted CATE over the rows of X (a plug-in, no interval; see ``inference.trial_aware_ate``)."""
        return float(np.mean(self.effect(X)))
