"""Two-stage IPD meta-analysis of the MBI-versus-control effect.

Stage 1 (per trial, on the MBI rows and the control rows of the requested kind, intention-to-treat):
* continuous outcome: ANCOVA `y ~ arm + baseline_{construct}` on each of m within-trial multiple imputations; the arm
  coefficient is divided by the pooled within-arm SD of the outcome (Hedges' g with the small-sample factor
  J = 1 - 3/(4 df - 1), df = n - 2). Its variance is J² (se_b²/s² + d²/(2 df)): the ANCOVA sampling variance of the
  adjusted difference on the SD scale plus the delta-method term for estimating s (as for an unadjusted d).
* binary outcome (0/1): log risk ratio (primary) and risk difference from the 2x2 counts of each imputed data set.
  We impute the binary outcome (logistic regression draws given baseline, arm and, where present, the continuous
  outcome of the same construct and window) rather than use complete cases, because dropout in these trials depends
  on baseline severity and the continuous score: complete cases would be biased under that missing-at-random
  mechanism while imputation is not. When a 2x2 cell is zero in any imputation, 0.5 is added to every cell of that
  trial in all imputations (metafor's `escalc` default, add = 1/2, to = "only0"), and the row records it. A trial
  with no events in either arm (or all events in both) carries no information on the risk ratio and is skipped.
* the m estimates are combined by Rubin's rules; the fraction of missing information is reported.
Stage 2: `pool` across trials (method and test passed through).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mbi_predict.data.impute import multiply_impute
from mbi_predict.errors import DataError, MBIError
from mbi_predict.meta.pool import PoolResult, pool

WINDOWS = ("post", "fu1_6", "fu6plus")
CONTROL_TYPES = ("passive", "active")
CONTINUITY = 0.5


# ------------------------------------------------------------------------------------------------ small helpers

def construct_of(outcome: str) -> str:
    """`distress_fu1_6` -> `distress`; `deteriorated_distress_post` -> `distress`."""
    name = outcome.removeprefix("deteriorated_")
    for window in WINDOWS:
        if name.endswith(f"_{window}"):
            return name[: -len(window) - 1]
    return name


def baseline_column(ipd: pd.DataFrame, outcome: str) -> str | None:
    column = f"baseline_{construct_of(outcome)}"
    return column if column in ipd.columns and column != outcome else None


def is_binary_outcome(series: pd.Series) -> bool:
    observed = series.dropna()
    return bool(pd.api.types.is_numeric_dtype(series) and len(observed) > 0 and observed.isin([0, 1]).all())


@dataclass(frozen=True)
class RubinResult:
    estimate: float
    variance: float
    within: float
    between: float
    df: float
    fmi: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)


def rubin(estimates: Any, variances: Any) -> RubinResult:
    """Rubin's rules: T = Ū + (1 + 1/m) B; FMI = (r + 2/(ν + 3))/(r + 1) with ν = (m-1)(1 + 1/r)²."""
    q = np.asarray(estimates, dtype=float)
    u = np.asarray(variances, dtype=float)
    m = q.size
    ubar = float(u.mean())
    b = float(q.var(ddof=1)) if m > 1 else 0.0
    total = ubar + (1 + 1 / m) * b
    if b <= 0 or m < 2:
        return RubinResult(float(q.mean()), total, ubar, 0.0, math.inf, 0.0)
    r = (1 + 1 / m) * b / ubar
    nu = (m - 1) * (1 + 1 / r) ** 2
    fmi = (r + 2 / (nu + 3)) / (r + 1)
    return RubinResult(float(q.mean()), total, ubar, b, nu, float(fmi))


def ols(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and their classical covariance; raises if X is rank deficient or leaves no residual df."""
    n, p = X.shape
    if n <= p or np.linalg.matrix_rank(X) < p:
        raise MBIError("the regression is not estimable (too few rows or collinear columns)")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    sigma2 = float(resid @ resid) / (n - p)
    return beta, sigma2 * np.linalg.inv(X.T @ X)


def check_ipd(ipd: pd.DataFrame, outcome: str, control: str) -> None:
    if not isinstance(ipd, pd.DataFrame):
        raise DataError("the IPD must be a pandas DataFrame")
    for column in ("trial_id", "arm", "control_type"):
        if column not in ipd.columns:
            raise DataError("required IPD column is absent", column=column)
    if outcome not in ipd.columns:
        raise DataError(f"outcome column {outcome!r} is not in the IPD table", column=outcome)
    if not pd.api.types.is_numeric_dtype(ipd[outcome]):
        raise DataError("outcome column must be numeric", column=outcome)
    if control not in CONTROL_TYPES:
        raise DataError(f"control must be 'passive' or 'active', got {control!r}", column="control_type")
    arm = pd.to_numeric(ipd["arm"], errors="coerce")
    if arm.isna().any() or not arm.isin([0, 1]).all():
        raise DataError("arm must be 0 or 1 on every row", column="arm")
    if ipd["trial_id"].isna().any():
        raise DataError("some rows have no trial id", column="trial_id")


def analysis_rows(ipd: pd.DataFrame, outcome: str, control: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The MBI rows plus the control rows of the requested kind, per trial; trials that cannot contribute are
    listed with the reason (no such control arm, an empty arm, the outcome never observed in an arm)."""
    check_ipd(ipd, outcome, control)
    frame = ipd.copy()
    frame["arm"] = pd.to_numeric(frame["arm"]).astype(int)
    frame["trial_id"] = frame["trial_id"].astype(str)
    keep, skipped = [], []
    for trial, rows in frame.groupby("trial_id", sort=True):
        is_control = (rows["arm"] == 0) & (rows["control_type"].astype("string").str.strip().str.lower() == control)
        sub = rows[(rows["arm"] == 1) | is_control]
        n_mbi, n_control = int((sub["arm"] == 1).sum()), int((sub["arm"] == 0).sum())
        reason = None
        if n_control == 0:
            other = (rows["arm"] == 0).sum()
            reason = (f"no {control} control arm (its {int(other)} control rows are of another kind)" if other
                      else "empty control arm")
        elif n_mbi == 0:
            reason = "empty MBI arm"
        else:
            observed = sub[sub[outcome].notna()]
            for label, value in (("MBI", 1), ("control", 0)):
                if int((observed["arm"] == value).sum()) < 2:
                    reason = f"fewer than 2 observed outcomes in the {label} arm"
                    break
        if reason:
            skipped.append({"trial_id": trial, "n_mbi": n_mbi, "n_control": n_control, "reason": reason})
        else:
            keep.append(sub)
    data = pd.concat(keep) if keep else frame.iloc[0:0]
    return data, skipped


# ----------------------------------------------------------------------------------------------- stage 1 fits

def hedges_g_ancova(y: np.ndarray, arm: np.ndarray, baseline: np.ndarray | None) -> tuple[float, float]:
    """Hedges' g from an ANCOVA (or a plain difference when `baseline` is None) and its variance."""
    columns = [np.ones_like(y), arm] + ([baseline] if baseline is not None else [])
    beta, cov = ols(np.column_stack(columns), y)
    n1, n0 = int(arm.sum()), int((1 - arm).sum())
    df = n1 + n0 - 2
    s2 = ((n1 - 1) * y[arm == 1].var(ddof=1) + (n0 - 1) * y[arm == 0].var(ddof=1)) / df
    if not s2 > 0:
        raise MBIError("the outcome does not vary within arms")
    s = math.sqrt(s2)
    d = beta[1] / s
    j = 1 - 3 / (4 * df - 1)
    return float(j * d), float(j ** 2 * (cov[1, 1] / s2 + d ** 2 / (2 * df)))


def treatment_difference(y: np.ndarray, arm: np.ndarray, baseline: np.ndarray | None) -> tuple[float, float]:
    """The (adjusted) mean difference on the outcome's own scale and its variance."""
    columns = [np.ones_like(y), arm] + ([baseline] if baseline is not None else [])
    beta, cov = ols(np.column_stack(columns), y)
    return float(beta[1]), float(cov[1, 1])


def _cells(y: np.ndarray, arm: np.ndarray) -> tuple[float, float, float, float]:
    a = float(y[arm == 1].sum())
    c = float(y[arm == 0].sum())
    return a, float((arm == 1).sum()) - a, c, float((arm == 0).sum()) - c


def log_rr_and_rd(a: float, b: float, c: float, d: float, add: float) -> tuple[float, float, float, float]:
    a, b, c, d = a + add, b + add, c + add, d + add
    n1, n0 = a + b, c + d
    log_rr = math.log((a / n1) / (c / n0))
    v_log_rr = 1 / a - 1 / n1 + 1 / c - 1 / n0
    p1, p0 = a / n1, c / n0
    rd = p1 - p0
    v_rd = p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0
    return log_rr, v_log_rr, rd, v_rd


# ------------------------------------------------------------------------------------------------- the result

@dataclass(frozen=True)
class TwoStageResult:
    outcome: str
    control: str
    outcome_type: str
    measure: str
    pooled: PoolResult | None
    per_trial: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    secondary: dict[str, PoolResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    m: int = 5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        from mbi_predict.io import json_safe

        return json_safe({
            "outcome": self.outcome, "control": self.control, "outcome_type": self.outcome_type,
            "measure": self.measure, "pooled": self.pooled.to_dict() if self.pooled else None,
            "per_trial": self.per_trial, "skipped": self.skipped,
            "secondary": {name: res.to_dict() for name, res in self.secondary.items()},
            "notes": self.notes, "m": self.m, "seed": self.seed})


def two_stage(ipd: pd.DataFrame, outcome: str, *, control: str = "passive", m: int = 5, seed: int = 0,
              covariate_adjust: bool = True, method: str = "REML", test: str = "z",
              level: float = 0.95) -> TwoStageResult:
    """Per-trial effect (Hedges' g or log risk ratio) on m within-trial imputations, Rubin-combined, then pooled."""
    data, skipped = analysis_rows(ipd, outcome, control)
    binary = is_binary_outcome(ipd[outcome])
    # the baseline always informs the imputation; it enters the analysis model only when adjusting
    baseline = baseline_column(ipd, outcome)
    adjust_for = baseline if (covariate_adjust and not binary) else None
    notes: list[str] = []
    if baseline is None and covariate_adjust and not binary:
        notes.append(f"no baseline_{construct_of(outcome)} column: effects are not covariate-adjusted")
    columns = [outcome] + ([baseline] if baseline else [])
    auxiliary = []
    if binary:
        continuous_twin = outcome.removeprefix("deteriorated_")
        if continuous_twin != outcome and continuous_twin in ipd.columns:
            auxiliary.append(continuous_twin)
        notes.append("binary outcome imputed by logistic-regression draws (within trial, arm-aware); "
                     "log risk ratio pooled, risk difference as secondary")
    imputations = multiply_impute(data, columns, m=m, seed=seed, auxiliary=auxiliary) if len(data) else []
    z = float(stats.norm.ppf(0.5 + level / 2))
    rows: list[dict[str, Any]] = []
    rd_values: list[tuple[float, float]] = []
    for trial in sorted(data["trial_id"].unique()) if len(data) else []:
        sub_list = [imp[imp["trial_id"] == trial] for imp in imputations]
        original = data[data["trial_id"] == trial]
        arm = original["arm"].to_numpy(dtype=float)
        row: dict[str, Any] = {"trial_id": trial, "n": int(len(original)), "n_mbi": int(arm.sum()),
                               "n_control": int((1 - arm).sum()),
                               "n_observed": int(original[outcome].notna().sum())}
        use_baseline = adjust_for if adjust_for and original[adjust_for].notna().any() else None
        try:
            if binary:
                cells = [_cells(s[outcome].to_numpy(dtype=float), arm) for s in sub_list]
                if all(a == 0 and c == 0 for a, _, c, _ in cells) or all(b == 0 and d == 0 for _, b, _, d in cells):
                    raise MBIError("no events in either arm (or events in everyone): uninformative for the "
                                   "risk ratio")
                add = CONTINUITY if any(min(cell) == 0 for cell in cells) else 0.0
                fits = [log_rr_and_rd(*cell, add) for cell in cells]
                result = rubin([f[0] for f in fits], [f[1] for f in fits])
                rd = rubin([f[2] for f in fits], [f[3] for f in fits])
                observed = original[original[outcome].notna()]
                row.update(events_mbi_observed=int(observed.loc[observed["arm"] == 1, outcome].sum()),
                           events_control_observed=int(observed.loc[observed["arm"] == 0, outcome].sum()),
                           continuity_correction=add, risk_difference=rd.estimate, risk_difference_se=rd.se)
                if add:
                    row["note"] = f"a zero cell: {add} added to every cell (declared continuity correction)"
                rd_values.append((rd.estimate, rd.variance))
            else:
                fits = [hedges_g_ancova(s[outcome].to_numpy(dtype=float), arm,
                                        s[use_baseline].to_numpy(dtype=float) if use_baseline else None)
                        for s in sub_list]
                result = rubin([f[0] for f in fits], [f[1] for f in fits])
                row["adjusted_for"] = use_baseline
                if adjust_for and not use_baseline:
                    row["note"] = f"{adjust_for} never observed in this trial: unadjusted"
        except MBIError as exc:
            skipped.append({"trial_id": trial, "n_mbi": row["n_mbi"], "n_control": row["n_control"],
                            "reason": str(exc)})
            continue
        row.update(estimate=result.estimate, se=result.se, ci_low=result.estimate - z * result.se,
                   ci_high=result.estimate + z * result.se, fmi=result.fmi, weight=math.nan)
        rows.append(row)
    pooled = None
    secondary: dict[str, PoolResult] = {}
    if rows:
        pooled = pool([r["estimate"] for r in rows], [r["se"] ** 2 for r in rows], method=method, test=test,
                      level=level, labels=[r["trial_id"] for r in rows])
        for row, weight in zip(rows, pooled.weights):
            row["weight"] = weight
        if binary:
            secondary["risk_difference"] = pool([v[0] for v in rd_values], [v[1] for v in rd_values],
                                                method=method, test=test, level=level,
                                                labels=[r["trial_id"] for r in rows])
        if len(rows) < 2:
            notes.append("fewer than 2 usable trials: pooling was not done; the single trial's estimate is reported")
    else:
        notes.append("no usable trial: nothing to pool")
    return TwoStageResult(
        outcome=outcome, control=control, outcome_type="binary" if binary else "continuous",
        measure="log risk ratio (MBI vs control)" if binary else
        (f"Hedges' g, ANCOVA-adjusted for {adjust_for}" if adjust_for else "Hedges' g, unadjusted"),
        pooled=pooled, per_trial=rows, skipped=sorted(skipped, key=lambda s: str(s["trial_id"])), secondary=secondary,
        notes=notes, m=m, seed=seed)
