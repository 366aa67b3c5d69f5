"""The harmonised IPD table's contract (shared/DATA_MODEL.md) as code.

`validate_ipd` lists every violation with its trial and column; `check_ipd` raises the first one as a `DataError`
(one line), which is what the CLI shows. Downstream stages call `check_ipd` once on load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbi_predict.errors import DataError

CORE_COLUMNS = ("trial_id", "participant_id", "arm", "control_type")
CONTROL_TYPES = ("passive", "active")
BASELINE_COVARIATES = (
    "age", "gender", "education", "baseline_distress", "baseline_anxiety", "baseline_depression",
    "baseline_wellbeing", "baseline_mindfulness",
)
CATEGORY_LEVELS = {
    "gender": ("female", "male", "other"),
    "education": ("secondary_or_less", "tertiary"),
}
STUDY_TRAITS = ("mbi_type", "n_sessions", "delivery", "setting", "country")
STUDY_TRAIT_LEVELS = {
    "delivery": ("group_in_person", "online", "individual"),
    "setting": ("workplace", "university", "community", "health_service"),
}
WINDOWS = ("post", "fu1_6", "fu6plus")
CONSTRUCTS = ("distress", "anxiety", "depression", "wellbeing", "mindfulness", "stress")
# Constructs whose name reads upwards as "worse": a reduction is a benefit.
HIGHER_IS_WORSE = {"distress": True, "anxiety": True, "depression": True, "stress": True,
                   "wellbeing": False, "mindfulness": False}

_WINDOW_PATTERN = "|".join(WINDOWS)
OUTCOME_RE = re.compile(rf"^(?P<construct>[a-z][a-z0-9_]*?)_(?P<window>{_WINDOW_PATTERN})$")
HARM_RE = re.compile(rf"^deteriorated_(?P<construct>[a-z][a-z0-9_]*?)_(?P<window>{_WINDOW_PATTERN})$")
SNAKE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Violation:
    """One breach of the contract, located by trial (may be None for table-wide issues) and column."""

    column: str | None
    trial: str | None
    message: str

    def __str__(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in (("trial", self.trial), ("column", self.column)) if v is not None)
        return f"{where}: {self.message}" if where else self.message


def outcome_columns(frame: pd.DataFrame) -> list[str]:
    """Continuous outcome columns `{construct}_{window}` (harm flags excluded)."""
    return [c for c in frame.columns if OUTCOME_RE.match(c) and not c.startswith("deteriorated_")
            and not c.endswith("_raw")]


def harm_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if HARM_RE.match(c)]


def is_binary_outcome(frame: pd.DataFrame, column: str) -> bool:
    values = pd.to_numeric(frame[column], errors="coerce").dropna().unique()
    return len(values) > 0 and set(np.asarray(values, dtype=float)) <= {0.0, 1.0}


def baseline_of(outcome: str) -> str | None:
    """`distress_fu1_6` -> `baseline_distress`; `deteriorated_distress_post` -> `baseline_distress`."""
    match = HARM_RE.match(outcome) or OUTCOME_RE.match(outcome)
    return f"baseline_{match.group('construct')}" if match else None


def construct_of(outcome: str) -> str | None:
    match = HARM_RE.match(outcome) or OUTCOME_RE.match(outcome)
    return match.group("construct") if match else None


def present_baseline_covariates(frame: pd.DataFrame) -> list[str]:
    return [c for c in BASELINE_COVARIATES if c in frame.columns]


def validate_ipd(frame: pd.DataFrame) -> list[Violation]:
    """Every violation of the IPD contract, each naming its trial and column."""
    problems: list[Violation] = []
    for column in ("trial_id", "participant_id", "arm"):
        if column not in frame.columns:
            problems.append(Violation(column, None, "required column is missing"))
    if problems:
        return problems
    if "control_type" not in frame.columns:
        problems.append(Violation("control_type", None, "required column is missing"))

    for column in frame.columns:
        if not SNAKE_RE.match(str(column)):
            problems.append(Violation(str(column), None, "column names must be snake_case"))

    trial = frame["trial_id"]
    if trial.isna().any() or (trial.astype(str).str.strip() == "").any():
        problems.append(Violation("trial_id", None, f"{int((trial.isna() | (trial.astype(str).str.strip() == '')).sum())} rows have an empty trial_id"))
    trial = trial.astype(str)

    if frame["participant_id"].isna().any():
        for t in sorted(trial[frame["participant_id"].isna()].unique()):
            problems.append(Violation("participant_id", t, "empty participant_id"))
    dup = frame.assign(_t=trial).duplicated(subset=["_t", "participant_id"], keep=False)
    for t in sorted(trial[dup].unique()):
        ids = frame.loc[dup & (trial == t), "participant_id"].astype(str).unique()[:3]
        problems.append(Violation("participant_id", t, f"duplicate participant ids: {', '.join(ids)}"))

    arm = pd.to_numeric(frame["arm"], errors="coerce")
    bad_arm = arm.isna() | ~arm.isin([0, 1])
    for t in sorted(trial[bad_arm].unique()):
        problems.append(Violation("arm", t, "arm must be 0 (control) or 1 (MBI) on every row"))
    for t, arms in arm[~bad_arm].groupby(trial[~bad_arm]):
        if arms.nunique() < 2:
            problems.append(Violation("arm", str(t), "trial has only one arm"))

    if "control_type" in frame.columns:
        ctype = frame["control_type"].astype("object").where(frame["control_type"].notna(), None)
        ctrl = arm == 0
        bad = ctrl & ~ctype.isin(CONTROL_TYPES)
        for t in sorted(trial[bad].unique()):
            problems.append(Violation("control_type", t, "control rows need control_type 'passive' or 'active'"))
        on_mbi = (arm == 1) & ctype.notna() & (ctype.astype(str).str.strip() != "")
        for t in sorted(trial[on_mbi].unique()):
            problems.append(Violation("control_type", t, "control_type must be empty on MBI rows"))

    for column, levels in CATEGORY_LEVELS.items():
        if column in frame.columns:
            values = frame[column].dropna().astype(str)
            bad = ~values.isin(levels)
            for t in sorted(trial[values.index[bad]].unique()):
                seen = ", ".join(sorted(values[bad & (trial[values.index] == t)].unique())[:3])
                problems.append(Violation(column, t, f"values {seen} not in {', '.join(levels)}"))

    numeric = [c for c in frame.columns if c in ("age",) or c.startswith("baseline_") or OUTCOME_RE.match(c)]
    for column in numeric:
        if column.endswith("_raw"):
            continue
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or values.isna().all()):
            problems.append(Violation(column, None, f"must be numeric, found {values.dtype}"))
        elif column.startswith("deteriorated_"):
            bad = values.notna() & ~values.isin([0, 1])
            for t in sorted(trial[bad].unique()):
                problems.append(Violation(column, t, "harm flags must be 0, 1 or missing"))

    for column in STUDY_TRAITS:
        if column in frame.columns:
            per_trial = frame.groupby(trial, sort=True)[column].nunique(dropna=False)
            for t in per_trial.index[per_trial > 1]:
                problems.append(Violation(column, str(t), "study-level trait is not constant within the trial"))
    for column, levels in STUDY_TRAIT_LEVELS.items():
        if column in frame.columns:
            values = frame[column].dropna().astype(str)
            for t in sorted(trial[values.index[~values.isin(levels)]].unique()):
                problems.append(Violation(column, t, f"must be one of {', '.join(levels)}"))
    return problems


def check_ipd(frame: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """Raise the first contract violation as a one-line `DataError`; return the frame with canonical dtypes."""
    problems = validate_ipd(frame)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(first.message + more, file=source, trial=first.trial, column=first.column)
    out = frame.copy()
    out["trial_id"] = out["trial_id"].astype(str)
    out["participant_id"] = out["participant_id"].astype(str)
    out["arm"] = pd.to_numeric(out["arm"]).astype(int)
    out["control_type"] = out["control_type"].astype("object").where(out["arm"] == 0, None)
    return out
