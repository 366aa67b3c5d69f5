"""Treatment-effect (CATE) estimators for pooled randomised trials, and the factory ``make_effect_model``.

All follow econml's naming (``fit(Y, T, *, X, groups=None, propensity=None)``, ``effect(X)``,
``effect_interval(X, alpha)``) and scikit-learn's estimator contract (``clone``-able, fitted state ends in ``_``);
conventions (sign, known propensity, trial-grouped folds, seeds) are in :class:`EffectEstimator`.

Why the meta-learners are written here rather than taken from ``econml.metalearners``: pooled trials randomise at
different ratios, so within-arm regressions must be weighted by 1/P(arm | trial) (``arm_balancing_weights``), and
0/1 outcomes need classifiers' probabilities; econml's T/S/X learners take neither sample weights nor classifiers.
The DR-learner is ours so its final stage can carry trial-clustered inference. The causal forest wraps econml.

* T-learner, S-learner, X-learner: Künzel, Sekhon, Bickel & Yu 2019, PNAS 116:4156.
* DR-learner: Kennedy 2020/2023, "Towards optimal doubly robust estimation of heterogeneous causal effects".
* Causal forest: Wager & Athey 2018, JASA; Athey, Tibshirani & Wager 2019, Ann. Stat. (econml CausalForestDML).
* Interaction model and PATH risk model: see ``_effect_linear``.

Binary outcomes: the T-learner fits classifiers (``predict_risk`` gives both arms' risks); the others treat the 0/1
outcome as numeric, so their CATE is a risk difference from a linear-probability / regression fit.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy import stats
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models import _effect_common as common
from mbi_predict.models._effect_base import EffectEstimator
from mbi_predict.models._effect_linear import InteractionLinear, PathRiskModel
from mbi_predict.models.inference import clustered_ate, crossfit_outcome_models, dr_scores, naive_ate

__all__ = ["EffectEstimator", "TLearner", "SLearner", "XLearner", "DRLearner", "CausalForest",
           "InteractionLinear", "PathRiskModel", "make_effect_model", "EFFECT_MODELS"]

_LEARNER = [StrOptions(set(common.LEARNERS)), HasMethods(["fit", "predict"])]
_COMMON_CONSTRAINTS = {
    "propensity": [StrOptions({"known", "estimated"})],
    "n_folds": [Interval(Integral, 2, None, closed="left")],
    "random_state": ["random_state"],
}


def _rows(groups, rows):
    return None if groups is None else groups[rows]


class TLearner(EffectEstimator):
    """T-learner: one outcome model per arm; CATE = mu1(x) - mu0(x) (Künzel et al. 2019).

    ``base_learner``: 'xgboost' (fast hist defaults), 'elasticnet', 'ridge', 'hgb', 'stack' (an elastic net and
    xgboost combined by non-negative weights fitted on their cross-fitted predictions over whole trials, for 0/1
    outcomes logistic regression and xgboost; the registered ``t_learner_stack``) or any sklearn estimator (a
    classifier with ``predict_proba`` for 0/1 outcomes). Each arm's model is weighted by 1/P(arm | trial). No
    pointwise interval (``effect_interval`` raises).

    Why 'stack': a difference of two flexible fits carries both fits' noise into the CATE. On the simulator's
    scenarios, where effects vary smoothly with a few traits, xgboost arms had about twice the held-out PEHE of ridge
    arms, and a linear model cannot follow an effect that is not linear; the stack chooses per arm from the data
    (experiments/benchmarks/RESULTS.md, section 19). Its linear member is an elastic net whose penalty is searched
    over whole trials (section 24): it can set a trait's slope to zero in each arm, which ridge could not.
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "base_learner": _LEARNER,
                              "outcome_type": [StrOptions({"auto", "binary", "continuous"})]}

    def __init__(self, *, base_learner="xgboost", outcome_type="auto", propensity="known", n_folds=5,
                 random_state=0):
        self.base_learner = base_learner
        self.outcome_type = outcome_type
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        self.binary_outcome_ = common.is_binary_outcome(y, self.outcome_type)
        w = common.arm_balancing_weights(t, e)
        self.models_ = []
        for arm in (0, 1):
            rows = t == arm
            if self.binary_outcome_:
                if len(np.unique(y[rows])) < 2:
                    raise DataError(f"binary outcome has one value only in arm {arm}; cannot fit a risk model")
                model = common.make_classifier(self.base_learner, self._seed())
                target = y[rows].astype(int)
            else:
                model = common.make_regressor(self.base_learner, self._seed())
                target = y[rows]
            self.models_.append(common.fit_weighted(model, Xa[rows], target, w[rows], _rows(g, rows)))
        return self

    def _arm_means(self, Xa):
        if self.binary_outcome_:
            return tuple(m.predict_proba(Xa)[:, 1] for m in self.models_)
        return tuple(np.asarray(m.predict(Xa), dtype=float) for m in self.models_)

    def effect(self, X) -> np.ndarray:
        mu0, mu1 = self._arm_means(self._effect_inputs(X))
        return mu1 - mu0

    def predict_risk(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(risk if control, risk if MBI) for a 0/1 outcome, e.g. ``deteriorated_*`` (see ``harm_summary``)."""
        Xa = self._effect_inputs(X)
        if not self.binary_outcome_:
            raise ConfigError("predict_risk needs a 0/1 outcome; this TLearner was fitted on a continuous one")
        return self._arm_means(Xa)


class SLearner(EffectEstimator):
    """S-learner: one model of Y on (X, T); CATE = f(x, 1) - f(x, 0) (Künzel et al. 2019).

    Weighted by 1/P(arm | trial). A regularised model may shrink the arm's role towards zero, biasing CATEs
    towards 0 — a known S-learner trait, useful as a conservative comparator. No pointwise interval.
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "base_learner": _LEARNER}

    def __init__(self, *, base_learner="xgboost", propensity="known", n_folds=5, random_state=0):
        self.base_learner = base_learner
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        model = common.make_regressor(self.base_learner, self._seed())
        self.model_ = common.fit_weighted(model, np.column_stack([Xa, t]), y, common.arm_balancing_weights(t, e), g)
        return self

    def effect(self, X) -> np.ndarray:
        Xa = self._effect_inputs(X)
        ones, zeros = np.ones(len(Xa)), np.zeros(len(Xa))
        return (np.asarray(self.model_.predict(np.column_stack([Xa, ones])), dtype=float)
                - np.asarray(self.model_.predict(np.column_stack([Xa, zeros])), dtype=float))


class XLearner(EffectEstimator):
    """X-learner (Künzel et al. 2019): impute individual effects with the other arm's model, regress them on X
    per arm, and blend tau(x) = g * tau0(x) + (1 - g) * tau1(x).

    Künzel et al. take g = e(x). In randomised trials e varies only by trial, which is unknown for a new person,
    so g is the mean propensity of the training data (``blend_weight_``). No pointwise interval.

    Default ``base_learner="stack"`` (outcome and effect models; see `TLearner`): with xgboost alone the imputed
    effects inherited the outcome models' noise (RESULTS.md, section 19).
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "base_learner": _LEARNER, "cate_learner": [None, *_LEARNER]}

    def __init__(self, *, base_learner="stack", cate_learner=None, propensity="known", n_folds=5,
                 random_state=0):
        self.base_learner = base_learner
        self.cate_learner = cate_learner
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        w = common.arm_balancing_weights(t, e)
        seed = self._seed()
        treated, control = t == 1, t == 0
        mu0 = common.fit_weighted(common.make_regressor(self.base_learner, seed), Xa[control], y[control], w[control],
                                  _rows(g, control))
        mu1 = common.fit_weighted(common.make_regressor(self.base_learner, seed), Xa[treated], y[treated], w[treated],
                                  _rows(g, treated))
        imputed_treated = y[treated] - mu0.predict(Xa[treated])
        imputed_control = mu1.predict(Xa[control]) - y[control]
        second = self.base_learner if self.cate_learner is None else self.cate_learner
        self.tau1_model_ = common.fit_weighted(common.make_regressor(second, seed), Xa[treated], imputed_treated,
                                               w[treated], _rows(g, treated))
        self.tau0_model_ = common.fit_weighted(common.make_regressor(second, seed), Xa[control], imputed_control,
                                               w[control], _rows(g, control))
        self.blend_weight_ = float(e.mean())
        return self

    def effect(self, X) -> np.ndarray:
        Xa = self._effect_inputs(X)
        g = self.blend_weight_
        return g * np.asarray(self.tau0_model_.predict(Xa)) + (1 - g) * np.asarray(self.tau1_model_.predict(Xa))


class DRLearner(EffectEstimator):
    """DR-learner (Kennedy 2020): regress cross-fitted AIPW pseudo-outcomes on X.

    Outcome models (one per arm) are cross-fitted with folds of whole trials; the propensity is known.
    ``final_model``:

    * ``"elasticnet"`` (default): the pseudo-outcome regressed on X by an elastic net (`make_regressor`'s
      'elasticnet') whose penalty is chosen over folds of whole trials; the intercept is not penalised, so the
      slopes are shrunk towards a constant effect. Point CATEs only (after a penalty chosen from the data a naive
      interval would be invalid, as for `InteractionLinear`).
    * ``"linear"``: OLS of the pseudo-outcome on (1, X) with a trial-clustered (CR1) covariance, so
      ``effect_interval`` is a t_{G-1} interval that respects between-trial variation (HC1/normal without groups).
    * any other learner name or estimator: point CATEs only.

    Why the elastic net: a pseudo-outcome carries the outcome's noise divided by P(arm), about four times its
    variance at 1:1, and an unpenalised slope for every covariate passes that noise into every CATE. On the
    simulator's four scenarios (seeds 41-48, not used to choose it) the OLS final stage had 1.32-3.06x the held-out
    PEHE of the best model (3.06x with no effect modifier), the elastic net 1.03-1.07x, lower in 8 of 8 seeds in
    every scenario (RESULTS section 23). ``ate_`` holds the trial-clustered DR ATE whatever the final stage.
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "outcome_learner": _LEARNER,
                              "final_model": [StrOptions({"linear", *common.LEARNERS}),
                                              HasMethods(["fit", "predict"])]}

    def __init__(self, *, outcome_learner="xgboost", final_model="elasticnet", propensity="known", n_folds=5,
                 random_state=0):
        self.outcome_learner = outcome_learner
        self.final_model = final_model
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        seed = self._seed()
        folds = common.make_folds(t, g, self.n_folds, seed)
        mu0, mu1 = crossfit_outcome_models(y, t, Xa, folds=folds, learner=self.outcome_learner, seed=seed,
                                           binary=common.is_binary_outcome(y, "auto"), groups=g)
        pseudo = dr_scores(y, t, mu0, mu1, e)
        clustered = g is not None and len(np.unique(g)) >= 2
        self.ate_ = clustered_ate(pseudo, g) if clustered else naive_ate(pseudo)
        if isinstance(self.final_model, str) and self.final_model == "linear":
            self.final_coef_, self.final_cov_, self.final_df_ = common.ols_robust(
                Xa, pseudo, g if clustered else None)
            self.final_model_ = None
        else:
            self.final_model_ = common.fit_weighted(common.make_regressor(self.final_model, seed), Xa, pseudo,
                                                    groups=g)
        return self

    def effect(self, X) -> np.ndarray:
        Xa = self._effect_inputs(X)
        if self.final_model_ is not None:
            return np.asarray(self.final_model_.predict(Xa), dtype=float)
        return np.column_stack([np.ones(len(Xa)), Xa]) @ self.final_coef_

    def effect_interval(self, X, alpha: float = 0.05):
        if self.final_model_ is not None:
            return super().effect_interval(X, alpha)
        Xa = self._effect_inputs(X)
        design = np.column_stack([np.ones(len(Xa)), Xa])
        est = design @ self.final_coef_
        se = np.sqrt(np.einsum("ij,jk,ik->i", design, self.final_cov_, design))
        df = self.final_df_
        q = stats.t.ppf(1 - alpha / 2, df) if np.isfinite(df) else stats.norm.ppf(1 - alpha / 2)
        return est - q * se, est + q * se


#: the rows one tree of `CausalForest` is grown on at most (``max_samples="auto"``)
MAX_TREE_ROWS = 10_000
#: the share of the rows one tree is grown on below that cap
_AUTO_FRACTION = 0.45
#: ``model_y="auto"``'s boosting candidate: xgboost's defaults here (`_effect_common.XGB_DEFAULTS`) with the same
#: shrinkage budget (trees x learning rate = 10) in half the trees; it is fitted on every fold to be compared
AUTO_BOOSTING = {"n_estimators": 100, "learning_rate": 0.1}


def _auto_is_fraction(n: int) -> bool:
    """Whether ``max_samples="auto"`` is the fraction (True) or the cap of rows per tree, for ``n`` rows."""
    return _AUTO_FRACTION * n <= MAX_TREE_ROWS


class CausalForest(EffectEstimator):
    """Causal forest: econml ``CausalForestDML`` (Athey, Tibshirani & Wager 2019) with fast defaults for
    pooled trials.

    * the treatment model is :class:`FixedPropensityClassifier` returning the known propensity, passed as ``W``
      (so the residual T - e uses each trial's randomisation ratio);
    * ``model_y="auto"``: the outcome nuisance is chosen between a ridge regression and small gradient boosting
      (xgboost, 100 depth-3 trees at learning rate 0.1, one thread: ``AUTO_BOOSTING``) by their cross-fitted
      error on the same ``n_folds`` folds of whole trials the forest's residuals come from (econml's first-stage
      model selection: a list passed as ``model_y``), then refitted per fold. econml runs the ridge's own penalty
      search (``RidgeCV``) over those folds too, as a grid search: slower than RidgeCV's leave-one-out, but
      needed, because the nuisance also sees the propensity column, constant within a trial, and a penalty chosen
      row by row lets that column fit the training trials' outcome shifts (R^2 below 0 on held-out trials; test
      ``test_causal_forest_ridge_penalty_is_chosen_over_whole_trials``). A linear prognosis is common in trials
      (follow-up distress is mostly baseline distress) and boosting wastes residual variance on it; a non-linear
      one is left to boosting. The choice is made only with the known (randomised) propensity: there
      T - e has mean zero given X exactly, so the outcome model changes the forest's variance, not its bias, and
      cross-fitted error is the right yardstick. With ``propensity="estimated"`` (observational data) the bias of
      the effect grows with the product of the two nuisances' errors, and a linear outcome model chosen for its
      error made the effect worse on IHDP (mean sqrt(PEHE) 3.44 vs 3.28 over its 10 replications; RESULTS section
      17), so "auto" is xgboost there. Any make_regressor name or estimator fixes the learner instead;
    * ``max_samples="auto"``: each tree is grown on a subsample of 45% of the rows (half of it to split, half to
      estimate: honesty), but on at most ``MAX_TREE_ROWS`` rows. Subsampling is what makes a forest's estimate
      asymptotically normal (Wager & Athey 2018 need subsamples of size s with s/n -> 0); a cap keeps the cost of a
      tree flat in n, so 190,000 training rows cost about as much per tree as 22,000, and the forest's cost grows
      only with the nuisance fits and the prediction. Below 22,000 rows nothing changes. At 190,000 rows 10,000
      rows per tree gave the same PEHE as 20,000 (0.099 vs 0.100, 3 held-out trials) in 40% less fit time;
    * 100 honest trees (a multiple of ``subforest_size``, which the bootstrap-of-little-bags intervals need),
      split on econml's ``criterion="het"`` (grf's heterogeneity-gradient criterion), leaves of >= 10.

    Chosen on the project's 'strong' and 'null' scenarios with seeds 2023 and 1-3 and checked on seeds 4-7
    (experiments/benchmarks/RESULTS.md, section 14): against the former defaults (xgboost nuisance, 200 trees,
    'mse') the same or lower PEHE in 30% less time.

    ``effect_interval`` returns econml's BLB intervals; they treat participants as independent (econml ignores
    groups inside the forest), so they are too narrow where effects vary between trials — read them as
    within-population intervals. Trial-clustered average effects: ``inference.trial_aware_ate``.
    """

    # not 'stack': econml cross-fits model_y itself, with no trial groups for a stack's own folds
    _parameter_constraints = {**_COMMON_CONSTRAINTS,
                              "model_y": [StrOptions({"auto", *(set(common.LEARNERS) - {"stack"})}),
                                          HasMethods(["fit", "predict"])],
                              "n_estimators": [Interval(Integral, 4, None, closed="left")],
                              "subforest_size": [Interval(Integral, 2, None, closed="left")],
                              "min_samples_leaf": [Interval(Integral, 1, None, closed="left")],
                              "max_depth": [None, Interval(Integral, 1, None, closed="left")],
                              "max_samples": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
                              "honest": ["boolean"], "criterion": [StrOptions({"mse", "het"})],
                              "n_jobs": [Integral]}

    def __init__(self, *, n_estimators=100, min_samples_leaf=10, max_depth=None, max_samples="auto",
                 subforest_size=4, honest=True, criterion="het", model_y="auto", n_folds=3, propensity="known",
                 n_jobs=1, random_state=0):
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.max_samples = max_samples
        self.subforest_size = subforest_size
        self.honest = honest
        self.model_y = model_y
        self.n_folds = n_folds
        self.propensity = propensity
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        from econml.dml import CausalForestDML

        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        if self.n_estimators % self.subforest_size:
            raise ConfigError(f"CausalForest: n_estimators ({self.n_estimators}) must be a multiple of "
                              f"subforest_size ({self.subforest_size})")
        seed = self._seed()
        self.forest_ = CausalForestDML(
            model_y=self._model_y(seed), model_t=common.FixedPropensityClassifier(),
            discrete_treatment=True, cv=common.make_folds(t, g, self.n_folds, seed), drate=False,
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf, max_depth=self.max_depth,
            max_samples=self._max_samples(len(y)), subforest_size=self.subforest_size, honest=self.honest,
            criterion=self.criterion, inference=True,
            n_jobs=self.n_jobs, random_state=seed)
        self.forest_.fit(y, t, X=Xa, W=e[:, None])
        return self

    @staticmethod
    def pilot_params(params: dict, n_full: int, n_pilot: int) -> dict:
        """Parameters under which a fit on ``n_pilot`` rows grows trees on as many rows as a fit on ``n_full`` rows
        would (for the time estimate before a run, `mbi_predict.validate.estimate`): past ``MAX_TREE_ROWS / 0.45``
        rows the trees stop growing with the data, which pilots on fewer rows would not show. Empty when the
        config sets ``max_samples`` itself."""
        if params.get("max_samples", "auto") != "auto" or n_pilot < 1:
            return {}
        rows = _AUTO_FRACTION * n_full if _auto_is_fraction(n_full) else MAX_TREE_ROWS
        return {"max_samples": min(0.5, rows / n_pilot)}

    def _max_samples(self, n: int) -> float | int:
        """Rows per tree: "auto" is 45% of the rows up to ``MAX_TREE_ROWS / 0.45`` rows, then ``MAX_TREE_ROWS``."""
        if self.max_samples != "auto":
            return self.max_samples
        return _AUTO_FRACTION if _auto_is_fraction(n) else MAX_TREE_ROWS

    def _model_y(self, seed: int):
        """The outcome nuisance: one learner, or for "auto" the list econml selects from by cross-fitted error."""
        if isinstance(self.model_y, str) and self.model_y == "auto":
            if self.propensity != "known":  # an estimated propensity: the outcome model's errors become bias
                return common.make_regressor("xgboost", seed)
            boosting = common.make_regressor("xgboost", seed).set_params(**AUTO_BOOSTING)
            return [common.make_regressor("ridge", seed), boosting]
        return common.make_regressor(self.model_y, seed)

    @property
    def selected_model_y_(self) -> str:
        """The outcome learner the fit used (for "auto", the one econml's selection chose)."""
        chosen = self.forest_.models_y[0][0] if self.forest_.models_y else None
        return type(chosen).__name__

    def effect(self, X) -> np.ndarray:
        Xa = self._effect_inputs(X)
        return np.asarray(self.forest_.effect(Xa), dtype=float).reshape(-1)

    def effect_interval(self, X, alpha: float = 0.05):
        Xa = self._effect_inputs(X)
        low, high = self.forest_.effect_interval(Xa, alpha=alpha)
        return np.asarray(low, dtype=float).reshape(-1), np.asarray(high, dtype=float).reshape(-1)


EFFECT_MODELS: dict[str, tuple[type, dict]] = {
    "t_learner_xgb": (TLearner, {"base_learner": "xgboost"}),
    "t_learner_enet": (TLearner, {"base_learner": "elasticnet"}),
    "t_learner_stack": (TLearner, {"base_learner": "stack"}),
    "s_learner": (SLearner, {}),
    "x_learner": (XLearner, {}),
    "dr_learner": (DRLearner, {}),
    "causal_forest": (CausalForest, {}),
    "interaction_linear": (InteractionLinear, {}),
    "path_risk": (PathRiskModel, {}),
}


def make_effect_model(name: str, **params) -> EffectEstimator:
    """An unfitted estimator by config name (``EFFECT_MODELS``), with ``params`` overriding its defaults."""
    if name not in EFFECT_MODELS:
        raise ConfigError(f"unknown effect model {name!r}; choose from {sorted(EFFECT_MODELS)}")
    cls, defaults = EFFECT_MODELS[name]
    try:
        return cls(**{**defaults, **params})
    except TypeError as exc:
        raise ConfigError(f"effect model {name!r}: {exc}") from None
