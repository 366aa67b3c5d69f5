"""One row per trial describing a harmonised IPD table: the "Table 1" of an IPD meta-analysis.

Aggregates only (counts, shares, means, medians), so the result can be printed, logged or put in a report without
disclosing any participant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mbi_predict.data.schema import STUDY_TRAITS, outcome_columns


def describe_ipd(ipd: pd.DataFrame) -> pd.DataFrame:
    """Per trial: n, n per arm and control type, outcome coverage, baseline distress, % female, median age, traits.

    `outcome_coverage` is the share of randomised participants with the trial's primary-window distress outcome
    (`distress_fu1_6`), the outcome most analyses start from; `outcomes_measured` lists the outcome columns the trial
    holds any value of.
    """
    arm = pd.to_numeric(ipd["arm"], errors="coerce")
    control = ipd["control_type"].astype(object) if "control_type" in ipd.columns else pd.Series(None, index=ipd.index)
    outcomes = outcome_columns(ipd)
    rows = []
    for trial_id, block in ipd.groupby(ipd["trial_id"].astype(str), sort=True):
        index = block.index
        row: dict[str, object] = {
            "trial_id": trial_id,
            "n": int(len(block)),
            "n_mbi": int((arm.loc[index] == 1).sum()),
            "n_control": int((arm.loc[index] == 0).sum()),
            "n_passive": int(((arm.loc[index] == 0) & (control.loc[index] == "passive")).sum()),
            "n_active": int(((arm.loc[index] == 0) & (control.loc[index] == "active")).sum()),
        }
        kinds = sorted({str(v) for v in control.loc[index][arm.loc[index] == 0].dropna()})
        row["control_types"] = ", ".join(kinds)
        measured = [c for c in outcomes if block[c].notna().any()]
        row["outcomes_measured"] = ", ".join(measured)
        row["outcome_coverage"] = (float(block["distress_fu1_6"].notna().mean())
                                   if "distress_fu1_6" in block.columns else np.nan)
        row["mean_baseline_distress"] = _mean(block, "baseline_distress")
        row["sd_baseline_distress"] = _sd(block, "baseline_distress")
        row["pct_female"] = (100.0 * float((block["gender"] == "female").sum()) / max(int(block["gender"].notna().sum()), 1)
                             if "gender" in block.columns and block["gender"].notna().any() else np.nan)
        row["median_age"] = (float(pd.to_numeric(block["age"], errors="coerce").median())
                             if "age" in block.columns else np.nan)
        row["pct_tertiary"] = (100.0 * float((block["education"] == "tertiary").sum())
                               / max(int(block["education"].notna().sum()), 1)
                               if "education" in block.columns and block["education"].notna().any() else np.nan)
        for trait in STUDY_TRAITS:
            if trait in block.columns:
                values = block[trait].dropna()
                row[trait] = values.iloc[0] if len(values) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(block: pd.DataFrame, column: str) -> float:
    if column not in block.columns:
        return float("nan")
    values = pd.to_numeric(block[column], errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def _sd(block: pd.DataFrame, column: str) -> float:
    if column not in block.columns:
        return float("nan")
    values = pd.to_numeric(block[column], errors="coerce").dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")
