"""Performance in subgroups (TRIPOD+AI items 14 and 23a: fairness), as aggregates only.

`subgroup_metrics` is a pure function the folds stage (``pipeline.folds``) calls on the POOLED held-out predictions
(every participant predicted by the model fitted without their trial) and stores in ``summary.json`` under
``models[name].subgroups``; the model card only displays what the run stored. It is a validation metric, so it lives
in the validate layer, beside the metrics it computes (``report.card_subgroups`` and ``report.card`` re-export it).

Subgroups: each gender and education level (missing as its own group: who is unrecorded matters too), fixed age
bands (fixed, not data-driven, so cards of different runs can be compared), and baseline-distress tertiles (cut
at the tertiles of the evaluated participants; the cut points are not reported because a quantile of a small
group can be one person's value). Metrics are those of ``validate.metrics``, computed by the same functions.
Groups smaller than ``min_n`` are listed with their n but no metrics: such estimates are noise and a disclosure
risk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from mbi_predict.validate import metrics as m

AGE_BANDS = ((None, 18.0, "<18"), (18.0, 30.0, "18-29"), (30.0, 45.0, "30-44"), (45.0, 60.0, "45-59"),
             (60.0, None, "60+"))
CATEGORICAL_SUBGROUPS = ("gender", "education")
TERTILE_SUBGROUPS = ("baseline_distress",)
MIN_SUBGROUP_N = 10


def _groups(frame: pd.DataFrame) -> Iterator[tuple[str, str, np.ndarray]]:
    """(variable, label, boolean mask) for every subgroup the frame's columns allow."""
    for column in CATEGORICAL_SUBGROUPS:
        if column not in frame.columns:
            continue
        values = frame[column].astype(object)
        missing = values.isna().to_numpy()
        for level in sorted({str(v) for v in values[~missing]}):
            yield column, f"{column}={level}", (values.astype(str).to_numpy() == level) & ~missing
        if missing.any():
            yield column, f"{column}=missing", missing
    if "age" in frame.columns:
        age = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=float)
        for low, high, label in AGE_BANDS:
            mask = np.isfinite(age)
            mask &= (age >= low) if low is not None else True
            mask &= (age < high) if high is not None else True
            yield "age", f"age {label}", mask
    for column in TERTILE_SUBGROUPS:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        finite = np.isfinite(values)
        if finite.sum() < 3:
            continue
        cuts = np.quantile(values[finite], [1 / 3, 2 / 3])
        bins = np.digitize(values, cuts, right=True)  # 0, 1, 2 for the lowest .. highest third
        for tertile, name in enumerate(("lowest", "middle", "highest")):
            yield column, f"{column} tertile {tertile + 1} ({name})", finite & (bins == tertile)


def _metrics(y: np.ndarray, p: np.ndarray, task: str) -> dict[str, float]:
    if task == "continuous":
        return {"rmse": m.rmse(y, p), "mae": m.mae(y, p),
                "calibration_intercept": m.calibration_in_the_large(y, p)[0],
                "calibration_slope": m.linear_calibration_slope(y, p)[0]}
    if task == "binary":
        return {"n_events": int(np.sum(y == 1)), "c_statistic": m.c_statistic(y, p), "brier": m.brier(y, p),
                "oe_ratio": m.oe_ratio(y, p)}
    raise ValueError(f"unknown task {task!r}; use continuous or binary")


def subgroup_metrics(y, pred, frame: pd.DataFrame, task: str, *, min_n: int = MIN_SUBGROUP_N) -> list[dict]:
    """Per-subgroup performance of pooled held-out predictions: ``[{"subgroup", "variable", "n", <metrics>}]``.

    ``y`` (NaN where the outcome is missing: those rows are not evaluated), ``pred`` and ``frame`` (baseline
    covariates) are aligned row by row. Groups with fewer than ``min_n`` evaluated participants carry
    ``"suppressed": true`` and no metrics. Non-finite metric values become None (JSON has no NaN).
    """
    y = np.asarray(y, dtype=float).reshape(-1)
    pred = np.asarray(pred, dtype=float).reshape(-1)
    if not (len(y) == len(pred) == len(frame)):
        raise ValueError(f"y ({len(y)}), pred ({len(pred)}) and frame ({len(frame)}) must have the same rows")
    frame = frame.reset_index(drop=True)
    evaluated = np.isfinite(y) & np.isfinite(pred)
    rows = []
    for variable, label, mask in _groups(frame):
        chosen = mask & evaluated
        n = int(chosen.sum())
        if n == 0:
            continue
        entry: dict = {"subgroup": label, "variable": variable, "n": n}
        if n < min_n:
            entry["suppressed"] = True
        else:
            for name, value in _metrics(y[chosen], pred[chosen], task).items():
                entry[name] = value if isinstance(value, int) or math.isfinite(value) else None
        rows.append(entry)
    return rows
