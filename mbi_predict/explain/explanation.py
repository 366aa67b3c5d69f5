"""The result of one SHAP explanation, and the bookkeeping every explainer shares (caps, seeded subsamples, timing).

``Explanation`` keeps participant-level values and covariates in memory only: ``to_dict`` (what may be logged or
written to summary.json) holds aggregates — mean |SHAP| per feature, base value, additivity error, cost — never rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import ConfigError

KINDS = ("tree", "linear", "permutation")


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values for ``n`` explained rows on ``p`` original covariates.

    * ``values`` (n x p) and ``base_value``: for each row, ``values.sum() + base_value`` reproduces the explained
      output (up to ``additivity_error``, the max absolute gap over rows).
    * ``output`` says which output is explained and on which scale: e.g. ``"prediction"`` (regression, outcome units),
      ``"margin (log-odds)"`` for classifiers, ``"probability"``, ``"CATE (outcome units)"``.
    * ``data``: the covariate values of the explained rows (for plots; in memory only, never written by this module).
    * ``kind``: ``tree`` (TreeSHAP), ``linear`` (exact linear SHAP) or ``permutation`` (model-agnostic, approximate).
    * ``row_index``: positions of the explained rows in the frame that was passed (they are a seeded subsample when
      there were more than ``max_rows``), so a caller can colour by arm or trial.
    """

    values: np.ndarray
    base_value: float
    feature_names: tuple[str, ...]
    data: pd.DataFrame
    kind: str
    additivity_error: float
    output: str
    seconds: float
    row_index: np.ndarray
    n_background: int
    method: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.values.shape != (len(self.row_index), len(self.feature_names)):
            raise ValueError(f"values have shape {self.values.shape}, expected "
                             f"({len(self.row_index)}, {len(self.feature_names)})")

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def importance(self) -> dict[str, float]:
        """Mean |SHAP| per feature: the average size of each covariate's contribution, in output units."""
        return dict(zip(self.feature_names, np.abs(self.values).mean(axis=0).astype(float).tolist()))

    def importance_variance(self) -> dict[str, float]:
        """Sampling variance of each mean |SHAP| over the explained rows.

        This is the bootstrap-of-rows variance in closed form (the bootstrap variance of a mean is s²(n-1)/n²; we use
        the unbiased s²/n): the within-fold uncertainty that random-effects pooling across folds needs. The
        between-fold spread (refitting the model) is what pooling estimates as tau².
        """
        a = np.abs(self.values)
        n = a.shape[0]
        var = a.var(axis=0, ddof=1) / n if n > 1 else np.full(a.shape[1], np.nan)
        return dict(zip(self.feature_names, var.astype(float).tolist()))

    def select(self, features) -> "Explanation":
        """The same explanation restricted to ``features`` (ConfigError naming any that the model does not have)."""
        features = [features] if isinstance(features, str) else list(features)
        check_features(features, self.feature_names)
        idx = [self.feature_names.index(f) for f in features]
        return Explanation(self.values[:, idx], self.base_value, tuple(features), self.data[features], self.kind,
                           self.additivity_error, self.output, self.seconds, self.row_index, self.n_background,
                           self.method, self.notes)

    def to_shap(self):
        """This explanation as a ``shap.Explanation`` (values, base_values, data, feature_names), so shap's own
        plots work on it. In memory only, like ``values`` and ``data``: a figure drawn from it is participant level.

        Example (``expl`` from ``explain_effect`` or ``explain_pipeline``)::

            import matplotlib
            matplotlib.use("Agg")
            import shap
            sv = expl.to_shap()
            shap.plots.bar(sv, show=False)
            shap.plots.beeswarm(sv, show=False)

        Categorical covariates (strings) are passed as their category codes in ``data`` (shap colours by number);
        ``display_data`` keeps the labels.
        """
        return as_shap_explanation(self)

    def to_dict(self) -> dict[str, Any]:
        """Aggregates only (safe to log): no participant-level values or covariates."""
        return {"kind": self.kind, "method": self.method, "output": self.output, "base_value": float(self.base_value),
                "additivity_error": float(self.additivity_error), "seconds": float(self.seconds),
                "n_rows": self.n_rows, "n_background": int(self.n_background),
                "importance": self.importance(), "notes": list(self.notes)}


def as_shap_explanation(explanation: Explanation):
    """``shap.Explanation`` of the package's ``Explanation`` (see ``Explanation.to_shap``)."""
    import shap

    data = explanation.data.reset_index(drop=True)
    numeric = np.column_stack([_as_number(data[c]) for c in data.columns]) if data.shape[1] else \
        np.empty((explanation.n_rows, 0))
    return shap.Explanation(values=np.asarray(explanation.values, dtype=float),
                            base_values=np.full(explanation.n_rows, float(explanation.base_value)),
                            data=numeric, display_data=data.to_numpy(dtype=object),
                            feature_names=list(explanation.feature_names))


def _as_number(series: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return series.to_numpy(dtype=float)
    codes = pd.Categorical(series.astype("string")).codes.astype(float)
    codes[codes < 0] = np.nan
    return codes


def check_features(requested, available) -> None:
    """ConfigError naming the requested features the model was not given."""
    available = [str(a) for a in available]
    unknown = [f for f in requested if f not in available]
    if unknown:
        raise ConfigError(f"feature(s) {unknown} are not in the model; it has {available}")


def subsample_rows(n: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of at most ``cap`` rows (all rows when n <= cap): caps the cost, keeps the order."""
    if cap is not None and cap < 1:
        raise ConfigError(f"row caps must be at least 1, got {cap}")
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=cap, replace=False))


def rng_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Independent generators for the explained rows and the background, plus an int seed for shap."""
    rows_seq, background_seq, shap_seq = np.random.SeedSequence(seed).spawn(3)
    return (np.random.default_rng(rows_seq), np.random.default_rng(background_seq),
            int(shap_seq.generate_state(1)[0] % (2**31 - 1)))
