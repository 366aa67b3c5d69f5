"""Random-effects pooling of effect sizes (and the meta-regression engine it shares with `interactions`).

The estimators follow metafor's `rma.uni` (Viechtbauer 2010) so our numbers can be checked against it:

* REML and ML (Fisher scoring, with a Brent fallback), DL and PM: see `mbi_predict.meta.tau2`, where the estimators
  and their score equations live; the solver used is recorded on the result (`PoolResult.tau2_solver`).
* FE: tau² fixed at 0 (inverse-variance fixed effect).

Tests: `z` (normal) or `knha` (Hartung–Knapp–Sidik–Jonkman, exactly as metafor's `test="knha"`: the variance of the
estimate is multiplied by the weighted residual variance y'Py/(k-p), *not* truncated at 1, and a t distribution with
k-p degrees of freedom is used for the CI and p-value).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from mbi_predict.errors import MBIError
from mbi_predict.meta.tau2 import (_projection, _solve_q, estimate_tau2, estimate_tau2_solver,  # noqa: F401
                                   generalised_q, ml_score, reml_score)

METHODS = ("REML", "ML", "DL", "PM", "FE")
TESTS = ("z", "knha")


@dataclass(frozen=True)
class PoolResult:
    """A pooled estimate with its heterogeneity statistics; plain floats so it can be logged and compared."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    pvalue: float
    tau2: float
    tau: float
    i2: float
    h2: float
    q: float
    q_df: int
    q_pvalue: float
    pi_low: float
    pi_high: float
    k: int
    method: str
    test: str
    level: float
    weights: tuple[float, ...]
    tau2_ci_low: float = math.nan
    tau2_ci_high: float = math.nan
    statistic: float = math.nan
    df: float = math.inf
    note: str = ""
    pi_note: str = ""
    labels: tuple[str, ...] = field(default_factory=tuple)
    #: how tau² was found: "fisher_scoring", "brentq_fallback" (Fisher scoring failed; root bracketed), "brentq"
    #: (PM), "closed_form" (DL), "none" (FE, k = 1, or no residual degree of freedom)
    tau2_solver: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: NaN/inf become None, tuples become lists."""
        from mbi_predict.io import json_safe

        out = asdict(self)
        out["weights"] = list(self.weights)
        out["labels"] = list(self.labels)
        return json_safe(out)

    def summary(self) -> str:
        pct = round(100 * self.level)
        test = "z" if self.test == "z" else f"Hartung-Knapp (t, df={self.df:g})"
        lines = [f"{'Fixed-effect' if self.method == 'FE' else 'Random-effects'} meta-analysis "
                 f"(k = {self.k}, tau2 estimator {self.method}, test {test})"]
        if self.note:
            lines.append(f"Note: {self.note}")
        lines.append(f"Estimate {self.estimate:.4f} (SE {self.se:.4f}), {pct}% CI {self.ci_low:.4f} to "
                     f"{self.ci_high:.4f}, p = {_fmt_p(self.pvalue)}")
        if self.k > 1:
            lines.append(f"tau2 = {self.tau2:.4f} (tau = {self.tau:.4f}"
                         + (f"; {pct}% CI {self.tau2_ci_low:.4f} to {self.tau2_ci_high:.4f} by Q-profile)"
                            if math.isfinite(self.tau2_ci_low) else ")")
                         + f", I2 = {self.i2:.2f}%, H2 = {self.h2:.2f}")
            lines.append(f"Q({self.q_df}) = {self.q:.4f}, p = {_fmt_p(self.q_pvalue)}")
        if math.isfinite(self.pi_low):
            lines.append(f"{pct}% prediction interval {self.pi_low:.4f} to {self.pi_high:.4f} "
                         f"(Higgins et al. 2009, t with k-2 = {self.k - 2} df)")
        else:
            lines.append(f"Prediction interval not given: {self.pi_note}")
        return "\n".join(lines)


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "NA"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


# ----------------------------------------------------------------------------------------------------------- checks

def check_inputs(yi: Any, vi: Any, *, method: str = "REML", test: str = "z",
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Turn the inputs into float arrays or raise an `MBIError` that says what is wrong with them."""
    if method not in METHODS:
        raise MBIError(f"unknown pooling method {method!r}; use one of {', '.join(METHODS)}")
    if test not in TESTS:
        raise MBIError(f"unknown test {test!r}; use 'z' or 'knha'")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise MBIError(f"level must be a number strictly between 0 and 1, got {level!r}")
    try:
        y = np.asarray(yi, dtype=float).ravel()
        v = np.asarray(vi, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise MBIError(f"effect sizes and variances must be numbers ({exc})") from None
    if y.size < 1:
        raise MBIError("nothing to pool: no effect sizes given (k = 0)")
    if y.size != v.size:
        raise MBIError(f"{y.size} effect sizes but {v.size} variances")
    if not np.all(np.isfinite(y)):
        raise MBIError(f"effect sizes must be finite; positions {np.flatnonzero(~np.isfinite(y)).tolist()} are not")
    if not np.all(np.isfinite(v)):
        raise MBIError(f"variances must be finite; positions {np.flatnonzero(~np.isfinite(v)).tolist()} are not")
    if np.any(v <= 0):
        raise MBIError(f"sampling variances must be > 0; positions {np.flatnonzero(v <= 0).tolist()} are not")
    return y, v


# ------------------------------------------------------------------------------------------------ the rma engine

@dataclass(frozen=True)
class RmaFit:
    """The raw output of one weighted fit: coefficients, their covariance, tau² and what the tests need."""

    beta: np.ndarray
    vcov: np.ndarray
    tau2: float
    df: float  # inf for the z test
    crit: float
    weights: np.ndarray  # 1/(v + tau2)
    qe: float
    solver: str = "none"
    solver_note: str = ""


def fit_rma(y: np.ndarray, v: np.ndarray, X: np.ndarray, *, method: str, test: str, level: float) -> RmaFit:
    """Fit y = X beta + u + e with u ~ N(0, tau²), e ~ N(0, v); shared by `pool` and meta-regression."""
    k, p = X.shape
    if k <= p and method != "FE":
        tau2, solver, solver_note = 0.0, "none", ""
    else:
        tau2, solver, solver_note = estimate_tau2_solver(y, v, X, method)
    w = 1.0 / (v + tau2)
    XtW = X.T * w
    vcov = np.linalg.inv(XtW @ X)
    beta = vcov @ (XtW @ y)
    if test == "knha" and k > p:
        resid = y - X @ beta
        s2w = float(np.sum(w * resid ** 2)) / (k - p)  # not truncated at 1 (metafor's default knha)
        vcov = vcov * s2w
        df = float(k - p)
        crit = float(stats.t.ppf(0.5 + level / 2, df))
    else:
        df = math.inf
        crit = float(stats.norm.ppf(0.5 + level / 2))
    qe = generalised_q(0.0, y, v, X)
    return RmaFit(beta=beta, vcov=vcov, tau2=float(tau2), df=df, crit=crit, weights=w, qe=qe, solver=solver,
                  solver_note=solver_note)


def _pvalue(stat: float, df: float) -> float:
    return float(2 * (stats.norm.sf(abs(stat)) if math.isinf(df) else stats.t.sf(abs(stat), df)))


def tau2_q_profile(y: np.ndarray, v: np.ndarray, X: np.ndarray, level: float) -> tuple[float, float]:
    """Q-profile confidence interval for tau² (Viechtbauer 2007), as metafor's `confint` gives it."""
    k, p = X.shape
    if k - p < 1:
        return math.nan, math.nan
    alpha = 1 - level
    lower = _solve_q(float(stats.chi2.ppf(1 - alpha / 2, k - p)), y, v, X)
    upper = _solve_q(float(stats.chi2.ppf(alpha / 2, k - p)), y, v, X)
    return lower, upper


# --------------------------------------------------------------------------------------------------------- pool

def pool(yi: Any, vi: Any, *, method: str = "REML", test: str = "z", level: float = 0.95,
         labels: Any = None) -> PoolResult:
    """Pool effect sizes `yi` with sampling variances `vi` in a random-effects (or fixed-effect) model.

    Why these choices:
    * REML is the default because it is less biased for tau² than DL and ML (Langan et al. 2019).
    * I² and H² are metafor's: for a random-effects model I² = 100 tau²/(tau² + s²) and H² = (tau² + s²)/s² with the
      "typical" sampling variance s² = (k-1) Σw / ((Σw)² - Σw²), w = 1/v, so they agree with the tau² estimator used;
      for FE they come from Q: I² = max(0, 100 (Q - df)/Q), H² = Q/df. Q is always Cochran's (fixed-effect weights).
    * The prediction interval follows Higgins, Thompson & Spiegelhalter (2009): estimate ± t_{k-2} sqrt(tau² + se²).
      metafor's `predict` uses the normal quantile by default instead (and the knha t with k-1 df under knha); we use
      t with k-2 df, which accounts for tau² being estimated. It needs k >= 3; below that it is NaN and `pi_note`
      says why. The se in it is the one of the chosen test (Hartung–Knapp's under `knha`).
    * k == 1: nothing to pool; the single estimate is returned with its own CI, tau² = 0 and a `note` saying so.
    """
    y, v = check_inputs(yi, vi, method=method, test=test, level=level)
    k = y.size
    label_tuple = tuple(str(x) for x in labels) if labels is not None else tuple()
    if label_tuple and len(label_tuple) != k:
        raise MBIError(f"{len(label_tuple)} labels for {k} effect sizes")
    if k == 1:
        crit = float(stats.norm.ppf(0.5 + level / 2))
        se = math.sqrt(v[0])
        return PoolResult(
            estimate=float(y[0]), se=se, ci_low=float(y[0] - crit * se), ci_high=float(y[0] + crit * se),
            pvalue=_pvalue(y[0] / se, math.inf), tau2=0.0, tau=0.0, i2=math.nan, h2=math.nan, q=0.0, q_df=0,
            q_pvalue=math.nan, pi_low=math.nan, pi_high=math.nan, k=1, method=method, test="z", level=level,
            weights=(100.0,), statistic=float(y[0] / se), df=math.inf,
            note="only one trial: pooling was not done; the single trial's estimate and normal CI are reported",
            pi_note="a prediction interval needs at least 3 trials (t with k-2 df)", labels=label_tuple)
    X = np.ones((k, 1))
    fit = fit_rma(y, v, X, method=method, test=test, level=level)
    estimate = float(fit.beta[0])
    se = math.sqrt(float(fit.vcov[0, 0]))
    w_fe = 1.0 / v
    # one trial: the typical within-trial variance s2, I2 and H2 are undefined (NaN), not a warning
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = (k - 1) * w_fe.sum() / (w_fe.sum() ** 2 - np.sum(w_fe ** 2))
        if method == "FE":
            i2 = max(0.0, 100 * (fit.qe - (k - 1)) / fit.qe) if fit.qe > 0 else 0.0
            h2 = fit.qe / (k - 1) if k > 1 else math.nan
        else:
            i2 = 100 * fit.tau2 / (fit.tau2 + s2) if k > 1 else math.nan
            h2 = (fit.tau2 + s2) / s2 if k > 1 else math.nan
    tau2_ci = tau2_q_profile(y, v, X, level) if method != "FE" else (math.nan, math.nan)
    if k >= 3:
        t_pi = float(stats.t.ppf(0.5 + level / 2, k - 2))
        half = t_pi * math.sqrt(fit.tau2 + se ** 2)
        pi_low, pi_high, pi_note = estimate - half, estimate + half, ""
    else:
        pi_low = pi_high = math.nan
        pi_note = f"a prediction interval needs at least 3 trials (t with k-2 df); k = {k}"
    stat = estimate / se
    return PoolResult(
        estimate=estimate, se=se, ci_low=estimate - fit.crit * se, ci_high=estimate + fit.crit * se,
        pvalue=_pvalue(stat, fit.df), tau2=fit.tau2, tau=math.sqrt(fit.tau2), i2=float(i2), h2=float(h2),
        q=fit.qe, q_df=k - 1, q_pvalue=float(stats.chi2.sf(fit.qe, k - 1)), pi_low=pi_low, pi_high=pi_high, k=k,
        method=method, test=test, level=level, weights=tuple(float(x) for x in 100 * fit.weights / fit.weights.sum()),
        tau2_ci_low=tau2_ci[0], tau2_ci_high=tau2_ci[1], statistic=stat, df=fit.df, pi_note=pi_note,
        labels=label_tuple, note=fit.solver_note, tau2_solver=fit.solver)


# ---------------------------------------------------------------------------------------------- meta-regression

@dataclass(frozen=True)
class MetaRegressionResult:
    """Slope of effect sizes on one trial-level covariate (mixed-effects meta-regression)."""

    intercept: float
    slope: float
    slope_se: float
    slope_ci_low: float
    slope_ci_high: float
    slope_pvalue: float
    tau2: float
    k: int
    method: str
    test: str


def meta_regression(yi: Any, vi: Any, moderator: Any, *, method: str = "REML", test: str = "z",
                    level: float = 0.95) -> MetaRegressionResult:
    """Mixed-effects meta-regression yi = b0 + b1 * moderator (metafor `rma(yi, vi, mods = ~ moderator)`).

    Needs k >= 3 (two coefficients plus a residual degree of freedom for tau²) and a moderator that varies.
    """
    y, v = check_inputs(yi, vi, method=method, test=test, level=level)
    x = np.asarray(moderator, dtype=float).ravel()
    if x.size != y.size or not np.all(np.isfinite(x)):
        raise MBIError("the moderator must be finite and have one value per effect size")
    if y.size < 3:
        raise MBIError(f"meta-regression needs at least 3 trials, got {y.size}")
    if np.ptp(x) == 0:
        raise MBIError("meta-regression needs a moderator that varies across trials")
    X = np.column_stack([np.ones_like(x), x])
    fit = fit_rma(y, v, X, method=method, test=test, level=level)
    se = math.sqrt(float(fit.vcov[1, 1]))
    slope = float(fit.beta[1])
    return MetaRegressionResult(
        intercept=float(fit.beta[0]), slope=slope, slope_se=se, slope_ci_low=slope - fit.crit * se,
        slope_ci_high=slope + fit.crit * se, slope_pvalue=_pvalue(slope / se, fit.df), tau2=fit.tau2,
        k=int(y.size), method=method, test=test)
