"""The consortium spec's schema: pydantic models of what a spec may say, validated field by field.

Extra keys are forbidden, so a typo is an error, not a silently ignored key. The checks that need the instrument
registry or several keys at once, and the loading, are in `spec` (the module to import: it re-exports every name
here); the spec's format is described, with an example, in that module's docstring.

Also here: `label_key`, the canonical text of a raw label (the spec's arm and recode keys, the readers' missing codes
and the harmoniser's recodes all compare labels through it), and `confined_path`, the one place a spec's input paths
are resolved (kept inside the spec's folder).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from mbi_predict.data.instruments import Instrument
from mbi_predict.data.schema import STUDY_TRAIT_LEVELS, parse_number
from mbi_predict.errors import SpecError

FORMATS = ("csv", "tsv", "sav", "dta", "xlsx", "parquet")
ROLES = ("mbi", "passive", "active")
STANDARDISATIONS = ("within_trial", "norm")
BASELINE = "baseline"


def label_key(value: Any) -> str:
    """The canonical text of a raw label, so `1`, `1.0` and `"1"` (CSV, SPSS, YAML) name the same category.

    Integral numbers (below 2**53, where floats are exact) become their integer text; other text is stripped.
    """
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return str(int(number)) if _exact_integer(number) else str(number)
    text = str(value).strip()
    number = parse_number(text)
    if number is None:
        return text
    return str(int(number)) if _exact_integer(number) else text


def _exact_integer(number: float) -> bool:
    return math.isfinite(number) and number == int(number) and abs(number) < 2**53


def _string_keys(value: Any) -> Any:
    return {label_key(k): v for k, v in value.items()} if isinstance(value, dict) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measure(_Strict):
    """One instrument at one time point: either a total column or the item columns (template with `{i}` allowed)."""

    instrument: str
    total: str | None = None
    items: list[str] | str | None = None
    reverse_items: list[int] | None = None  # overrides the registry's reverse-keyed items for this trial's form

    @model_validator(mode="after")
    def _total_or_items(self) -> "Measure":
        if (self.total is None) == (self.items is None):
            raise ValueError("give exactly one of `total` or `items`")
        if isinstance(self.items, str) and "{i}" not in self.items:
            raise ValueError("an item template needs `{i}`, e.g. phq_{i}_t0")
        if self.reverse_items is not None and self.items is None:
            raise ValueError("reverse_items only applies to item-level data")
        return self

    def item_columns(self, n_items: int) -> list[str]:
        if isinstance(self.items, str):
            return [self.items.format(i=i) for i in range(1, n_items + 1)]
        return list(self.items or [])

    def source_columns(self, n_items: int) -> list[str]:
        return [self.total] if self.total is not None else self.item_columns(n_items)


class Windows(_Strict):
    """Upper bounds (inclusive, weeks after the end of the programme) of the `post` and `fu1_6` windows."""

    post_max_weeks: float = Field(4.0, ge=0)
    fu1_6_max_weeks: float = Field(26.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Windows":
        if self.fu1_6_max_weeks <= self.post_max_weeks:
            raise ValueError("fu1_6_max_weeks must exceed post_max_weeks")
        return self

    def assign(self, weeks: float) -> str:
        """The outcome window of a follow-up held `weeks` after the end of the programme."""
        if not math.isfinite(weeks) or weeks < 0:
            raise ValueError(f"follow-up at {weeks} weeks: must be 0 or more weeks after the end of the programme")
        if weeks <= self.post_max_weeks:
            return "post"
        return "fu1_6" if weeks <= self.fu1_6_max_weeks else "fu6plus"


class Traits(_Strict):
    mbi_type: str
    n_sessions: int = Field(gt=0)
    delivery: Literal[STUDY_TRAIT_LEVELS["delivery"]]  # type: ignore[valid-type]
    setting: Literal[STUDY_TRAIT_LEVELS["setting"]]  # type: ignore[valid-type]
    country: str


class TrialSpec(_Strict):
    """How one trial's raw file maps onto the harmonised table."""

    file: str
    format: Literal[FORMATS] | None = None  # type: ignore[valid-type]  # default: from the file's suffix
    sheet: str | int | None = None
    missing_codes: list[int | float | str] = []
    columns: dict[str, str]  # harmonised name -> raw column name
    arms: dict[str, Literal[ROLES]]  # type: ignore[valid-type]  # raw arm label -> mbi / passive / active
    recodes: dict[str, dict[str, str | None]] = {}  # harmonised column -> {raw label: harmonised value}
    followups: dict[str, float] = {}  # follow-up label -> weeks after the end of the programme
    instruments: dict[str, dict[str, Measure]] = {}  # construct -> time point (baseline or follow-up) -> measure
    traits: Traits

    @field_validator("arms", mode="before")
    @classmethod
    def _arm_keys(cls, value: Any) -> Any:
        return _string_keys(value)

    @field_validator("recodes", mode="before")
    @classmethod
    def _recode_keys(cls, value: Any) -> Any:
        return {k: _string_keys(v) for k, v in value.items()} if isinstance(value, dict) else value

    def missing_labels(self) -> set[str]:
        return {label_key(code) for code in self.missing_codes}

    def file_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.file).suffix.lower().lstrip(".")
        return {"txt": "tsv", "xls": "xlsx", "pq": "parquet"}.get(suffix, suffix)


class ConsortiumSpec(_Strict):
    """The whole consortium: declared analysis choices plus one `TrialSpec` per trial."""

    name: str = "consortium"
    standardisation: Literal[STANDARDISATIONS] = "within_trial"  # type: ignore[valid-type]
    out_of_range: Literal["error", "set_missing"] = "error"
    prorate_min_share: float = Field(0.8, gt=0, le=1)
    windows: Windows = Windows()
    registry: str | None = None  # extra instrument registry YAML, relative to the spec
    plausible_ranges: dict[str, tuple[float, float]] = {}  # column -> (low, high); overrides schema.PLAUSIBLE_RANGES
    min_cell_size: int = Field(10, ge=1)  # the report shows no distribution of fewer participants than this
    trials: dict[str, TrialSpec]

    _path: Path | None = PrivateAttr(default=None)
    _source: str = PrivateAttr(default="<spec>")
    _instruments: dict[str, Instrument] = PrivateAttr(default_factory=dict)

    @field_validator("trials", mode="before")
    @classmethod
    def _trial_keys(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("plausible_ranges")
    @classmethod
    def _ordered_ranges(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for column, (low, high) in value.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"{column}: give a finite [low, high] with low < high")
        return value

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def source(self) -> str:
        """How errors name the spec file: the path as the user gave it."""
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path is not None else Path.cwd()

    @property
    def instruments(self) -> dict[str, Instrument]:
        return self._instruments

    def trial_file(self, trial_id: str) -> Path:
        return confined_path(self.base_dir, self.trials[trial_id].file, source=self.source, trial=trial_id,
                             key="file")

    def followup_windows(self, trial_id: str) -> dict[str, str]:
        """Follow-up label -> window, by the declared window rule."""
        return {label: self.windows.assign(weeks) for label, weeks in self.trials[trial_id].followups.items()}


def confined_path(base_dir: Path, relative: str, *, source: str, key: str, trial: str | None = None) -> Path:
    """`relative` inside the spec's folder, or a one-line `SpecError` naming the key (never the file's content).

    The one place input paths of a spec are resolved: a relative path, resolved with symlinks followed, must stay
    inside the folder of the spec (`..` out of it, an absolute path or a symlink pointing out are refused), so a
    spec shared with a consortium cannot make the tool read, and echo in its errors, any other file of the machine.
    """
    text = str(relative).strip()
    if not text or "\x00" in text:
        raise SpecError(f"key {key}: empty or invalid path", file=source, trial=trial)
    candidate = Path(text)
    base = Path(base_dir).resolve()
    if candidate.is_absolute():
        raise SpecError(f"key {key}: must be a path relative to the spec's folder, not an absolute path",
                        file=source, trial=trial)
    if not (base / candidate).resolve().is_relative_to(base):
        raise SpecError(f"key {key}: must name a file inside the spec's folder (through `..` or a symlink it "
                        "points outside)", file=source, trial=trial)
    return Path(base_dir) / candidate  # as the user spelled it (messages and metadata), checked above
