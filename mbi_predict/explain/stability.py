"""How stable is a SHAP ranking across held-out trials?

Each leave-one-trial-out fold gives one importance per feature (mean |SHAP| on the held-out trial's rows). Across
folds we report, per feature:

* ``importance`` with ``ci_low``/``ci_high``: random-effects pooling (``mbi_predict.meta.pool``, REML) when each
  fold's sampling variance is given (``Explanation.importance_variance``: the bootstrap-of-rows variance of a mean,
  in closed form); otherwise a t-interval over folds (mean ± t_{k-1} SD/sqrt(k)), which treats folds as exchangeable
  replicates. Importances are >= 0, so a lower limit below 0 is clipped to 0.
* ``rank_<fold>`` (1 = most important in that fold), ``rank_median``, ``rank_iqr``, ``rank_min``, ``rank_max``;
* ``top_k_frequency``: share of *all* folds in which the feature is among the ``top_k`` (a feature missing from a
  fold's model — e.g. a covariate that trial never measured — counts as not in its top k).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from mbi_predict.errors import ConfigError


def fold_importance(explanation) -> tuple[dict[str, float], dict[str, float]]:
    """(mean |SHAP| per feature, its sampling variance) for one fold's Explanation: the inputs of ``stability``."""
    return explanation.importance(), explanation.importance_variance()


def _pool(values: np.ndarray, variances: np.ndarray | None, level: float, method: str) -> tuple[float, float, float, str]:
    k = len(values)
    if k == 0:
        return math.nan, math.nan, math.nan, "no folds"
    if variances is not None:
        positive = variances[np.isfinite(variances) & (variances > 0)]
        if positive.size == 0:  # the feature is never used (all-zero SHAP in every fold): nothing to pool
            if np.all(values == 0):
                return 0.0, 0.0, 0.0, "zero in every fold"
        else:
            from mbi_predict.meta import pool

            # a fold where the feature has zero SHAP for everyone has zero variance; give it the smallest observed
            # one so it keeps a finite (large, not infinite) weight
            v = np.where(np.isfinite(variances) & (variances > 0), variances, positive.min())
            result = pool(values, v, method=method, level=level)
            return result.estimate, result.ci_low, result.ci_high, f"random effects ({method})"
    mean = float(values.mean())
    if k == 1:
        return mean, math.nan, math.nan, "one fold: no interval"
    half = stats.t.ppf(0.5 + level / 2, k - 1) * values.std(ddof=1) / math.sqrt(k)
    return mean, mean - half, mean + half, "t-interval over folds"


def stability(importances_by_fold: Mapping[str, Mapping[str, float]], *, top_k: int = 3,
              variances_by_fold: Mapping[str, Mapping[str, float]] | None = None, level: float = 0.95,
              method: str = "REML") -> pd.DataFrame:
    """One row per feature, sorted by pooled importance (descending); see the module docstring for the columns."""
    if not importances_by_fold:
        raise ConfigError("stability needs the importances of at least one fold")
    if top_k < 1:
        raise ConfigError(f"top_k must be at least 1, got {top_k}")
    folds = [str(f) for f in importances_by_fold]
    table = pd.DataFrame({str(f): pd.Series(imp, dtype=float) for f, imp in importances_by_fold.items()})
    if variances_by_fold is not None:
        missing = [f for f in importances_by_fold if f not in variances_by_fold]
        if missing:
            raise ConfigError(f"variances_by_fold lacks fold(s) {missing}")
        var_table = pd.DataFrame({str(f): pd.Series(variances_by_fold[f], dtype=float)
                                  for f in importances_by_fold}).reindex(index=table.index, columns=folds)
    ranks = table.rank(axis=0, ascending=False, method="min")
    rows = []
    for feature in table.index:
        present = table.loc[feature].notna().to_numpy()
        values = table.loc[feature].to_numpy(dtype=float)[present]
        variances = None if variances_by_fold is None else var_table.loc[feature].to_numpy(dtype=float)[present]
        estimate, low, high, how = _pool(values, variances, level, method)
        feature_ranks = ranks.loc[feature].to_numpy(dtype=float)[present]
        q1, median, q3 = (np.percentile(feature_ranks, [25, 50, 75]) if feature_ranks.size
                          else (math.nan,) * 3)
        row = {"feature": str(feature), "importance": estimate, "ci_low": max(0.0, low) if np.isfinite(low) else low,
               "ci_high": high, "pooling": how, "n_folds": int(present.sum()),
               "rank_median": median, "rank_iqr": q3 - q1,
               "rank_min": float(feature_ranks.min()) if feature_ranks.size else math.nan,
               "rank_max": float(feature_ranks.max()) if feature_ranks.size else math.nan,
               "top_k_frequency": float(np.sum(feature_ranks <= top_k)) / len(folds)}
        row.update({f"importance_{f}": table.loc[feature, f] for f in folds})
        row.update({f"rank_{f}": ranks.loc[feature, f] for f in folds})
        rows.append(row)
    out = pd.DataFrame(rows).sort_values(["importance", "top_k_frequency"], ascending=False, kind="stable")
    out.attrs.update(top_k=top_k, level=level, folds=folds)
    return out.reset_index(drop=True)
