"""The transparent comparators: a penalised arm x covariate interaction model and the PATH risk-based approach."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy import stats
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from mbi_predict.errors import DataError
from mbi_predict.models import _effect_common as common
from mbi_predict.models._effect_base import EffectEstimator

_COMMON_CONSTRAINTS = {
    "propensity": [StrOptions({"known", "estimated"})],
    "n_folds": [Interval(Integral, 2, None, closed="left")],
    "random_state": ["random_state"],
}


class InteractionLinear(EffectEstimator):
    """y ~ a + X b + theta T + T (X - mean) gamma, with the elastic net penalty on the interactions gamma only.

    CATE(x) = theta + (x - mean) gamma, so theta is the effect at the mean covariates. Choices:

    * Main effects (a, b, theta) are unpenalised: shrinking the prognostic terms or the average effect would push
      heterogeneity into gamma or bias the ATE. Exact, by Frisch-Waugh-Lovell: for fixed gamma the optimal main
      effects are the least-squares fit of y - I gamma on Z = (1, X, T); so gamma is the elastic net of the
      Z-residualised y on the Z-residualised interactions, then the main effects are refitted.
    * Interactions use X standardised (weighted mean/SD), so the penalty treats covariates alike; coefficients
      are reported back in X's units (``interaction_coef_``).
    * ``alpha=None``: penalty chosen by ElasticNetCV over folds of whole trials (the residualisation uses all
      rows, a small, standard leak); a float: fixed penalty; ``alpha=0``: plain least squares with a
      trial-clustered (CR1, t_{G-1}) covariance — the only setting with ``effect_interval`` (after penalised
      selection a naive interval would be invalid).
    * Rows weighted by 1/P(arm | trial), as for the meta-learners.
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS, "alpha": [None, Interval(Real, 0, None, closed="left")],
                              "l1_ratio": [Interval(Real, 0, 1, closed="right"), list]}

    def __init__(self, *, alpha=None, l1_ratio=0.5, propensity="known", n_folds=5, random_state=0):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        w = common.arm_balancing_weights(t, e)
        self.x_mean_ = np.average(Xa, axis=0, weights=w)
        sd = np.sqrt(np.average((Xa - self.x_mean_) ** 2, axis=0, weights=w))
        self.x_scale_ = np.where(sd > 0, sd, 1.0)
        Xs = (Xa - self.x_mean_) / self.x_scale_
        root_w = np.sqrt(w)[:, None]
        Z = root_w * np.column_stack([np.ones(len(y)), Xs, t])
        inter = root_w * (t[:, None] * Xs)
        yw = root_w[:, 0] * y
        p_main = Z.shape[1]
        if self.alpha is not None and self.alpha == 0:
            clusters = g if g is not None and len(np.unique(g)) >= 2 else None
            coef, cov, self.df_ = common.ols_robust(np.column_stack([Z, inter]), yw, clusters, add_intercept=False)
            main, gamma_std = coef[:p_main], coef[p_main:]
            self.effect_cov_ = cov[p_main - 1:, p_main - 1:]  # (theta, gamma) block
            self.alpha_ = 0.0
        else:
            Q = np.linalg.qr(Z)[0]
            y_res = yw - Q @ (Q.T @ yw)
            inter_res = inter - Q @ (Q.T @ inter)
            if self.alpha is None:
                folds = common.make_folds(t, g, self.n_folds, self._seed())
                net = ElasticNetCV(l1_ratio=self.l1_ratio, cv=folds, fit_intercept=False, max_iter=10000,
                                   random_state=self._seed()).fit(inter_res, y_res)
                self.alpha_ = float(net.alpha_)
            else:
                l1 = self.l1_ratio if np.isscalar(self.l1_ratio) else self.l1_ratio[0]
                net = ElasticNet(alpha=self.alpha, l1_ratio=l1, fit_intercept=False, max_iter=10000).fit(
                    inter_res, y_res)
                self.alpha_ = float(self.alpha)
            gamma_std = net.coef_
            main = np.linalg.lstsq(Z, yw - inter @ gamma_std, rcond=None)[0]
            self.effect_cov_ = None
        self.intercept_, self.treatment_coef_ = float(main[0]), float(main[-1])
        self.prognostic_coef_ = main[1:-1] / self.x_scale_
        self.interaction_coef_std_ = gamma_std
        self.interaction_coef_ = gamma_std / self.x_scale_
        return self

    def _design(self, Xa):
        return np.column_stack([np.ones(len(Xa)), (Xa - self.x_mean_) / self.x_scale_])

    def effect(self, X) -> np.ndarray:
        return self._design(self._effect_inputs(X)) @ np.r_[self.treatment_coef_, self.interaction_coef_std_]

    def effect_interval(self, X, alpha: float = 0.05):
        if self.effect_cov_ is None:
            return super().effect_interval(X, alpha)
        design = self._design(self._effect_inputs(X))
        est = design @ np.r_[self.treatment_coef_, self.interaction_coef_std_]
        se = np.sqrt(np.einsum("ij,jk,ik->i", design, self.effect_cov_, design))
        q = stats.t.ppf(1 - alpha / 2, self.df_) if np.isfinite(self.df_) else stats.norm.ppf(1 - alpha / 2)
        return est - q * se, est + q * se


class PathRiskModel(EffectEstimator):
    """PATH risk-based approach (Kent et al. 2020, Ann Intern Med 172:35): effects across strata of baseline risk.

    1. A prognostic model of the outcome from X is fitted on control participants only (``risk_learner``:
       'ridge' = RidgeCV / logistic for 0/1 outcomes, or any make_regressor name / estimator).
    2. Each training participant's predicted risk: controls get out-of-fold predictions (folds of whole trials).
       Using in-sample predictions for controls would overfit their noise into the strata and fake
       heterogeneity ("endogenous stratification", Abadie, Chingos & West 2018, Rev Econ Stat).
    3. ``n_groups`` quantile groups of predicted risk; the effect in each is the difference of inverse-propensity
       weighted (Hajek) arm means — the plain difference in means when all trials randomise 1:1, and unbiased when
       pooled trials randomise at different ratios.
    4. ``smooth=True``: instead, a weighted regression y ~ 1 + r + T + T r; CATE = theta + gamma r.

    CATE of a person = the effect of their risk group (or the smooth). No pointwise interval.
    ``baseline_risk(X)`` gives the prognostic prediction (outcome under control).
    """

    _parameter_constraints = {**_COMMON_CONSTRAINTS,
                              "risk_learner": [StrOptions({"xgboost", "elasticnet", "ridge", "hgb"}),
                                               HasMethods(["fit", "predict"])],
                              "n_groups": [Interval(Integral, 2, None, closed="left")], "smooth": ["boolean"],
                              "outcome_type": [StrOptions({"auto", "binary", "continuous"})]}

    def __init__(self, *, risk_learner="ridge", n_groups=4, smooth=False, outcome_type="auto", propensity="known",
                 n_folds=5, random_state=0):
        self.risk_learner = risk_learner
        self.n_groups = n_groups
        self.smooth = smooth
        self.outcome_type = outcome_type
        self.propensity = propensity
        self.n_folds = n_folds
        self.random_state = random_state

    def _new_risk_model(self):
        if self.binary_outcome_:
            return common.make_classifier(self.risk_learner, self._seed())
        return common.make_regressor(self.risk_learner, self._seed())

    def _risk(self, model, Xa):
        return model.predict_proba(Xa)[:, 1] if self.binary_outcome_ else np.asarray(model.predict(Xa), dtype=float)

    def fit(self, Y, T, *, X, groups=None, propensity=None):
        y, t, Xa, g, e = self._fit_inputs(Y, T, X, groups, propensity)
        self.binary_outcome_ = common.is_binary_outcome(y, self.outcome_type)
        target = y.astype(int) if self.binary_outcome_ else y
        control = np.flatnonzero(t == 0)
        g_control = None if g is None else g[control]
        self.risk_model_ = common.fit_weighted(self._new_risk_model(), Xa[control], target[control], groups=g_control)
        risk = self._risk(self.risk_model_, Xa)
        for train, test in self._control_folds(control, g):
            fold_model = common.fit_weighted(self._new_risk_model(), Xa[control[train]], target[control[train]],
                                             groups=None if g_control is None else g_control[train])
            risk[control[test]] = self._risk(fold_model, Xa[control[test]])
        w = common.arm_balancing_weights(t, e)
        if self.smooth:
            design = np.column_stack([np.ones(len(y)), risk, t, t * risk])
            coef = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)[0]
            self.smooth_coef_ = coef[2:]  # (theta, gamma): CATE = theta + gamma * risk
            return self
        self.risk_edges_ = np.unique(np.quantile(risk, np.linspace(0, 1, self.n_groups + 1)[1:-1]))
        group = np.searchsorted(self.risk_edges_, risk, side="right")
        effects, sizes = [], []
        for k in range(len(self.risk_edges_) + 1):
            rows = group == k
            n_mbi, n_control = int(t[rows].sum()), int(rows.sum() - t[rows].sum())
            if min(n_mbi, n_control) < 2:
                raise DataError(f"risk group {k + 1} has {n_mbi} MBI and {n_control} control participants; "
                                "use fewer risk groups")
            treated, ctrl = rows & (t == 1), rows & (t == 0)
            effects.append(np.average(y[treated], weights=w[treated]) - np.average(y[ctrl], weights=w[ctrl]))
            sizes.append(int(rows.sum()))
        self.group_effects_, self.group_sizes_ = np.array(effects), np.array(sizes)
        return self

    def _control_folds(self, control, g):
        g_control = None if g is None else g[control]
        if g_control is not None and len(np.unique(g_control)) >= 2:
            k = min(self.n_folds, len(np.unique(g_control)))
            return list(GroupKFold(n_splits=k).split(control, groups=g_control))
        if len(control) < 2 * self.n_folds:
            raise DataError(f"too few control participants ({len(control)}) to cross-fit the risk model")
        return list(KFold(n_splits=self.n_folds, shuffle=True, random_state=self._seed()).split(control))

    def baseline_risk(self, X) -> np.ndarray:
        """Predicted outcome under control (risk for a 0/1 outcome)."""
        Xa = self._effect_inputs(X)
        return self._risk(self.risk_model_, Xa)

    def effect(self, X) -> np.ndarray:
        risk = self.baseline_risk(X)
        if self.smooth:
            theta, gamma = self.smooth_coef_
            return theta + gamma * risk
        return self.group_effects_[np.searchsorted(self.risk_edges_, risk, side="right")]
