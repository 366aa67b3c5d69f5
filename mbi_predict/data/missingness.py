"""How much of each analysis variable is missing, per trial and by arm.

Reported, never acted on: harmonisation keeps every randomised participant (intention to treat) and imputation lives
in `impute.py`. Missingness by arm matters because differential dropout between arms is what biases a complete-case
treatment effect, so the table shows both arms side by side.
"""

from __future__ import annotations

import pandas as pd

from mbi_predict.data.schema import BASELINE_COVARIATES, CORE_COLUMNS, STUDY_TRAITS, harm_columns, outcome_columns

COLUMNS = ("trial_id", "variable", "n", "n_missing", "share_missing", "n_mbi", "share_missing_mbi", "n_control",
           "share_missing_control")


def analysis_variables(ipd: pd.DataFrame) -> list[str]:
    """Covariates, baseline scores, outcomes and harm flags; not ids, arm, study traits or `_raw` copies."""
    skip = set(CORE_COLUMNS) | set(STUDY_TRAITS)
    covariates = [c for c in BASELINE_COVARIATES if c in ipd.columns]
    follow_ups = outcome_columns(ipd) + harm_columns(ipd)
    listed = set(covariates) | set(follow_ups)
    others = [c for c in ipd.columns if c not in skip and c not in listed and not c.endswith("_raw")]
    return covariates + others + follow_ups

def missingness_table(ipd: pd.DataFrame, variables: list[str] | None = None) -> pd.DataFrame:
    """One row per (trial, variable): counts and shares missing overall, in the MBI arm and in the control arm(s).

    A variable a trial never measured is 100% missing in that trial; that is reported too, because it is what a
    pooled analysis of that variable will face.
    """
    variables = analysis_variables(ipd) if variables is None else list(variables)
    absent = [v for v in variables if v not in ipd.columns]
    if absent:
        raise KeyError(f"not in the IPD table: {', '.join(absent)}")
    arm = pd.to_numeric(ipd["arm"], errors="coerce")
    trial = ipd["trial_id"].astype(str).rename("trial_id")
    missing = ipd[variables].isna()

    def by(mask: pd.Series, prefix: str) -> pd.DataFrame:
        grouped = missing[mask].groupby(trial[mask], sort=True)
        shares = grouped.mean().stack().rename(f"share_missing{prefix}")
        counts = grouped.size().rename(f"n{prefix}")
        frame = shares.to_frame()
        frame.index.names = ["trial_id", "variable"]
        return frame.join(counts, on="trial_id")

    overall = by(pd.Series(True, index=ipd.index), "")
    overall["n_missing"] = missing.groupby(trial, sort=True).sum().stack().to_numpy()
    table = overall.join(by(arm == 1, "_mbi")).join(by(arm == 0, "_control")).reset_index()
    # a trial with no rows in an arm has no share there (NaN) and n 0
    for column in ("n_mbi", "n_control"):
        table[column] = table[column].fillna(0).astype(int)
    table["n"] = table["n"].astype(int)
    table["n_missing"] = table["n_missing"].astype(int)
    order = {v: i for i, v in enumerate(variables)}
    table = table.sort_values(["trial_id", "variable"], key=lambda s: s.map(order) if s.name == "variable" else s)
    return table[list(COLUMNS)].reset_index(drop=True)
