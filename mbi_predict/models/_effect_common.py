"""Plumbing shared by the CATE estimators: input checks, the known propensity, base learners, trial-grouped folds.

Kept apart from ``effect.py`` so the estimators there read as statistics, not bookkeeping. econml's calls on the
estimators (`EconMLCompatMixin`, `treatment_levels`) are in ``_econml_compat``, re-exported here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import ElasticNetCV, LinearRegression, LogisticRegression, RidgeCV
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.utils.validation import _num_samples

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models._econml_compat import EconMLCompatMixin, treatment_levels  # noqa: F401  (re-exported)

#: Fewest participants per arm we accept for fitting an effect model (cross-fitting needs both arms in every fold).
MIN_PER_ARM = 10
#: Estimated propensities are clipped to this band so inverse weights stay finite.
PROPENSITY_CLIP = (0.01, 0.99)
SEED_MAX = 2**31 - 1


def as_2d_numeric(X, name: str = "X") -> tuple[np.ndarray, np.ndarray | None]:
    """Return X as a float 2-D array and its column names (None for a plain array)."""
    names = None
    if isinstance(X, pd.DataFrame):
        names = np.asarray(X.columns, dtype=object)
        non_numeric = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
        if non_numeric:
            raise DataError(f"{name} has non-numeric columns {non_numeric[:5]}; encode them before fitting",
                            column=str(non_numeric[0]))
        X = X.to_numpy(dtype=float)
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric") from None
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (participants x covariates), got {X.ndim}-D")
    if X.shape[1] == 0:
        raise DataError(f"{name} has no covariate columns")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{name} has missing or infinite values; impute before fitting an effect model")
    return X, names


def check_outcome(Y, n: int | None = None) -> np.ndarray:
    if np.ndim(Y) > 2 or (np.ndim(Y) == 2 and np.shape(Y)[1] != 1):
        raise DataError("Y must be one outcome column")
    try:
        y = np.asarray(Y, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise DataError("Y must be numeric") from None
    if n is not None and len(y) != n:
        raise DataError(f"Y has {len(y)} rows but X has {n}")
    if not np.all(np.isfinite(y)):
        raise DataError("Y has missing values; drop rows with missing follow-up (or impute) before fitting")
    if np.ptp(y) == 0:
        raise DataError("Y is constant; no effect can be estimated")
    return y


def check_treatment(T, n: int, min_per_arm: int = MIN_PER_ARM) -> np.ndarray:
    t = np.asarray(T).reshape(-1)
    if len(t) != n:
        raise DataError(f"T has {len(t)} rows but X has {n}")
    try:
        tf = t.astype(float)
    except (TypeError, ValueError):
        raise DataError("T (arm) must be coded 0 = control, 1 = MBI") from None
    if not np.all(np.isin(tf, (0.0, 1.0))):
        raise DataError("T (arm) must be coded 0 = control, 1 = MBI; found other values")
    n1 = int(tf.sum())
    if n1 == 0 or n1 == n:
        raise DataError("only one arm present; an effect needs both MBI and control participants")
    if min(n1, n - n1) < min_per_arm:
        raise DataError(f"too few participants to fit and cross-fit an effect model: {n1} MBI and {n - n1} "
                        f"control, need at least {min_per_arm} per arm")
    return tf.astype(int)


def check_groups(groups, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups).reshape(-1)
    if len(g) != n:
        raise DataError(f"groups has {len(g)} rows but X has {n}")
    if pd.isna(pd.Series(g)).any():
        raise DataError("groups (trial_id) has missing values")
    return g


def known_propensity(t: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Each participant's randomisation probability: the share of MBI participants in their trial (or overall)."""
    if groups is None:
        return np.full(len(t), t.mean())
    codes, uniques = pd.factorize(groups)
    share = np.bincount(codes, weights=t) / np.bincount(codes)
    one_arm = [str(uniques[k]) for k in np.flatnonzero((share == 0) | (share == 1))]
    if one_arm:
        raise DataError(f"trial(s) {one_arm[:5]} have only one arm; drop them before fitting", trial=one_arm[0])
    return share[codes]


def check_propensity(propensity, n: int) -> np.ndarray:
    e = np.asarray(propensity, dtype=float).reshape(-1)
    if len(e) != n:
        raise DataError(f"propensity has {len(e)} rows but X has {n}")
    if not np.all((e > 0) & (e < 1)):
        raise DataError("propensity must lie strictly between 0 and 1")
    return e


def make_folds(t: np.ndarray, groups: np.ndarray | None, n_folds: int,
               seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fitting folds: whole trials per fold when there are >= 2 trials, else arm-stratified row folds.

    GroupKFold is deterministic, so folds do not depend on the seed when grouped (reproducible by construction).
    """
    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2, got {n_folds}")
    n_groups = 0 if groups is None else len(pd.unique(groups))
    if n_groups >= 2:
        splits = GroupKFold(n_splits=min(n_folds, n_groups)).split(t, t, groups)
    else:
        k = min(n_folds, int(min(t.sum(), len(t) - t.sum())))
        if k < 2:
            raise DataError("too few participants per arm to cross-fit")
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(t, t)
    folds = [(np.asarray(tr), np.asarray(te)) for tr, te in splits]
    for train, _ in folds:
        arms = t[train]
        if min(arms.sum(), len(arms) - arms.sum()) < 2:
            raise DataError("a cross-fitting fold has fewer than 2 participants in one arm; use fewer folds")
    return folds


def estimated_propensity(t, X, groups, n_folds: int, seed: int) -> np.ndarray:
    """Cross-fitted (trial-grouped) logistic propensity, for observational data; clipped to PROPENSITY_CLIP."""
    e = np.empty(len(t))
    for train, test in make_folds(t, groups, n_folds, seed):
        model = LogisticRegression(C=1.0, max_iter=2000).fit(X[train], t[train])
        e[test] = model.predict_proba(X[test])[:, 1]
    return np.clip(e, *PROPENSITY_CLIP)


def resolve_propensity(mode: str, t, X, groups, propensity, n_folds: int, seed: int) -> np.ndarray:
    if mode == "known":
        return check_propensity(propensity, len(t)) if propensity is not None else known_propensity(t, groups)
    if mode == "estimated":
        if propensity is not None:
            raise ConfigError("propensity='estimated' fits its own model; do not also pass a propensity array")
        return estimated_propensity(t, X, groups, n_folds, seed)
    raise ConfigError(f"propensity must be 'known' or 'estimated', got {mode!r}")


def arm_balancing_weights(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Inverse-probability-of-arm weights (mean 1).

    With trials randomised at different ratios, pooled within-arm regressions mix trials differently in the two
    arms (trial acts as a confounder); weighting by 1/P(arm | trial) restores the randomised balance.
    """
    w = np.where(t == 1, 1.0 / e, 1.0 / (1.0 - e))
    return w / w.mean()


class FixedPropensityClassifier(ClassifierMixin, BaseEstimator):
    """A "classifier" that returns a propensity it is given instead of learning one.

    econml's nuisance models see only ``hstack([X, W])``; we pass the known propensity as the single column of
    ``W`` and read it back from the last column (``value=None``), or return a constant ``value``.
    ``fit`` learns nothing, so cross-fitting cannot leak.
    """

    def __init__(self, *, value: float | None = None):
        self.value = value

    def fit(self, X, y, sample_weight=None, **fit_params):
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=float)
        p = np.full(X.shape[0], float(self.value)) if self.value is not None else X[:, -1]
        return np.column_stack([1.0 - p, p])

    def predict(self, X):
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


XGB_DEFAULTS = dict(n_estimators=200, max_depth=3, learning_rate=0.05, tree_method="hist", n_jobs=1,
                    subsample=0.8, colsample_bytree=0.8, min_child_weight=5)


#: the base learners by name (`make_regressor`, `make_classifier`)
LEARNERS = ("xgboost", "elasticnet", "ridge", "hgb", "stack")
#: penalties the elastic net searches per l1 ratio (`make_regressor`'s 'elasticnet')
ENET_PENALTIES = 25
#: folds of the elastic net's penalty search (of whole trials when the fit has trial groups)
ENET_FOLDS = 5
#: folds of the stacked learner's cross-fitted predictions (of whole trials when the fit has trial groups)
STACK_FOLDS = 3


def make_regressor(learner, seed: int):
    """A regressor from a short name (`LEARNERS`) or a clone of an sklearn estimator.

    'stack': sklearn's ``StackingRegressor`` of an elastic net and xgboost, combined by non-negative least squares on
    their cross-fitted predictions (a super learner over two libraries: linear where the truth is near linear, trees
    where it is not); `fit_weighted` makes the stack's folds whole trials, and the elastic net's penalty search
    inside each of them too. The elastic net replaced ridge (RESULTS section 24): ridge only shrinks, and its
    penalty was chosen row by row (leave-one-out), so a trait with no real effect kept a slope fitted to noise in
    each arm, which a T-learner's difference of two fits does not cancel. For 0/1 outcomes `make_classifier`'s
    stack is unchanged: logistic regression (fixed penalty) and xgboost."""
    if not isinstance(learner, str):
        return clone(learner)
    if learner == "stack":
        from sklearn.ensemble import StackingRegressor

        return StackingRegressor([("elasticnet", make_regressor("elasticnet", seed)),
                                  ("xgboost", make_regressor("xgboost", seed))],
                                 final_estimator=NonNegativeBlend(positive=True), cv=STACK_FOLDS)
    if learner == "xgboost":
        from xgboost import XGBRegressor
        return XGBRegressor(**XGB_DEFAULTS, random_state=seed)
    if learner == "elasticnet":
        # 25 penalties on scikit-learn's log grid (1e-3 of the largest to the largest; 100 by default): on a
        # simulator fold the chosen penalty moved by 5% for 2.5 times less fit time, a search a stack runs 4 times
        # per fit (all rows and each of its folds); the DR-learner's PEHE did not move (RESULTS section 24)
        return ElasticNetCV(l1_ratio=[0.1, 0.5, 0.9], alphas=ENET_PENALTIES, cv=ENET_FOLDS, max_iter=5000,
                            random_state=seed)
    if learner == "ridge":
        return RidgeCV(alphas=np.logspace(-3, 3, 13))
    if learner == "hgb":
        return HistGradientBoostingRegressor(max_iter=100, max_depth=3, learning_rate=0.1, min_samples_leaf=20,
                                             early_stopping=False, random_state=seed)
    raise ConfigError(f"unknown base learner {learner!r}; use one of {', '.join(LEARNERS)} or an estimator")


def make_classifier(learner, seed: int):
    """The classifier counterpart of :func:`make_regressor` (for 0/1 outcomes)."""
    if not isinstance(learner, str):
        return clone(learner)
    if learner == "stack":
        from sklearn.ensemble import StackingClassifier

        return StackingClassifier([("ridge", make_classifier("ridge", seed)),
                                   ("xgboost", make_classifier("xgboost", seed))],
                                  final_estimator=LogisticRegression(C=1.0, max_iter=2000), cv=STACK_FOLDS,
                                  stack_method="predict_proba")
    if learner == "xgboost":
        from xgboost import XGBClassifier
        return XGBClassifier(**XGB_DEFAULTS, random_state=seed)
    if learner == "elasticnet":
        return LogisticRegression(C=1.0, l1_ratio=0.5, solver="saga", max_iter=5000, random_state=seed)
    if learner == "ridge":
        return LogisticRegression(C=1.0, max_iter=2000)
    if learner == "hgb":
        return HistGradientBoostingClassifier(max_iter=100, max_depth=3, learning_rate=0.1, min_samples_leaf=20,
                                              early_stopping=False, random_state=seed)
    raise ConfigError(f"unknown base learner {learner!r}; use one of {', '.join(LEARNERS)} or an estimator")


class NonNegativeBlend(LinearRegression):
    """The stack's combiner: least squares with non-negative weights (``LinearRegression(positive=True)``) that
    takes only the sample weights of the fit parameters. scikit-learn's ``StackingRegressor`` hands its final
    estimator every fit parameter, including the trial labels `fit_weighted` routes to the base learners' penalty
    search, which ``LinearRegression.fit`` refuses."""

    def fit(self, X, y, sample_weight=None, **_routed_to_the_base_learners):
        return super().fit(X, y, sample_weight=sample_weight)


class TrialFolds(GroupKFold):
    """``GroupKFold`` over at most ``n_splits`` folds and never more than the trials present: the elastic net inside
    a stack searches its penalty on each of the stack's training folds, which hold fewer trials than the fit.

    Where fewer than 2 trials are present (a stack fold of a 2-trial fit trains on one trial; a refit without trial
    labels) it falls back to folds of rows, as the elastic net outside a stack does: with one trial there is no other
    trial to hold out, and rows of the same trial leak nothing across trials."""

    def split(self, X, y=None, groups=None):
        n_splits = self.get_n_splits(X, y, groups)
        if _trials(groups) < 2:
            return KFold(n_splits=n_splits).split(X, y)
        return GroupKFold(n_splits=n_splits).split(X, y, groups)

    def get_n_splits(self, X=None, y=None, groups=None):
        """The number of folds `split` makes for these labels and rows (``n_splits`` when neither is given)."""
        trials = _trials(groups)
        if trials >= 2:
            return min(self.n_splits, trials)
        return self.n_splits if X is None else min(self.n_splits, _num_samples(X))


def _trials(groups) -> int:
    """How many trials the labels name (0 without labels)."""
    return 0 if groups is None else len(pd.unique(groups))


def fit_weighted(model, X, y, sample_weight=None, groups=None):
    """Fit with sample weights when the model takes them (all our named learners do).

    An ``ElasticNetCV`` gets its penalty chosen, and a stack (`make_regressor`'s 'stack') its weights, over folds of
    whole trials when ``groups`` holds >= 2 trials, so inner tuning, like cross-fitting, never scores a model on
    participants of a trial it was trained on; the elastic net inside our stack also searches its penalty over whole
    trials of each stack fold (the trial labels reach it through scikit-learn's metadata routing, `_fit_routed`).
    The folds' row indices are not kept in the fitted model (its ``cv`` is set back after the fit): a logged final
    model would otherwise carry which rows were trained together.
    """
    most = ENET_FOLDS if isinstance(model, ElasticNetCV) else STACK_FOLDS if _is_stack(model) else 0
    original = model.get_params()["cv"] if most else None
    grouped = bool(most) and _trials(groups) >= 2
    if grouped:
        model.set_params(cv=list(TrialFolds(n_splits=most).split(X, y, groups)))
    try:
        if grouped and isinstance(getattr(model, "final_estimator", None), NonNegativeBlend):
            return _fit_routed(model, X, y, sample_weight, groups)
        if sample_weight is None:
            return model.fit(X, y)
        try:
            return model.fit(X, y, sample_weight=sample_weight)
        except TypeError:
            return model.fit(X, y)
    finally:
        if most:
            model.set_params(cv=original)


def _fit_routed(stack, X, y, sample_weight, groups):
    """Fit our stack with the trial labels routed to its elastic nets' penalty search (`TrialFolds`) and the sample
    weights to every base learner and the combiner; the elastic nets' ``cv`` is set back afterwards."""
    import sklearn

    tuned = [name for name, est in stack.estimators if isinstance(est, ElasticNetCV)]
    originals = {f"{name}__cv": stack.get_params()[f"{name}__cv"] for name in tuned}
    # unit weights when none are given: with routing on, an elastic net refuses even sample_weight=None unrequested
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    try:
        with sklearn.config_context(enable_metadata_routing=True):
            stack.set_params(**{key: TrialFolds(n_splits=ENET_FOLDS) for key in originals})
            for _, est in stack.estimators:
                if est != "drop":
                    est.set_fit_request(sample_weight=True)
            return stack.fit(X, y, sample_weight=weights, groups=np.asarray(groups))
    finally:
        stack.set_params(**originals)


def _is_stack(model) -> bool:
    from sklearn.ensemble import StackingClassifier, StackingRegressor

    return isinstance(model, (StackingRegressor, StackingClassifier))


def is_binary_outcome(y: np.ndarray, outcome_type: str) -> bool:
    if outcome_type == "auto":
        return bool(np.all(np.isin(y, (0.0, 1.0))))
    if outcome_type in ("binary", "continuous"):
        if outcome_type == "binary" and not np.all(np.isin(y, (0.0, 1.0))):
            raise DataError("outcome_type='binary' but Y has values other than 0/1")
        return outcome_type == "binary"
    raise ConfigError(f"outcome_type must be 'auto', 'binary' or 'continuous', got {outcome_type!r}")


def ols_robust(X, y, clusters, *, add_intercept: bool = True):
    """OLS of y on (1, X) with CR1 cluster-robust covariance (df = G - 1), or HC1 (df = inf) without clusters.

    For weighted least squares pass rows already multiplied by sqrt(weight) and ``add_intercept=False``.
    Returns (coef, covariance, df).
    """
    design = np.column_stack([np.ones(len(X)), X]) if add_intercept else np.asarray(X, dtype=float)
    n, p = design.shape
    bread = np.linalg.pinv(design.T @ design)
    coef = bread @ design.T @ y
    score = design * (y - design @ coef)[:, None]
    if clusters is None:
        meat, factor, df = score.T @ score, n / (n - p), np.inf
    else:
        codes = np.unique(clusters, return_inverse=True)[1]
        n_clusters = codes.max() + 1
        sums = np.zeros((n_clusters, p))
        np.add.at(sums, codes, score)
        meat = sums.T @ sums
        factor = n_clusters / (n_clusters - 1) * (n - 1) / (n - p)
        df = n_clusters - 1
    return coef, factor * bread @ meat @ bread, float(df)
