"""Best linear projection (BLP) of the MBI effect on chosen covariates, pooled over trials.

The target is the coefficient vector of the best linear approximation of the conditional average treatment effect
tau(x) = E[Y(1) - Y(0) | X = x] by (1, Z), Z a few named covariates:  beta = argmin_b E[(tau(X) - (1, Z) b)^2].
It answers "who benefits" with one slope per covariate (with a confidence interval) without believing any model
of tau is right. Estimated as in grf's ``best_linear_projection`` (Semenova & Chernozhukov 2021, "Debiased
machine learning of conditional average treatment effects and other causal functions", Econometrics Journal
24:264-289): OLS of doubly robust (AIPW) scores Gamma_i on (1, Z_i). Since E[Gamma | X] = tau(X) whatever the
outcome models when the propensity is known (Robins, Rotnitzky & Zhao 1994), the OLS coefficients are unbiased
for the BLP conditional on the covariates of the projected rows.

Choices for pooled randomised trials (the conventions of `mbi_predict.models.inference.trial_aware_ate`):

* Propensity: each trial's known randomisation ratio, read as the share of MBI participants among the analysed
  rows of the trial (rows with an observed outcome), unless an array is given.
* Outcome models E[Y | X, arm] are cross-fitted over whole trials (GroupKFold by trial, ``n_folds``): no trial's
  scores use a model that saw any of its participants. With clustered data the cross-fitting split must be made by
  clusters for the DML argument to hold (Chiang, Kato, Ma & Sasaki 2022, "Multiway cluster robust double/debiased
  machine learning", J Bus Econ Stat 40:1046); within-trial folds would let trial-shared noise leak into a trial's
  own scores. It costs some precision (the models cannot learn a held-out trial's level) but no bias, since the
  propensity is known.
* Missing covariates: in the outcome models, imputed by the training folds' column mean inside the cross-fitting
  (rows are kept). In the projection itself, complete cases: rows missing any projected covariate are left out
  (counted in ``note``; a trial that never measured a covariate drops out of the projection).
  Rows with a missing outcome are dropped first (counted).
* Covariates Z are centred at their mean over the projected rows, so the intercept is the average effect of those
  rows and each slope is the change in the effect per unit of its covariate, the others held fixed.
* Inference: cluster-robust by trial, CR1 = G/(G-1) * (n-1)/(n-p) * bread * meat * bread (statsmodels'
  ``cov_type="cluster", use_correction=True``), and t intervals and p-values with G - 1 degrees of freedom
  (statsmodels' default ``df_correction=True``; Cameron & Miller 2015, J Hum Resour 50:317, sec. VI). The
  participant-to-effect noise of the scores and the between-trial variation of the effect are both in the meat.

Categorical covariates are one-hot encoded with the first (sorted) level dropped and named ``col=level``; naming
``col`` projects on all its levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models import _effect_common as common
from mbi_predict.models.inference import crossfit_outcome_models, dr_scores

MIN_TRIALS = 3
METHOD = ("best linear projection of the CATE (Semenova & Chernozhukov 2021): OLS of cross-fitted AIPW scores on "
          "centred covariates; outcome models cross-fitted over whole trials; known randomisation ratio per trial; "
          "trial-clustered CR1 standard errors, t with G-1 df")


@dataclass(frozen=True)
class ProjectionTerm:
    """One coefficient of the projection: ``term`` is "intercept" (the average effect) or a covariate name."""

    term: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    pvalue: float

    def to_dict(self) -> dict:
        return {"term": self.term, "estimate": self.estimate, "se": self.se, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "pvalue": self.pvalue}


@dataclass(frozen=True)
class BestLinearProjection:
    """The projection's coefficients (intercept first) with trial-clustered inference; aggregates only."""

    terms: tuple[ProjectionTerm, ...]
    n_clusters: int
    n: int
    df: int
    level: float
    method: str
    note: str
    n_dropped_outcome: int = 0
    n_dropped_covariates: int = 0

    def term(self, name: str) -> ProjectionTerm:
        for term in self.terms:
            if term.term == name:
                return term
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"terms": [t.to_dict() for t in self.terms], "clusters": "trial_id", "n_clusters": self.n_clusters,
                "n": self.n, "df": self.df, "method": self.method, "note": self.note}


# ------------------------------------------------------------------------------------------------- encoding

def encode_covariates(X) -> pd.DataFrame:
    """Numeric columns as floats; categorical (object, category, bool, string) ones one-hot with the first sorted
    level dropped, named ``col=level`` (a missing value stays missing in every dummy). Arrays get ``x0, x1, ...``."""
    if not isinstance(X, pd.DataFrame):
        array = np.asarray(X)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise DataError(f"covariates must be a 2-D table (participants x covariates), got {array.ndim}-D")
        X = pd.DataFrame(array, columns=[f"x{j}" for j in range(array.shape[1])])
    parts = []
    for column in X.columns:
        values = X[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            parts.append(values.astype(float).rename(str(column)).reset_index(drop=True))
            continue
        observed = values.notna().to_numpy()
        labels = values.astype(str).to_numpy()
        for level in sorted(set(labels[observed]))[1:]:
            dummy = np.where(observed, (labels == level).astype(float), np.nan)
            parts.append(pd.Series(dummy, name=f"{column}={level}"))
    if not parts:
        raise DataError("no covariate columns to project on")
    return pd.concat(parts, axis=1)


def _select(encoded: pd.DataFrame, original: list[str], names) -> list[str]:
    if names is None:
        return list(encoded.columns)
    if isinstance(names, str):
        names = [names]
    chosen: list[str] = []
    for name in names:
        name = str(name)
        if name in encoded.columns:
            chosen.append(name)
        elif name in original:
            levels = [c for c in encoded.columns if c.startswith(f"{name}=")]
            if not levels:
                raise ConfigError("covariate takes a single value; it cannot be projected on", column=name)
            chosen += levels
        else:
            raise ConfigError("covariate to project on is not in the data", column=name)
    if not chosen:
        raise ConfigError("no covariate to project on was named")
    return list(dict.fromkeys(chosen))


# --------------------------------------------------------------------------------------------- inference

def _alpha(alpha: float | None, level: float | None) -> float:
    if level is not None:
        if alpha is not None and not np.isclose(alpha, 1 - level):
            raise ConfigError(f"alpha {alpha} and level {level} disagree; give one")
        alpha = 1 - float(level)
    alpha = 0.05 if alpha is None else float(alpha)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    return alpha


def blp_from_scores(scores, Z, clusters, *, names=None, alpha: float | None = None, level: float | None = None,
                    method: str = METHOD, note: str = "") -> BestLinearProjection:
    """OLS of ``scores`` on (1, Z - mean(Z)) with CR1 trial-clustered standard errors and t_{G-1} inference.

    The covariance is G/(G-1) (n-1)/(n-p) (X'X)^-1 [sum_g X_g' e_g e_g' X_g] (X'X)^-1, exactly statsmodels'
    ``OLS(...).fit(cov_type="cluster", cov_kwds={"groups": g, "use_correction": True})`` with ``df_correction``
    left at True (df = G - 1). Rows must be complete (no missing values).
    """
    alpha = _alpha(alpha, level)
    s = np.asarray(scores, dtype=float).reshape(-1)
    Z = np.asarray(Z, dtype=float)
    Z = Z[:, None] if Z.ndim == 1 else Z
    g = np.asarray(clusters).reshape(-1)
    if not (len(s) == len(Z) == len(g)):
        raise DataError("scores, covariates and trial ids must have the same number of rows")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(Z))):
        raise DataError("scores and covariates of the projected rows must be finite")
    names = [f"x{j}" for j in range(Z.shape[1])] if names is None else [str(n) for n in names]
    n_clusters = len(pd.unique(g))
    if n_clusters < MIN_TRIALS:
        raise DataError(f"the projection needs at least {MIN_TRIALS} trials with both arms, got {n_clusters}")
    Zc = Z - Z.mean(axis=0)
    design = np.column_stack([np.ones(len(s)), Zc])
    if len(s) <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        raise DataError(f"the covariates {names} are collinear or constant on the projected rows")
    coef, cov, df = common.ols_robust(Zc, s, g)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    q = stats.t.ppf(1 - alpha / 2, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(coef / se), df)
    terms = tuple(ProjectionTerm(name, float(b), float(e), float(b - q * e), float(b + q * e), float(pv))
                  for name, b, e, pv in zip(["intercept"] + names, coef, se, p))
    return BestLinearProjection(terms=terms, n_clusters=int(n_clusters), n=int(len(s)), df=int(df),
                                level=1 - alpha, method=method, note=note)


# ----------------------------------------------------------------------------------------------- scores

def _mean_impute(X: np.ndarray, train: np.ndarray) -> np.ndarray:
    """X with each column's missing values replaced by its mean over the training rows (0 if never observed)."""
    observed = np.isfinite(X[train])
    counts = observed.sum(axis=0)
    sums = np.where(observed, X[train], 0.0).sum(axis=0)
    means = np.divide(sums, counts, out=np.zeros(X.shape[1]), where=counts > 0)
    return np.where(np.isfinite(X), X, means[None, :])


def crossfit_scores(y, t, X, trial, propensity, *, n_folds: int, seed: int, outcome_model) -> np.ndarray:
    """AIPW scores with outcome models cross-fitted over whole trials, covariates mean-imputed per training fold."""
    folds = common.make_folds(t, trial, n_folds, seed)
    binary = common.is_binary_outcome(y, "auto")
    mu0, mu1 = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for train, test in folds:
        filled = _mean_impute(X, train)
        m0, m1 = crossfit_outcome_models(y, t, filled, folds=[(train, test)], learner=outcome_model, seed=seed,
                                         binary=binary, groups=trial)
        mu0[test], mu1[test] = m0[test], m1[test]
    return dr_scores(y, t, mu0, mu1, propensity)


def _check_trials(t: np.ndarray, trial: np.ndarray) -> None:
    trials = pd.unique(trial)
    if len(trials) < MIN_TRIALS:
        raise DataError(f"the best linear projection needs at least {MIN_TRIALS} trials (inference is clustered "
                        f"by trial), got {len(trials)}")
    for arm, label in ((1, "MBI"), (0, "control")):
        empty = [str(k) for k in trials if not np.any(t[trial == k] == arm)]
        if empty:
            raise DataError(f"trial(s) {empty[:5]} have no {label} participant with an observed outcome; drop them "
                            "before projecting", trial=empty[0])


def best_linear_projection(X, y, t, trial_id, *, covariates=None, propensity=None, alpha: float | None = None,
                           level: float | None = None, seed: int = 0, outcome_X=None, n_folds: int = 5,
                           outcome_model="ridge") -> BestLinearProjection:
    """Best linear projection of the MBI effect on ``covariates`` (names of columns of ``X``; default all).

    ``X``: covariates (DataFrame or array; categorical columns one-hot, drop-first, ``col=level``). ``y`` outcome,
    ``t`` arm (1 = MBI, 0 = control), ``trial_id`` one id per row. ``propensity``: per-row randomisation
    probability (default: each trial's share of MBI participants among rows with an observed outcome).
    ``outcome_X``: covariates of the outcome models (default ``X``, all its columns). ``alpha`` or ``level``:
    interval level (default 95%). ``seed`` seeds the outcome learners. See the module docstring for the method.
    Raises a one-line ``ConfigError`` naming a covariate absent from ``X`` and a ``DataError`` for fewer than 3
    trials or a trial without one of the arms.
    """
    alpha = _alpha(alpha, level)
    original = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else []
    encoded = encode_covariates(X)
    chosen = _select(encoded, original, covariates)
    model_X = encoded if outcome_X is None else encode_covariates(outcome_X)
    try:
        y_all = np.asarray(y, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise DataError("y (the outcome) must be numeric") from None
    n_all = len(y_all)
    if len(encoded) != n_all or len(model_X) != n_all:
        raise DataError(f"covariates have {len(encoded)} rows (outcome-model covariates {len(model_X)}) but y has "
                        f"{n_all}")
    t_all = common.check_treatment(t, n_all, min_per_arm=1)
    trial_all = common.check_groups(trial_id, n_all)
    if trial_all is None:
        raise DataError("trial_id is required: inference is clustered by trial")
    keep = np.isfinite(y_all)
    n_dropped_outcome = int((~keep).sum())
    y_a, t_a, trial_a = y_all[keep], t_all[keep], trial_all[keep]
    _check_trials(t_a, trial_a)
    if propensity is None:
        e = common.known_propensity(t_a, trial_a)
    else:
        e = common.check_propensity(propensity, n_all)[keep]
    scores = crossfit_scores(y_a, t_a, model_X.to_numpy(dtype=float)[keep], trial_a, e, n_folds=n_folds,
                             seed=seed, outcome_model=outcome_model)

    Z = encoded[chosen].to_numpy(dtype=float)[keep]
    complete = np.all(np.isfinite(Z), axis=1)
    lost_trials = sorted(set(map(str, trial_a)) - set(map(str, trial_a[complete])))
    if len(pd.unique(trial_a[complete])) < MIN_TRIALS:
        raise DataError(f"only {len(pd.unique(trial_a[complete]))} trials have participants with all of {chosen} "
                        f"observed; the projection needs at least {MIN_TRIALS}")
    note = (f"{n_dropped_outcome} rows with a missing outcome dropped; {int((~complete).sum())} rows missing a "
            "projected covariate left out of the projection (complete cases"
            + (f"; no such row in trial(s) {', '.join(lost_trials)}" if lost_trials else "")
            + "); missing outcome-model covariates mean-imputed within the training folds; covariates centred at "
              "their mean over the projected rows, so the intercept is their average effect")
    result = blp_from_scores(scores[complete], Z[complete], trial_a[complete], names=chosen, alpha=alpha,
                             note=note)
    return BestLinearProjection(terms=result.terms, n_clusters=result.n_clusters, n=result.n, df=result.df,
                                level=result.level, method=result.method, note=note,
                                n_dropped_outcome=n_dropped_outcome, n_dropped_covariates=int((~complete).sum()))
