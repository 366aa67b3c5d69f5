"""Within-trial multiple imputation by chained equations.

Why within each trial: trials differ in populations, instruments and missingness mechanisms; imputing across trials
would let one trial's values inform another's and blur exactly the between-trial heterogeneity the meta-analysis
estimates. So every trial is imputed on its own, and the random state of each (imputation, trial, arm) block is
derived from (seed, imputation number, trial id) only, so results do not depend on the order or presence of other
trials.

Why arm-aware: the analyses that follow contrast arms and estimate arm-by-covariate interactions. An imputation model
without arm would shrink the treatment effect towards zero. When every arm of a trial has at least `min_arm_size`
rows and every imputed column at least `min_observed` observed values in each arm, each arm is imputed separately (so
all arm-by-covariate interactions are preserved); otherwise the arm is used as a predictor in one model per trial.

How columns are handled:
* numeric columns whose observed values are not all 0/1: Bayesian ridge regression with posterior draws
  (scikit-learn `IterativeImputer(sample_posterior=True)`), chained for `max_iter` rounds;
* binary columns (observed values all 0/1) and categorical (string) columns: they enter the chained equations as
  numeric (0/1 indicators per level) so they inform the other columns, and their missing values are then drawn from a
  logistic regression fitted on a bootstrap resample of the observed rows given the completed other columns
  (mice's "logreg.boot"; the bootstrap carries the parameter uncertainty that proper imputation needs);
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


def _design(block: pd.DataFrame, columns: list[str], kinds: dict[str, str], auxiliary: list[str],
            arm_column: str | None) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Numeric matrix for the chained equations: categorical columns become one 0/1 indicator per level."""
    parts: dict[str, pd.Series] = {}
    dummies: dict[str, list[str]] = {}
    for c in columns:
        if kinds[c] == "categorical":
            levels = sorted(block[c].dropna().astype(str).unique())
            names = []
            for level in levels:
                name = f"{c}[{level}]"
                parts[name] = (block[c].astype(str) == level).astype(float).where(block[c].notna())
                names.append(name)
            dummies[c] = names
        else:
            parts[c] = pd.to_numeric(block[c], errors="coerce").astype(float)
    for c in auxiliary:
        parts[f"aux:{c}"] = pd.to_numeric(block[c], errors="coerce").astype(float)
    if arm_column:
        parts["arm:"] = block[arm_column].astype(float)
    return pd.DataFrame(parts, index=block.index), dummies


def _impute_block(block: pd.DataFrame, columns: list[str], kinds: dict[str, str], auxiliary: list[str],
                  arm_column: str | None, random_state: int, max_iter: int) -> pd.DataFrame:
    """One completed copy of one trial (or one arm of it)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer
    from sklearn.linear_model import BayesianRidge

    design, dummies = _design(block, columns, kinds, auxiliary, arm_column)
    design = design.loc[:, design.notna().any()]  # an auxiliary never observed here cannot help
    rng = np.random.default_rng(random_state)
    if design.isna().any().any():
        # with a single incomplete column there is nothing to chain: one round is the exact posterior draw
        rounds = max_iter if int(design.isna().any().sum()) > 1 else 1
        imputer = IterativeImputer(estimator=BayesianRidge(), sample_posterior=True, max_iter=rounds,
                                   random_state=random_state, keep_empty_features=True, skip_complete=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            completed = pd.DataFrame(imputer.fit_transform(np.array(design, dtype=float)), index=design.index,
                                     columns=design.columns)
    else:
        completed = design.copy()
    result = pd.DataFrame(index=block.index)
    for c in columns:
        if kinds[c] == "numeric":
            result[c] = completed[c]
    for c in columns:
        if kinds[c] == "numeric":
            continue
        own = dummies.get(c, [c])
        others = completed.drop(columns=own)
        result[c] = _draw_discrete(block[c], others, rng)
    return result


def _draw_discrete(target: pd.Series, predictors: pd.DataFrame, rng: np.random.Generator) -> pd.Series:
    """Missing values of a binary or categorical column drawn from a bootstrap-refitted logistic regression."""
    from sklearn.linear_model import LogisticRegression

    out = target.copy().astype(object)
    missing = target.isna().to_numpy()
    if not missing.any():
        return target
    observed_idx = np.flatnonzero(~missing)
    X = predictors.to_numpy(dtype=float)
    scale = X[observed_idx].std(axis=0)
    scale[scale == 0] = 1.0
    X = (X - X[observed_idx].mean(axis=0)) / scale
    boot = rng.choice(observed_idx, size=observed_idx.size, replace=True)
    labels = target.to_numpy(dtype=object)
    boot_labels = labels[boot]
    classes = np.array(sorted(set(boot_labels.tolist()), key=str), dtype=object)
    if classes.size == 1 or X.shape[1] == 0:
        # no covariate information or one class in the resample: draw from the resample's proportions
        draws = rng.choice(boot_labels, size=int(missing.sum()), replace=True)
    else:
        codes = np.searchsorted(np.array([str(c) for c in classes]), np.array([str(v) for v in boot_labels]))
        model = LogisticRegression(C=1.0, max_iter=500)  # mild ridge: separation is common in small arms
        model.fit(X[boot], codes)
        prob = model.predict_proba(X[missing])
        cum = prob.cumsum(axis=1)
        u = rng.random(prob.shape[0])[:, None]
        draws = classes[model.classes_[np.minimum((u > cum).sum(axis=1), prob.shape[1] - 1)]]
    out[missing] = draws
    if pd.api.types.is_numeric_dtype(target):
        return out.astype(float)
    return out
