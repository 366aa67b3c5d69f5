"""Within-trial multiple imputation by chained equations.

Why within each trial: trials differ in populations, instruments and missingness mechanisms; imputing across trials
would let one trial's values inform another's and blur exactly the between-trial heterogeneity the meta-analysis
estimates. So every trial is imputed on its own, and the random state of each (imputation, trial, arm) block is
derived from (seed, imputation number, trial id, arm) only, so results do not depend on the order or presence of
other trials.

Why arm-aware: the analyses that follow contrast arms and estimate arm-by-covariate interactions. An imputation model
without arm would shrink the treatment effect towards zero. When every arm of a trial has at least `min_arm_size`
rows and every imputed column at least `min_observed` observed values in each arm, each arm is imputed separately (so
all arm-by-covariate interactions are preserved); otherwise the arm is used as a predictor in one model per trial.

How columns are handled (fully conditional specification, van Buuren 2018, chained for `max_iter` rounds; one round
when a single column is incomplete, since then there is nothing to chain):
* numeric columns: Bayesian linear regression imputation (Rubin 1987; van Buuren 2018 algorithm 3.1, mice's "norm"):
  per round, sigma² and the coefficients are drawn once from their posterior given the observed rows and the
  missing values drawn from the predictive distribution. We do not use scikit-learn's
  `IterativeImputer(sample_posterior=True)`: it draws each missing value from BayesianRidge's predictive
  normal around the *posterior-mean* coefficients, so values within one imputation do not share one parameter draw;
  the between-imputation variance of a mean is then understated (not "proper" in Rubin's sense), and its per-call
  overhead made two-stage analyses ~50x slower;
* binary columns (observed values all 0/1): logistic regression fitted on a bootstrap resample of the observed rows
  (mice's "logreg.boot": the bootstrap carries the parameter uncertainty), then Bernoulli draws;
* categorical (text) columns: the same with a multinomial logistic regression; they act as predictors for the other
  columns through 0/1 indicators (reference = first level);
* a column with no observed value in a trial is left missing there and reported in `frame.attrs["imputation"]`;
* no row is ever dropped and observed values are never changed.
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import DataError

MIN_ARM_SIZE = 30
MIN_OBSERVED = 5


def _is_binary(series: pd.Series) -> bool:
    observed = series.dropna()
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        return False
    return bool(len(observed) > 0 and observed.isin([0, 1]).all())


def _is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def _block_seed(seed: int, imputation: int, trial: Any, arm: Any) -> int:
    """A seed that depends only on (seed, imputation, trial id, arm), never on the other trials."""
    trial_key = zlib.crc32(str(trial).encode("utf-8"))
    arm_key = zlib.crc32(str(arm).encode("utf-8"))
    return int(np.random.SeedSequence([int(seed), int(imputation), trial_key, arm_key]).generate_state(1)[0])


def multiply_impute(frame: pd.DataFrame, columns: list[str] | tuple[str, ...], *, m: int = 5, seed: int = 0,
                    by: str = "trial_id", arm_column: str | None = "arm", max_iter: int = 10,
                    auxiliary: list[str] | tuple[str, ...] = (), min_arm_size: int = MIN_ARM_SIZE,
                    min_observed: int = MIN_OBSERVED) -> list[pd.DataFrame]:
    """Return `m` completed copies of `frame` in which the missing values of `columns` are imputed within trials.

    `auxiliary` columns (numeric, may have missing values) are used as predictors but left as they are. Each returned
    frame has the same index and columns as `frame`; `attrs["imputation"]` records the strategy used per trial and
    the columns left missing because a trial never observed them. Deterministic for a given `seed`.
    """
    columns = list(dict.fromkeys(columns))
    auxiliary = [c for c in dict.fromkeys(auxiliary) if c not in columns]
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise DataError(f"the number of imputations m must be a positive integer, got {m!r}")
    for name in [by, *columns, *auxiliary] + ([arm_column] if arm_column else []):
        if name not in frame.columns:
            raise DataError("column needed for imputation is absent", column=name)
    if arm_column and frame[arm_column].isna().any():
        raise DataError("the arm is missing on some rows; it must be known for every randomised participant",
                        column=arm_column)
    if frame[by].isna().any():
        raise DataError("some rows have no trial id", column=by)

    kinds = {c: ("categorical" if _is_categorical(frame[c]) else "binary" if _is_binary(frame[c]) else "numeric")
             for c in columns}
    report: dict[str, Any] = {"m": int(m), "seed": int(seed), "columns": columns, "kinds": kinds,
                              "entirely_missing": {}, "strategy": {}}
    outputs = [frame.copy() for _ in range(m)]
    for trial, rows in frame.groupby(by, sort=True, dropna=False).groups.items():
        block = frame.loc[rows]
        empty = [c for c in columns if block[c].isna().all()]
        if empty:
            report["entirely_missing"][str(trial)] = empty
        todo = [c for c in columns if c not in empty and block[c].isna().any()]
        if not todo:
            report["strategy"][str(trial)] = "nothing to impute"
            continue
        usable = [c for c in columns if c not in empty]
        predictors_aux = [c for c in auxiliary if block[c].notna().any()]
        split = arm_column is not None and _split_by_arm(block, arm_column, usable, min_arm_size, min_observed)
        report["strategy"][str(trial)] = "each arm separately" if split else (
            "arm as predictor" if arm_column else "one model")
        groups = ([(arm, block[block[arm_column] == arm]) for arm in sorted(block[arm_column].unique())]
                  if split else [("all", block)])
        for i in range(m):
            for arm, sub in groups:
                filled = _impute_block(sub, usable, kinds, predictors_aux,
                                       arm_column if (arm_column and not split) else None,
                                       _block_seed(seed, i, trial, arm), max_iter)
                for c in todo:
                    missing = sub[c].isna()
                    if missing.any():
                        outputs[i].loc[sub.index[missing], c] = filled.loc[missing, c].to_numpy()
    for out in outputs:
        out.attrs["imputation"] = report
    return outputs


def _split_by_arm(block: pd.DataFrame, arm_column: str, columns: list[str], min_arm_size: int,
                  min_observed: int) -> bool:
    arms = block[arm_column].unique()
    if len(arms) < 2:
        return False
    for arm in arms:
        sub = block[block[arm_column] == arm]
        if len(sub) < min_arm_size or any(sub[c].notna().sum() < min_observed for c in columns):
            return False
    return True


def _encode(values: pd.Series, kind: str, levels: list[str]) -> np.ndarray:
    """Predictor columns for one variable: itself, or 0/1 indicators of the non-reference levels."""
    if kind != "categorical":
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)[:, None]
    text = values.astype(object).to_numpy()
    return np.column_stack([(text == level).astype(float) for level in levels[1:]]) if len(levels) > 1 else \
        np.zeros((len(values), 0))


def _impute_block(block: pd.DataFrame, columns: list[str], kinds: dict[str, str], auxiliary: list[str],
                  arm_column: str | None, random_state: int, max_iter: int) -> pd.DataFrame:
    """One completed copy of one trial (or one arm of it): chained equations with proper draws."""
    rng = np.random.default_rng(random_state)
    variables = list(columns) + list(auxiliary)
    var_kind = {c: kinds.get(c, "numeric") for c in variables}
    levels = {c: sorted(block[c].dropna().astype(str).unique()) for c in variables if var_kind[c] == "categorical"}
    current: dict[str, pd.Series] = {}
    missing: dict[str, np.ndarray] = {}
    for c in variables:
        values = block[c].astype(object).where(block[c].notna(), None) if var_kind[c] == "categorical" else \
            pd.to_numeric(block[c], errors="coerce").astype(float)
        miss = block[c].isna().to_numpy()
        observed = values[~miss].to_numpy()
        if miss.all():
            continue  # never observed here: neither imputed nor used as a predictor
        start = values.copy()
        start[miss] = rng.choice(observed, size=int(miss.sum()), replace=True)  # mice's initial random draw
        current[c], missing[c] = start, miss
    incomplete = [c for c in current if missing[c].any()]
    incomplete.sort(key=lambda c: int(missing[c].sum()))  # monotone-ish visiting order, least missing first
    arm = block[arm_column].to_numpy(dtype=float)[:, None] if arm_column else np.zeros((len(block), 0))
    rounds = max_iter if len(incomplete) > 1 else 1
    for _ in range(rounds):
        for target in incomplete:
            predictors = [_encode(current[c], var_kind[c], levels.get(c, [])) for c in current if c != target]
            X = np.column_stack([np.ones(len(block)), arm, *predictors])
            miss = missing[target]
            if var_kind[target] == "numeric":
                draws = _draw_norm(X, current[target].to_numpy(dtype=float), miss, rng)
            else:
                draws = _draw_discrete(X, current[target].to_numpy(dtype=object), miss, rng)
                if var_kind[target] == "binary":
                    draws = draws.astype(float)
            updated = current[target].copy()
            updated[miss] = draws
            current[target] = updated
    return pd.DataFrame({c: current[c] for c in columns if c in current}, index=block.index)


def _draw_norm(X: np.ndarray, y: np.ndarray, miss: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bayesian linear regression draw (van Buuren 2018, algorithm 3.1) with mice's tiny ridge for stability."""
    Xo, yo = X[~miss], y[~miss]
    X, Xo = _drop_constant(X, Xo)
    n, p = Xo.shape
    if n - p < 2:  # too few observed rows for this model: intercept only
        X, Xo = X[:, :1], Xo[:, :1]
        n, p = Xo.shape
    if n < 2:
        return rng.choice(yo, size=int(miss.sum()), replace=True)
    xtx = Xo.T @ Xo
    xtx = xtx + 1e-5 * np.diag(np.diag(xtx))
    v = np.linalg.inv(xtx)
    v = (v + v.T) / 2
    beta_hat = v @ Xo.T @ yo
    resid = yo - Xo @ beta_hat
    sigma = np.sqrt(float(resid @ resid) / rng.chisquare(n - p))
    beta = beta_hat + sigma * np.linalg.cholesky(v) @ rng.standard_normal(p)
    return X[miss] @ beta + sigma * rng.standard_normal(int(miss.sum()))


def _drop_constant(X: np.ndarray, Xo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the intercept and the predictors that vary among the observed rows (others are not estimable)."""
    keep = np.ones(X.shape[1], dtype=bool)
    keep[1:] = np.ptp(Xo[:, 1:], axis=0) > 0 if Xo.shape[0] else False
    return X[:, keep], Xo[:, keep]


def _draw_discrete(X: np.ndarray, y: np.ndarray, miss: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Missing values of a binary or categorical column drawn from a bootstrap-refitted logistic regression."""
    observed_idx = np.flatnonzero(~miss)
    boot = rng.choice(observed_idx, size=observed_idx.size, replace=True)
    labels = y[boot]
    keys = np.array([str(v) for v in labels])
    classes, codes = np.unique(keys, return_inverse=True)
    lookup = {str(v): v for v in labels}
    features = X[:, 1:]
    scale = features[boot].std(axis=0)
    usable = scale > 0
    features = (features[:, usable] - features[boot][:, usable].mean(axis=0)) / scale[usable]
    if classes.size == 1 or features.shape[1] == 0:
        # one class in the resample or nothing to predict from: draw from the resample itself
        return rng.choice(labels, size=int(miss.sum()), replace=True)
    design = np.column_stack([np.ones(len(features)), features])
    coef = _multinomial_logit(design[boot], codes, classes.size)
    prob = _softmax(design[miss] @ coef)
    u = rng.random(prob.shape[0])[:, None]
    chosen = np.minimum((u > prob.cumsum(axis=1)).sum(axis=1), classes.size - 1)
    return np.array([lookup[classes[i]] for i in chosen], dtype=object)


def _softmax(eta: np.ndarray) -> np.ndarray:
    """Class probabilities from linear predictors of the non-reference classes (reference = class 0)."""
    full = np.column_stack([np.zeros(eta.shape[0]), eta])
    full -= full.max(axis=1, keepdims=True)
    prob = np.exp(full)
    return prob / prob.sum(axis=1, keepdims=True)


def _multinomial_logit(X: np.ndarray, codes: np.ndarray, n_classes: int, l2: float = 1.0,
                       max_iter: int = 50) -> np.ndarray:
    """Ridge-penalised (slopes only, on standardised predictors) multinomial/binary logistic regression by Newton.

    The mild penalty keeps the fit finite under the separation that small arms often show.
    """
    n, p = X.shape
    k = n_classes - 1
    target = np.eye(n_classes)[codes][:, 1:]
    penalty = np.kron(np.eye(k), np.diag(np.r_[0.0, np.full(p - 1, l2)]))
    coef = np.zeros((p, k))
    for _ in range(max_iter):
        prob = _softmax(X @ coef)[:, 1:]
        grad = (X.T @ (target - prob)).T.ravel() - penalty @ coef.T.ravel()
        weights = np.einsum("ia,ab->iab", prob, np.eye(k)) - np.einsum("ia,ib->iab", prob, prob)
        hessian = np.einsum("iab,ij,il->ajbl", weights, X, X).reshape(k * p, k * p) + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(k * p), grad)
        coef = coef + step.reshape(k, p).T
        if np.max(np.abs(step)) < 1e-8:
            break
    return coef
