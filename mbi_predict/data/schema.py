"""The harmonised IPD table's contract (shared/DATA_MODEL.md) as code.

`validate_ipd` lists every violation with its trial and column; `check_ipd` raises the first one as a `DataError`
(one line), which is what the CLI shows. Downstream stages call `check_ipd` once on load. Messages give counts and
levels of the contract, never a participant's value or id.

Numbers are finite: an infinite value in any numeric column is a violation. Plausible ranges (`PLAUSIBLE_RANGES`,
default age 10-110 years, the population of mindfulness trials) catch unit and coding errors such as an age of 999 or
an age in months; a table for another population declares its own in ``frame.attrs[RANGES_ATTR]`` (kept in parquet
by pandas, so a table written with its ranges is loaded with them) or passes ``ranges=`` to `check_ipd`.
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
#: A number as a raw file may write one: plain decimal notation, optionally signed, with an exponent. Not `NaN`,
#: `inf`, `1_0` or `0x10` (which Python's float() would accept), so such text is reported, never read as a value.
NUMBER_RE = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
#: Inclusive plausible range per numeric column; override per table with ``frame.attrs[RANGES_ATTR]``.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {"age": (10.0, 110.0)}
RANGES_ATTR = "mbi_predict.plausible_ranges"


def parse_number(text: str) -> float | None:
    """The float written in `text` under `NUMBER_RE`, else None."""
    text = text.strip()
    return float(text) if NUMBER_RE.match(text) else None


def id_text(values: pd.Series) -> pd.Series:
    """Participant ids as text (object dtype), blanks as None; never through a number.

    Text is only stripped (`007` and `7` are two ids). A format that stores ids as numbers (SPSS, Stata, a numeric
    Excel or parquet column) gives integral values as their integer digits (`12001.0` -> `12001`, exact at any size
    the float holds) and other values as Python's shortest round-trip text.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    out = []
    for value in values.tolist():
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            out.append(None)
        elif isinstance(value, bool):
            out.append(str(value))
        elif isinstance(value, (int, np.integer)):
            out.append(str(int(value)))
        elif isinstance(value, (float, np.floating)):
            number = float(value)
            out.append(str(int(number)) if np.isfinite(number) and number.is_integer() else repr(number))
        else:
            text = str(value).strip()
            out.append(text or None)
    return pd.Series(out, index=values.index, dtype=object, name=values.name)


def plausible_ranges(frame: pd.DataFrame | None = None,
                     ranges: dict[str, tuple[float, float]] | None = None) -> dict[str, tuple[float, float]]:
    """The defaults, updated by the table's own declaration (its attrs) and then by `ranges`."""
    merged = dict(PLAUSIBLE_RANGES)
    declared = frame.attrs.get(RANGES_ATTR) if frame is not None else None
    for source in (declared or {}, ranges or {}):
        for column, bounds in source.items():
            low, high = (float(b) for b in bounds)
            merged[str(column)] = (low, high)
    return merged


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


def deterioration_of(outcome: str) -> str | None:
    """`distress_fu1_6` -> `deteriorated_distress_fu1_6` (the reliable-deterioration flag of the same construct and
    window); None for an outcome that is not ``<construct>_<window>`` or is itself a flag."""
    match = OUTCOME_RE.match(outcome)
    if match is None or outcome.startswith(("deteriorated_", "improved_")):
        return None
    return f"deteriorated_{match['construct']}_{match['window']}"


def construct_of(outcome: str) -> str | None:
    match = HARM_RE.match(outcome) or OUTCOME_RE.match(outcome)
    return match.group("construct") if match else None


#: Columns that identify a row, its trial or its randomised arm: never a predictor (an id is memorised, not learnt;
#: the arm enters the models separately, as the treatment, and a CATE model must not see it as a covariate).
DESIGN_COLUMNS = ("trial_id", "participant_id", "arm", "control_type")
_WINDOW_SUFFIX_RE = re.compile(rf"_(?:{_WINDOW_PATTERN})(?:_raw)?$")


def predictor_refusal(column: str) -> str | None:
    """Why `column` can never be a predictor, or None if it may be one.

    Refused: the design columns (`DESIGN_COLUMNS`) and every outcome: any column ending in an outcome window
    (`post`, `fu1_6`, `fu6plus`), i.e. `{construct}_{window}` of any construct, or its `_raw` total, and the harm
    and improvement flags (`deteriorated_*`, `improved_*`). Baseline scores (`baseline_*`, also their `_raw` totals)
    are measured before randomisation and are allowed.
    """
    name = str(column)
    if name in ("trial_id", "participant_id"):
        return "an identifier, not a participant characteristic"
    if name in ("arm", "control_type"):
        return "the randomised arm: it enters the models as the treatment, never as a covariate"
    if name.startswith("baseline_"):
        return None
    if name.startswith(("deteriorated_", "improved_")) or _WINDOW_SUFFIX_RE.search(name):
        return "an outcome (measured after randomisation): it would leak the answer into the prediction"
    return None


def present_baseline_covariates(frame: pd.DataFrame) -> list[str]:
    return [c for c in BASELINE_COVARIATES if c in frame.columns]


def validate_ipd(frame: pd.DataFrame, *, ranges: dict[str, tuple[float, float]] | None = None) -> list[Violation]:
    """Every violation of the IPD contract, each naming its trial and column (see `plausible_ranges`)."""
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
        n_ids = frame.loc[dup & (trial == t), "participant_id"].astype(str).nunique()
        problems.append(Violation("participant_id", t, f"{n_ids} participant ids occur more than once"))

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

    problems += _number_violations(frame, trial, plausible_ranges(frame, ranges))

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


def _number_violations(frame: pd.DataFrame, trial: pd.Series,
                       ranges: dict[str, tuple[float, float]]) -> list[Violation]:
    """Infinite values in any numeric column; values outside a column's plausible range. Counts, never values."""
    problems: list[Violation] = []
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        numbers = values.to_numpy(dtype=float, na_value=np.nan)
        infinite = np.isinf(numbers)
        for t in sorted(trial[infinite].unique()):
            count = int((infinite & (trial == t).to_numpy()).sum())
            problems.append(Violation(str(column), t, f"{count} values are infinite; numbers must be finite"))
        if column in ranges:
            low, high = ranges[column]
            outside = np.isfinite(numbers) & ((numbers < low) | (numbers > high))
            for t in sorted(trial[outside].unique()):
                count = int((outside & (trial == t).to_numpy()).sum())
                problems.append(Violation(str(column), t, f"{count} values outside the plausible range "
                                          f"{low:g}-{high:g} (declare another range if this population needs one)"))
    return problems


def check_ipd(frame: pd.DataFrame, *, source: str | None = None,
              ranges: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Raise the first contract violation as a one-line `DataError`; return the frame with canonical dtypes."""
    problems = validate_ipd(frame, ranges=ranges)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(first.message + more, file=source, trial=first.trial, column=first.column)
    out = frame.copy()
    if ranges:
        out.attrs[RANGES_ATTR] = {**(frame.attrs.get(RANGES_ATTR) or {}),
                                  **{str(k): [float(v) for v in bounds] for k, bounds in ranges.items()}}
    out["trial_id"] = id_text(out["trial_id"]).astype(str)
    out["participant_id"] = id_text(out["participant_id"]).astype(str)  # 12001.0 -> "12001", never "12001.0"
    out["arm"] = pd.to_numeric(out["arm"]).astype(int)
    out["control_type"] = out["control_type"].astype("object").where(out["arm"] == 0, None)
    return out
