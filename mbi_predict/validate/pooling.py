"""Pool per-trial performance metrics across held-out trials with the package's random-effects code.

Why transforms: the c-statistic is bounded by 0 and 1 and its sampling distribution is skewed near the bounds, so it
is pooled on the logit scale; O:E is a ratio, pooled on the log scale (Debray et al. 2017; Snell et al. 2018). The
estimate, CI and prediction interval are back-transformed for reporting; tau² stays on the pooling scale (say so
wherever it is shown). Other metrics are pooled as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mbi_predict.errors import MBIError
from mbi_predict.validate.metrics import POOLING_SCALE

_FORWARD = {"identity": lambda x: x, "logit": lambda x: np.log(x / (1 - x)), "log": np.log}
_BACKWARD = {"identity": lambda x: x, "logit": lambda x: 1 / (1 + np.exp(-x)), "log": np.exp}
POOLED_KEYS = ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2")


def to_pooling_scale(metric: str, values: Any) -> np.ndarray:
    return _FORWARD[POOLING_SCALE.get(metric, "identity")](np.asarray(values, dtype=float))


def from_pooling_scale(metric: str, values: Any) -> np.ndarray:
    return _BACKWARD[POOLING_SCALE.get(metric, "identity")](np.asarray(values, dtype=float))


def _pool_function():
    # imported lazily so that validate does not pull meta's plotting and reporting modules in at import time
    from mbi_predict.meta.pool import pool

    return pool


def pool_metric(metric: str, values: Sequence[float], variances: Sequence[float], labels: Sequence[str], *,
                method: str = "REML", hksj: bool = False, level: float = 0.95,
                model: str | None = None) -> tuple[dict[str, Any], Any]:
    """Pool one metric over trials; returns (the reporting dict, the PoolResult on the pooling scale or None).

    Trials whose value or variance is not finite (e.g. a c-statistic in a trial without events, a bootstrap
    variance of 0) are left out of the pooling and listed under ``excluded`` so the k in the report is honest.
    Any failure of the pooling itself is raised as a one-line `MBIError` naming the metric, the `model` (when
    given) and the trials pooled, e.g. "pooling rate_autoc of model x_learner over trials T01, T02: <reason>",
    so that a failed run says where it failed. A tau² found by the Brent fallback (`PoolResult.tau2_solver`) is
    said in the dict's ``note``.
    """
    try:
        return _pool_metric(metric, values, variances, labels, method=method, hksj=hksj, level=level)
    except Exception as exc:  # noqa: BLE001 - re-raised with its context, never swallowed
        where = f"pooling {metric}" + (f" of model {model}" if model is not None else "")
        names = [str(x) for x in labels] if labels is not None else []
        trials = ", ".join(names) if names else "(no labels)"
        reason = str(exc) or type(exc).__name__
        raise MBIError(f"{where} over trials {trials}: {reason}") from exc


def _pool_metric(metric: str, values: Sequence[float], variances: Sequence[float], labels: Sequence[str], *,
                 method: str, hksj: bool, level: float) -> tuple[dict[str, Any], Any]:
    values = np.asarray(values, dtype=float)
    variances = np.asarray(variances, dtype=float)
    labels = [str(x) for x in labels]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = to_pooling_scale(metric, values)
    usable = np.isfinite(y) & np.isfinite(variances) & (variances > 0)
    excluded = [label for label, ok in zip(labels, usable) if not ok]
    scale = POOLING_SCALE.get(metric, "identity")
    empty = {key: None for key in POOLED_KEYS} | {"k": int(usable.sum()), "scale": scale, "excluded": excluded}
    if not usable.any():
        empty["note"] = "no trial with a finite value and variance"
        return empty, None
    result = _pool_function()(y[usable], variances[usable], method=method, test="knha" if hksj else "z",
                              level=level, labels=[label for label, ok in zip(labels, usable) if ok])
    back = {key: float(from_pooling_scale(metric, getattr(result, key)))
            for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high")}
    out = {**back, "tau2": float(result.tau2), "k": int(result.k), "scale": scale, "excluded": excluded}
    notes = [n for n in (result.note, result.pi_note) if n]
    if notes:
        out["note"] = "; ".join(notes)
    out = {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
           for key, value in out.items()}
    return out, result
