"""Small simulated consortia shared by the explain tests (a uniquely named module: several test folders have a
conftest.py, so `from conftest import ...` would pick whichever was imported first)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mbi_predict.data.simulate import simulate_latent

COVARIATES = ["age", "gender", "education", "baseline_distress", "baseline_anxiety", "baseline_depression",
              "baseline_wellbeing", "baseline_mindfulness"]
NUMERIC = [c for c in COVARIATES if c not in ("gender", "education")]
OUTCOME = "distress_fu1_6"


def passive_analysis_rows(scenario: str, seed: int, n_trials: int = 6, n: int = 1500) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ipd rows with an observed outcome, MBI vs passive control, trials with both arms; their truth rows)."""
    consortium = simulate_latent(scenario, seed=seed, n_trials=n_trials, n=n)
    ipd = consortium.ipd.merge(consortium.truth, on=["trial_id", "participant_id"])
    keep = ipd[OUTCOME].notna() & ((ipd["arm"] == 1) | (ipd["control_type"] == "passive"))
    ipd = ipd[keep]
    ipd = ipd[ipd.groupby("trial_id")["arm"].transform("nunique") == 2].reset_index(drop=True)
    truth = ipd[[c for c in ipd.columns if c.startswith("true_effect")]]
    return ipd, truth


def numeric_design(ipd: pd.DataFrame) -> pd.DataFrame:
    """Covariates as the effect models need them: numeric, imputed at the mean, one dummy per non-reference level."""
    X = ipd[NUMERIC].astype(float)
    X = X.fillna(X.mean())
    X["gender_male"] = (ipd["gender"] == "male").astype(float)
    X["gender_other"] = (ipd["gender"] == "other").astype(float)
    X["education_tertiary"] = (ipd["education"] == "tertiary").astype(float)
    return X


