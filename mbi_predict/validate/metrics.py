"""Per-trial performance metrics of a prognostic model, with the sampling variances that pooling needs.

Small pure functions: arrays in, numbers out. Definitions (so numbers can be checked by hand):

Continuous outcome y, prediction p (n held-out participants with an observed outcome):
* ``r2``   1 - sum (y - p)^2 / sum (y - mean y)^2, against the held-out trial's own mean (so a shift in level
           between trials is penalised, as it should be for a model meant to transport to a new trial).
* ``rmse`` sqrt(mean (y - p)^2);  ``mae`` mean |y - p|.
* ``calibration_slope``      b in the OLS fit y = a + b p; 1 is ideal, < 1 means predictions too extreme.
                             Variance: the OLS SE^2 of b.
* ``calibration_intercept``  calibration-in-the-large, mean(y - p); 0 is ideal. Variance: var(y - p) / n.

Binary outcome y in {0, 1}, predicted probability p:
* ``c_statistic``  the area under the ROC curve. Variance: Hanley & McNeil (1982).
* ``brier``        mean (y - p)^2.
* ``oe_ratio``     observed / expected events, sum y / sum p; 1 is ideal. Its variance is given for log(O/E):
                   1/O (Debray et al. 2017, BMJ 356:i6460, the Poisson approximation).
* ``calibration_slope``      b in logit P(y=1) = a + b logit(p) (logistic recalibration, Van Calster et al. 2016/2019);
                             variance = the GLM's SE^2 of b.
* ``calibration_intercept``  a in logit P(y=1) = a + offset(logit p): calibration-in-the-large on the logit
                             scale, with the slope fixed at 1; variance = the GLM's SE^2.
* ``ici``, ``e50``, ``e90``  mean, median and 90th percentile of |p - s(p)|, where s is a flexible calibration curve:
                             a lowess smooth of y on p (Austin & Steyerberg 2019, Stat Med 38:4051; they use loess,
                             statsmodels' lowess is its locally linear cousin). No formula for their variance.
Metrics without a variance formula (r2, rmse, mae, brier, ici, e50, e90) get a bootstrap variance: B resamples of
the held-out trial's participants, seeded.

``variance`` is always on the scale the metric is pooled on (``POOLING_SCALE``): logit for the c-statistic (delta
method), log for O/E, the natural scale otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CONTINUOUS_METRICS = ("r2", "rmse", "mae", "calibration_slope", "calibration_intercept")
BINARY_METRICS = ("c_statistic", "brier", "oe_ratio", "calibration_slope", "calibration_intercept",
                  "ici", "e50", "e90")
POOLING_SCALE = {"c_statistic": "logit", "oe_ratio": "log"}
#: the metric a model is ranked and compared to the reference by (lower is better for both)
PRIMARY_METRIC = {"continuous": "rmse", "binary": "brier"}
LOWER_IS_BETTER = {"rmse": True, "mae": True, "brier": True, "ici": True, "e50": True, "e90": True,
                   "r2": False, "c_statistic": False}
_EPS = 1e-8


@dataclass(frozen=True)
class MetricValue:
    value: float
    variance: float  # on the pooling scale; NaN when not estimable
    method: str      # how the variance was obtained


# ------------------------------------------------------------------------------------------------ continuous

def r2(y, p) -> float:
    y, p = _arrays(y, p)
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - p) ** 2)) / total if total > 0 else math.nan


def rmse(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.mean(np.abs(y - p)))


def linear_calibration_slope(y, p) -> tuple[float, float]:
    """(slope, SE^2) of the OLS regression of observed on predicted."""
    y, p = _arrays(y, p)
    n = y.size
    sxx = float(np.sum((p - p.mean()) ** 2))
    if n < 3 or sxx <= 0:
        return math.nan, math.nan
    slope = float(np.sum((p - p.mean()) * (y - y.mean()))) / sxx
    residual = y - (y.mean() + slope * (p - p.mean()))
    return slope, float(np.sum(residual ** 2) / (n - 2) / sxx)


def calibration_in_the_large(y, p) -> tuple[float, float]:
    """(mean(y - p), its variance var(y - p)/n)."""
    y, p = _arrays(y, p)
    d = y - p
    if d.size < 2:
        return math.nan, math.nan
    return float(d.mean()), float(d.var(ddof=1) / d.size)


# ---------------------------------------------------------------------------------------------------- binary

def c_statistic(y, p) -> float:
    """Area under the ROC curve (ties count one half), by the Mann-Whitney rank formula."""
    from scipy.stats import rankdata

    y, p = _arrays(y, p)
    n1 = int(np.sum(y == 1))
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def c_statistic_variance(c: float, n_events: int, n_non_events: int) -> float:
    """Hanley & McNeil (1982) variance of the c-statistic (natural scale)."""
    if not math.isfinite(c) or n_events == 0 or n_non_events == 0:
        return math.nan
    q1, q2 = c / (2 - c), 2 * c * c / (1 + c)
    return (c * (1 - c) + (n_events - 1) * (q1 - c * c) + (n_non_events - 1) * (q2 - c * c)) / (n_events *
                                                                                                 n_non_events)


def logit_c_variance(c: float, variance: float) -> float:
    """Delta method: var(logit c) = var(c) / (c (1 - c))^2 (Debray et al. 2017)."""
    if not (math.isfinite(c) and 0 < c < 1):
        return math.nan
    return variance / (c * (1 - c)) ** 2


def brier(y, p) -> float:
    y, p = _arrays(y, p)
    return float(np.mean((y - p) ** 2))


def oe_ratio(y, p) -> float:
    y, p = _arrays(y, p)
    expected = float(np.sum(p))
    return float(np.sum(y)) / expected if expected > 0 else math.nan


def log_oe_variance(y) -> float:
    """var(log O/E) ~ 1/O (Debray et al. 2017); undefined without events."""
    observed = float(np.sum(np.asarray(y, dtype=float)))
    return 1.0 / observed if observed > 0 else math.nan


def logistic_calibration(y, p) -> dict[str, tuple[float, float]]:
    """Logistic recalibration: {'slope': (b, SE^2), 'intercept': (a with offset, SE^2)}."""
    import statsmodels.api as sm

    y, p = _arrays(y, p)
    nan = (math.nan, math.nan)
    if y.size < 3 or np.all(y == y[0]):
        return {"slope": nan, "intercept": nan}
    lp = _logit(p)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = sm.GLM(y, sm.add_constant(lp, has_constant="add"), family=sm.families.Binomial()).fit()
            out["slope"] = (float(fit.params[1]), float(fit.bse[1]) ** 2)
        except Exception:  # perfect separation or a singular design: not estimable in this trial
            out["slope"] = nan
        try:
            fit = sm.GLM(y, np.ones((y.size, 1)), family=sm.families.Binomial(), offset=lp).fit()
            out["intercept"] = (float(fit.params[0]), float(fit.bse[0]) ** 2)
        except Exception:
            out["intercept"] = nan
    return out


def flexible_calibration(y, p, *, frac: float = 0.75) -> np.ndarray:
    """s(p): the lowess smooth of the observed outcome on the prediction, evaluated at each p.

    ``it=0``: no robustness iterations, which would down-weight exactly the 0/1 observations that carry the
    information about calibration.
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    y, p = _arrays(y, p)
    if y.size < 5 or np.ptp(p) <= 0:
        return np.full(y.size, np.mean(y) if y.size else math.nan)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # lowess divides by local weight sums that vanish where predictions are very sparse; those points are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        smooth = lowess(y, p, frac=frac, it=0, return_sorted=False)
    return np.asarray(smooth, dtype=float)


def calibration_errors(y, p, *, frac: float = 0.75) -> dict[str, float]:
    """ICI, E50 and E90 (Austin & Steyerberg 2019) from the lowess calibration curve."""
    y, p = _arrays(y, p)
    if y.size < 5:
        return {"ici": math.nan, "e50": math.nan, "e90": math.nan}
    gap = np.abs(p - np.clip(flexible_calibration(y, p, frac=frac), 0.0, 1.0))
    return {"ici": float(np.mean(gap)), "e50": float(np.median(gap)), "e90": float(np.quantile(gap, 0.9))}


def calibration_curve(y, p, grid, *, task: str, frac: float = 0.75) -> np.ndarray:
    """The smoothed observed outcome at the grid points (for plots: a curve, no participant-level points)."""
    y, p = _arrays(y, p)
    grid = np.asarray(grid, dtype=float)
    if y.size < 5 or np.ptp(p) <= 0:
        return np.full(grid.size, math.nan)
    smooth = flexible_calibration(y, p, frac=frac)
    order = np.argsort(p)
    curve = np.interp(grid, p[order], smooth[order], left=math.nan, right=math.nan)
    return np.clip(curve, 0.0, 1.0) if task == "binary" else curve


# ------------------------------------------------------------------------------------------------ per trial

def _bootstrap_indices(n: int, B: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(B, n))


def bootstrap_variance(statistic: Callable[[np.ndarray, np.ndarray], dict[str, float]], y, p, *, B: int,
                       seed: int) -> dict[str, float]:
    """Variance over B within-trial resamples of each statistic returned by ``statistic(y, p)``."""
    y, p = _arrays(y, p)
    if B < 2 or y.size < 2:
        return {}
    draws: dict[str, list[float]] = {}
    for index in _bootstrap_indices(y.size, B, seed):
        for name, value in statistic(y[index], p[index]).items():
            draws.setdefault(name, []).append(value)
    out = {}
    for name, values in draws.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        out[name] = float(arr.var(ddof=1)) if arr.size >= 2 else math.nan
    return out


def _continuous_bootstrap(y: np.ndarray, p: np.ndarray, B: int, seed: int) -> dict[str, float]:
    """Vectorised bootstrap of r2, rmse and mae (they are cheap; B x n matrices)."""
    if B < 2 or y.size < 2:
        return {}
    index = _bootstrap_indices(y.size, B, seed)
    yb, pb = y[index], p[index]
    sse = np.sum((yb - pb) ** 2, axis=1)
    sst = np.sum((yb - yb.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2b = np.where(sst > 0, 1 - sse / sst, np.nan)
    draws = {"r2": r2b, "rmse": np.sqrt(sse / y.size), "mae": np.mean(np.abs(yb - pb), axis=1)}
    return {k: float(np.nanvar(v, ddof=1)) if np.isfinite(v).sum() >= 2 else math.nan for k, v in draws.items()}


def trial_metrics(y, p, task: str, *, bootstrap: int, seed: int) -> dict[str, MetricValue]:
    """Every metric of the task for one held-out trial, each with its variance on the pooling scale."""
    y, p = _arrays(y, p)
    if task == "continuous":
        boot = _continuous_bootstrap(y, p, bootstrap, seed)
        slope, slope_var = linear_calibration_slope(y, p)
        citl, citl_var = calibration_in_the_large(y, p)
        return {
            "r2": MetricValue(r2(y, p), boot.get("r2", math.nan), "bootstrap"),
            "rmse": MetricValue(rmse(y, p), boot.get("rmse", math.nan), "bootstrap"),
            "mae": MetricValue(mae(y, p), boot.get("mae", math.nan), "bootstrap"),
            "calibration_slope": MetricValue(slope, slope_var, "ols_se"),
            "calibration_intercept": MetricValue(citl, citl_var, "var(y-p)/n"),
        }
    if task != "binary":
        raise ValueError(f"unknown task {task!r}")
    p = np.clip(p, 0.0, 1.0)

    def boot_statistics(yb: np.ndarray, pb: np.ndarray) -> dict[str, float]:
        return {"brier": brier(yb, pb), **calibration_errors(yb, pb)}

    boot = bootstrap_variance(boot_statistics, y, p, B=bootstrap, seed=seed)
    c = c_statistic(y, p)
    n_events = int(np.sum(y == 1))
    c_var = logit_c_variance(c, c_statistic_variance(c, n_events, y.size - n_events))
    recal = logistic_calibration(y, p)
    errors = calibration_errors(y, p)
    return {
        "c_statistic": MetricValue(c, c_var, "hanley_mcneil_logit"),
        "brier": MetricValue(brier(y, p), boot.get("brier", math.nan), "bootstrap"),
        "oe_ratio": MetricValue(oe_ratio(y, p), log_oe_variance(y), "1/O_log"),
        "calibration_slope": MetricValue(*recal["slope"], "glm_se"),
        "calibration_intercept": MetricValue(*recal["intercept"], "glm_offset_se"),
        **{name: MetricValue(errors[name], boot.get(name, math.nan), "bootstrap") for name in ("ici", "e50", "e90")},
    }


def paired_difference(y, p_model, p_reference, metric: str, *, B: int, seed: int) -> tuple[float, float]:
    """metric(model) - metric(reference) on the same held-out participants, with a paired bootstrap variance.

    Paired resampling keeps the strong positive correlation between the two models' errors, which a difference of
    two independent variances would ignore (and so would call real improvements noise).
    """
    functions = {"rmse": rmse, "mae": mae, "brier": brier, "r2": r2, "c_statistic": c_statistic}
    fn = functions[metric]
    y, p_model = _arrays(y, p_model)
    p_reference = np.asarray(p_reference, dtype=float)
    difference = fn(y, p_model) - fn(y, p_reference)
    if B < 2 or y.size < 2:
        return difference, math.nan
    draws = np.array([fn(y[i], p_model[i]) - fn(y[i], p_reference[i])
                      for i in _bootstrap_indices(y.size, B, seed)])
    draws = draws[np.isfinite(draws)]
    return difference, float(draws.var(ddof=1)) if draws.size >= 2 else math.nan


# ------------------------------------------------------------------------------------------------- helpers

def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).reshape(-1)
    p = np.asarray(p, dtype=float).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} outcomes but {p.size} predictions")
    return y, p
