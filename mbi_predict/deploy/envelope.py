"""The training envelope of a final model (where it has evidence) and the out-of-distribution flags of new rows.

Aggregates only: numeric bounds rounded outward so that no participant's exact value is stored (a model folder is
often shared more widely than the IPD it was trained on), and the categorical levels seen in the training rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: The envelope's numeric bounds are rounded outward to a step of about 1/ENVELOPE_GRID of the observed range.
ENVELOPE_GRID = 20


def envelope_from_training(X_frame: pd.DataFrame, *, grid: int = ENVELOPE_GRID) -> dict[str, Any]:
    """Numeric bounds and categorical levels seen in the training rows: where the model has evidence.

    Aggregates only (no row is kept). The numeric bounds are NOT the extreme participants' values: they are rounded
    outward (`rounded_bounds`) to a "nice" step of at least 1/``grid`` of the observed range, strictly beyond the
    observed min and max, so the model folder (often shared more widely than the IPD) stores no participant's exact
    value. Missing values are ignored: they are imputed by the model, so missingness is not by itself out of
    distribution. A numeric column never observed gets ``min = max = None``.
    """
    numeric: dict[str, dict[str, float | None]] = {}
    categorical: dict[str, list[str]] = {}
    for column in X_frame.columns:
        values = X_frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            observed = pd.to_numeric(values, errors="coerce").dropna()
            low, high = rounded_bounds(observed.to_numpy(dtype=float), grid) if len(observed) else (None, None)
            numeric[str(column)] = {"min": low, "max": high}
        else:
            categorical[str(column)] = sorted({str(v) for v in values.dropna()})
    return {"columns": [str(c) for c in X_frame.columns], "numeric": numeric, "categorical": categorical}


def rounded_bounds(values: np.ndarray, grid: int = ENVELOPE_GRID) -> tuple[float, float]:
    """(low, high) on a grid of step 1, 2 or 5 x 10^k (the smallest such step >= range / grid), strictly outside
    [min, max]: low < every value < high, so neither bound is any participant's value."""
    if grid < 1:
        raise ValueError("grid must be a positive number of steps")
    low, high = float(np.min(values)), float(np.max(values))
    span = high - low if high > low else max(abs(low), 1.0)
    target = span / grid
    exponent = math.floor(math.log10(target))
    step = next(m * 10.0 ** exponent for m in (1, 2, 5, 10) if m * 10.0 ** exponent >= target * (1 - 1e-12))
    digits = max(0, -exponent + 1)
    k_low, k_high = math.floor(low / step), math.ceil(high / step)
    while round(k_low * step, digits) >= low:
        k_low -= 1
    while round(k_high * step, digits) <= high:
        k_high += 1
    return round(k_low * step, digits), round(k_high * step, digits)


def synthetic_example(envelope: dict[str, Any], features: list[str]) -> pd.DataFrame:
    """One made-up row inside the envelope: numeric midpoints, the first level seen of each categorical."""
    row: dict[str, Any] = {}
    for column in features:
        if column in envelope["numeric"]:
            bounds = envelope["numeric"][column]
            low, high = bounds["min"], bounds["max"]
            row[column] = 0.0 if low is None else float((low + high) / 2)
        elif column in envelope["categorical"]:
            levels = envelope["categorical"][column]
            row[column] = levels[0] if levels else "unknown"
        else:
            raise ValueError(f"feature {column!r} is not in the training envelope")
    frame = pd.DataFrame([row], columns=list(features))
    for column in features:
        frame[column] = frame[column].astype(float if column in envelope["numeric"] else object)
    return frame


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def out_of_distribution(frame: pd.DataFrame, envelope: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Flag rows with a value outside the training envelope; the reasons name the column, value and range."""
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    for column, bounds in envelope["numeric"].items():
        if column not in frame.columns or bounds["min"] is None:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        outside = np.isfinite(values) & ((values < bounds["min"]) | (values > bounds["max"]))
        for i in np.flatnonzero(outside):
            reasons[i].append(f"{column} {_format_number(values[i])} outside "
                              f"{_format_number(bounds['min'])}-{_format_number(bounds['max'])} seen in training")
    for column, levels in envelope["categorical"].items():
        if column not in frame.columns:
            continue
        seen = set(levels)
        for i, value in enumerate(frame[column].tolist()):
            if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
                continue
            if str(value) not in seen:
                reasons[i].append(f"{column} {str(value)!r} unseen in training")
    flags = np.array([bool(r) for r in reasons], dtype=bool)
    return flags, ["; ".join(r) for r in reasons]
