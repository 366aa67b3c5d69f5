"""Small-study effects (Egger's test) and leave-one-out sensitivity.

Egger's regression test (Egger et al., BMJ 1997): regress the standard normal deviate yi/sei on the precision 1/sei by
ordinary least squares; an intercept away from 0 signals funnel-plot asymmetry. It has little power with few trials
and the Cochrane Handbook (10.4.3.1) advises against it below 10, so with k < 10 it is not done and the result says
why. (metafor's `regtest` default is a different, weighted random-effects variant; this is the classical test.)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from mbi_predict.errors import MBIError
from mbi_predict.meta.pool import check_inputs, pool

EGGER_MIN_K = 10


@dataclass(frozen=True)
class EggerResult:
    done: bool
    k: int
    reason: str = ""
    intercept: float = math.nan
    intercept_se: float = math.nan
    slope: float = math.nan
    t: float = math.nan
    df: int = 0
    pvalue: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        from mbi_predict.io import json_safe

        return json_safe(asdict(self))


def egger_test(yi: Any, vi: Any, *, min_k: int = EGGER_MIN_K) -> EggerResult:
    """Classical Egger test; `done=False` with a reason when k < `min_k` (default 10)."""
    y, v = check_inputs(yi, vi)
    k = y.size
    if k < min_k:
        return EggerResult(done=False, k=k, reason=f"Egger's test needs at least {min_k} trials (k = {k}); "
                                                   "with fewer it has too little power to be informative")
    se = np.sqrt(v)
    snd, precision = y / se, 1 / se
    if np.ptp(precision) == 0:
        return EggerResult(done=False, k=k, reason="all trials have the same standard error: no regression possible")
    X = np.column_stack([np.ones(k), precision])
    beta, *_ = np.linalg.lstsq(X, snd, rcond=None)
    resid = snd - X @ beta
    sigma2 = float(resid @ resid) / (k - 2)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    intercept_se = math.sqrt(cov[0, 0])
    t = float(beta[0] / intercept_se)
    return EggerResult(done=True, k=k, intercept=float(beta[0]), intercept_se=intercept_se, slope=float(beta[1]),
                       t=t, df=k - 2, pvalue=float(2 * stats.t.sf(abs(t), k - 2)))


def leave_one_out(yi: Any, vi: Any, labels: Any = None, *, method: str = "REML", test: str = "z",
                  level: float = 0.95) -> list[dict[str, Any]]:
    """The pooled result with each trial omitted in turn (metafor's `leave1out`); needs k >= 3."""
    y, v = check_inputs(yi, vi, method=method, test=test, level=level)
    k = y.size
    names = [str(x) for x in labels] if labels is not None else [str(i + 1) for i in range(k)]
    if len(names) != k:
        raise MBIError(f"{len(names)} labels for {k} effect sizes")
    if k < 3:
        return []
    rows = []
    for i in range(k):
        keep = np.arange(k) != i
        res = pool(y[keep], v[keep], method=method, test=test, level=level)
        rows.append({"omitted": names[i], "k": res.k, "estimate": res.estimate, "se": res.se, "ci_low": res.ci_low,
                     "ci_high": res.ci_high, "pvalue": res.pvalue, "tau2": res.tau2, "i2": res.i2, "q": res.q,
                     "q_pvalue": res.q_pvalue})
    return rows
