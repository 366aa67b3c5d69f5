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
    rows = []
    for trial_id, index in ipd.groupby(ipd["trial_id"].astype(str), sort=True).groups.items():
        block = ipd.loc[index, variables].isna()
        trial_arm = arm.loc[index]
        mbi, control = block[trial_arm == 1], block[trial_arm == 0]
        for variable in variables:
            rows.append({
                "trial_id": trial_id,
                "variable": variable,
                "n": int(len(block)),
                "n_missing": int(block[variable].sum()),
                "share_missing": float(block[variable].mean()) if len(block) else float("nan"),
                "n_mbi": int(len(mbi)),
                "share_missing_mbi": float(mbi[variable].mean()) if len(mbi) else float("nan"),
                "n_control": int(len(control)),
                "share_missing_control": float(control[variable].mean()) if len(control) else float("nan"),
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))
