"""tau² estimators of the random-effects model and the score equations they solve (used by `meta.pool`).

Following metafor's `rma.uni` (Viechtbauer 2005, 2010):

* REML and ML: Fisher scoring on tau² with step halving to keep tau² >= 0, started from the DerSimonian–Laird
  value. metafor stops when the change in tau² is below 1e-5; we iterate to 1e-10, so we land on the exact root of
  the score equation (metafor's answer agrees to the 4–5 decimals it prints). A maximum on the boundary gives 0.
  When Fisher scoring does not converge or leaves the domain (a non-finite step or tau²), the same score equation is
  solved by bracketing instead (`_tau2_bracketed`): upper doubled until the score is negative (it tends to
  -(k-p)/tau² < 0 as tau² grows, so a bracket always exists), every + to - sign change of the score on a grid over
  [0, upper] refined by Brent's method (Brent 1973, `scipy.optimize.brentq`), tau² = 0 a candidate when the score
  at 0 is <= 0 (a maximum on the boundary), and the candidate with the largest (restricted) log-likelihood taken,
  since that likelihood need not be unimodal. The solver used is recorded on the result (`PoolResult.tau2_solver`:
  "fisher_scoring" or "brentq_fallback") and a fallback is said in the result's `note`, so it is never silent.
* DL: the method-of-moments estimator, truncated at 0.
* PM (Paule–Mandel): the tau² at which the generalised Q equals its degrees of freedom (root found with Brent's
  method), 0 when Q(0) is already below them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from mbi_predict.errors import MBIError

_TOL = 1e-10
_MAX_ITER = 1000


def _projection(v_total: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W and P = W - W X (X'WX)^-1 X'W for weights 1/v_total."""
    W = np.diag(1.0 / v_total)
    XtW = X.T @ W
    P = W - XtW.T @ np.linalg.solve(XtW @ X, XtW)
    return W, P


def generalised_q(tau2: float, y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """Q(tau²) = y'P(tau²)y, the weighted residual sum of squares; Cochran's Q at tau² = 0."""
    _, P = _projection(v + tau2, X)
    return float(y @ P @ y)


def reml_score(tau2: float, y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """Twice the derivative of the restricted log-likelihood in tau²: y'PPy - tr(P). Zero at an interior REML fit."""
    _, P = _projection(v + tau2, X)
    Py = P @ y
    return float(Py @ Py - np.trace(P))


def ml_score(tau2: float, y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """Twice the derivative of the log-likelihood in tau²: y'PPy - tr(W). Zero at an interior ML fit."""
    W, P = _projection(v + tau2, X)
    Py = P @ y
    return float(Py @ Py - np.trace(W))


def _tau2_dl(y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    k, p = X.shape
    _, P = _projection(v, X)
    return max(0.0, (float(y @ P @ y) - (k - p)) / float(np.trace(P)))


class _FisherFailed(Exception):
    """Fisher scoring did not converge or left the domain; the message says how."""


def _tau2_fisher(y: np.ndarray, v: np.ndarray, X: np.ndarray, method: str) -> float:
    """metafor's Fisher scoring for REML/ML with step halving at the tau² >= 0 boundary; raises `_FisherFailed`."""
    tau2 = _tau2_dl(y, v, X)
    with np.errstate(all="ignore"):
        for _ in range(_MAX_ITER):
            W, P = _projection(v + tau2, X)
            Py = P @ y
            if method == "REML":
                adj = (Py @ Py - np.trace(P)) / np.trace(P @ P)
            else:
                adj = (Py @ Py - np.trace(W)) / np.sum(np.diag(W) ** 2)
            if not math.isfinite(adj):
                raise _FisherFailed(f"a non-finite Fisher scoring step at tau2 = {tau2:.6g}")
            while tau2 + adj < 0:  # ends: a finite step halves to -0.0 at worst
                adj /= 2
            tau2_new = tau2 + adj
            if not math.isfinite(tau2_new):
                raise _FisherFailed("tau2 left the domain (not finite)")
            if abs(tau2_new - tau2) < _TOL:
                tau2 = tau2_new
                break
            tau2 = tau2_new
        else:
            raise _FisherFailed(f"no convergence in {_MAX_ITER} iterations")
    score = reml_score if method == "REML" else ml_score
    if tau2 < 1e-8 and score(0.0, y, v, X) <= 0:
        tau2 = 0.0  # the maximum is on the boundary; step halving only approaches it
    return float(tau2)


def _loglik(tau2: float, y: np.ndarray, v: np.ndarray, X: np.ndarray, method: str) -> float:
    """The (restricted, for REML) log-likelihood in tau² up to a constant (Viechtbauer 2005)."""
    W, P = _projection(v + tau2, X)
    value = float(np.sum(np.log(v + tau2)) + y @ P @ y)
    if method == "REML":
        value += float(np.linalg.slogdet(X.T @ W @ X)[1])
    return -0.5 * value


def _tau2_bracketed(y: np.ndarray, v: np.ndarray, X: np.ndarray, method: str) -> float:
    """The REML/ML tau² from the score equation by Brent's method.

    upper: doubled until the score is negative there. Candidates: tau² = 0 when the score at 0 is <= 0 (a maximum
    on the boundary), and every root where the score changes sign from + to - on a grid over (0, upper] (0 and 400
    log-spaced points), each refined by `brentq`. The likelihood need not be unimodal (e.g. a boundary maximum at 0
    and a higher interior one), so the candidate with the largest (restricted) log-likelihood is returned."""
    score = reml_score if method == "REML" else ml_score

    def f(t: float) -> float:
        return score(t, y, v, X)

    upper = max(1.0, float(np.var(y)), float(np.max(v)))
    while f(upper) > 0:
        upper *= 2
        if upper > 1e15:
            raise MBIError(f"{method} estimation of tau2: the score stays positive up to tau2 = 1e15 (the effect "
                           "sizes are too dispersed to bracket the root)")
    grid = np.concatenate([[0.0], np.geomspace(upper * 1e-12, upper, 400)])
    values = np.array([f(t) for t in grid])
    candidates = [0.0] if values[0] <= 0 else []
    for lo, hi, f_lo, f_hi in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if f_lo > 0 >= f_hi:
            candidates.append(hi if f_hi == 0 else float(optimize.brentq(f, lo, hi, xtol=1e-14, rtol=1e-12,
                                                                           maxiter=500)))
    return max(candidates, key=lambda t: _loglik(t, y, v, X, method))


def _solve_q(target: float, y: np.ndarray, v: np.ndarray, X: np.ndarray) -> float:
    """The tau² >= 0 at which the generalised Q equals `target` (Q decreases in tau²); 0 if Q(0) <= target."""
    if generalised_q(0.0, y, v, X) <= target:
        return 0.0
    upper = max(1.0, 10 * float(np.var(y)) + float(np.max(v)))
    while generalised_q(upper, y, v, X) > target:
        upper *= 10
        if upper > 1e12:  # pragma: no cover - only for absurd inputs
            raise MBIError("could not bracket tau2: the effect sizes are too dispersed")
    return float(optimize.brentq(lambda t: generalised_q(t, y, v, X) - target, 0.0, upper, xtol=1e-12, rtol=1e-12))


def estimate_tau2_solver(y: np.ndarray, v: np.ndarray, X: np.ndarray, method: str) -> tuple[float, str, str]:
    """(tau², solver, note): the note says why a fallback was needed, else it is empty."""
    if method == "FE":
        return 0.0, "none", ""
    if method == "DL":
        return _tau2_dl(y, v, X), "closed_form", ""
    if method == "PM":
        k, p = X.shape
        return _solve_q(k - p, y, v, X), "brentq", ""
    try:
        return _tau2_fisher(y, v, X, method), "fisher_scoring", ""
    except _FisherFailed as exc:
        reason = str(exc)
    tau2 = _tau2_bracketed(y, v, X, method)
    return tau2, "brentq_fallback", f"{method} tau2 by Brent's method on the score equation (Fisher scoring: {reason})"


def estimate_tau2(y: np.ndarray, v: np.ndarray, X: np.ndarray, method: str) -> float:
    return estimate_tau2_solver(y, v, X, method)[0]
