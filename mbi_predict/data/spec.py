"""The consortium spec: how each trial's raw file maps onto the harmonised IPD table.

A spec is YAML validated by pydantic with extra keys forbidden, so a typo is an error, not a silently ignored key.
Every error is one line naming the spec file, the trial and the dotted key, e.g.

    file consortium.yaml, trial T03: key instruments.distress.w12.instrument: unknown instrument 'PHQ10'

Checks that need the instrument registry (known instruments, item counts, constructs) or several keys at once
(time points declared, one follow-up per window) run after the field-level validation, in `_check_semantics`.

A short example (paths are relative to the spec file and must stay inside its folder: no `..` out of it, no absolute
path, no symlink pointing out; every key below except `trials` has a default or is optional):

    name: my consortium
    standardisation: within_trial      # or norm
    out_of_range: error                # or set_missing (counted in the metadata and report)
    prorate_min_share: 0.8             # prorate a total when at least 80% of its items are present
    windows: {post_max_weeks: 4, fu1_6_max_weeks: 26}
    registry: my_instruments.yaml      # optional: instruments beyond the shipped registry (inside the spec's folder)
    plausible_ranges: {age: [16, 99]}  # optional: per-column plausible range (default age 10-110)
    min_cell_size: 10                  # the report shows no distribution of fewer participants
    trials:
      T01:
        file: raw/T01.sav              # format from the suffix, or `format:` csv|tsv|sav|dta|xlsx|parquet
        missing_codes: [-99, 999, "NA", " "]
        columns: {participant_id: ID, arm: GROUP, age: AGE, gender: SEX}    # harmonised name: raw column
        arms: {"MBSR": mbi, "Wait list": passive, "Exercise": active}       # per label: mbi, passive or active
        recodes: {gender: {Female: female, Male: male, 3: other}}
        followups: {post: 0, w12: 12, w52: 52}                              # label: weeks after the programme
        instruments:
          depression:
            baseline: {instrument: PHQ-9, items: "PHQ9_{i}_T0"}           # or a list of 9 columns
            w12: {instrument: PHQ-9, total: PHQ9_T2}
        traits: {mbi_type: MBSR, n_sessions: 8, delivery: group_in_person, setting: community, country: UK}

Window rule (configurable under `windows:`): a follow-up `weeks` after the end of the programme is `post` if
weeks <= post_max_weeks (default 4), `fu1_6` if weeks <= fu1_6_max_weeks (default 26, about six months) and
`fu6plus` beyond. Negative weeks (mid-programme assessments) are rejected: they are not an outcome of the programme.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from mbi_predict.io import parse_yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from mbi_predict.data.instruments import Instrument, load_registry
from mbi_predict.data.schema import (CONSTRUCTS, CORE_COLUMNS, OUTCOME_RE, SNAKE_RE, STUDY_TRAIT_LEVELS,
                                     STUDY_TRAITS, parse_number)
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


def load_spec(path: str | Path) -> ConsortiumSpec:
    """Read, validate and check a consortium spec; every problem is a one-line `SpecError`."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec: {getattr(exc, 'strerror', None) or exc}", file=source) from None
    data = parse_yaml(text, source=source, error=SpecError)
    return spec_from_dict(data, source=source, path=path)


def spec_from_dict(data: Any, *, source: str = "<spec>", path: Path | None = None) -> ConsortiumSpec:
    if not isinstance(data, dict):
        raise SpecError("a consortium spec must be a mapping with a `trials:` key", file=source)
    try:
        spec = ConsortiumSpec.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, source) from None
    spec._path, spec._source = path, source
    registry_path = None
    if spec.registry is not None:
        registry_path = confined_path(spec.base_dir, spec.registry, source=source, key="registry")
    spec._instruments = load_registry(registry_path)
    _check_semantics(spec, source)
    return spec


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


def input_paths(spec: ConsortiumSpec) -> list[Path]:
    """Every file harmonising `spec` reads: the spec itself, its registry, the trials' raw files."""
    paths = [spec.path] if spec.path is not None else []
    if spec.registry is not None:
        paths.append(confined_path(spec.base_dir, spec.registry, source=spec.source, key="registry"))
    return paths + [spec.trial_file(trial_id) for trial_id in spec.trials]


def _spec_error(exc: ValidationError, source: str) -> SpecError:
    detail = exc.errors()[0]
    # drop pydantic's union-branch tags (e.g. 'list[str]', 'function-after[...]') from the location
    loc = [str(p) for p in detail["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float")))]
    trial = None
    if len(loc) >= 2 and loc[0] == "trials":
        trial, loc = loc[1], loc[2:]
    msg = str(detail["msg"]).removeprefix("Value error, ")
    if detail["type"] in ("literal_error", "enum") and "input" in detail:
        msg = f"{msg}, got {detail['input']!r}"
    key = ".".join(loc)
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return SpecError(f"key {key}: {msg}{more}" if key else msg + more, file=source, trial=trial)


def _fail(source: str, trial: str, key: str, message: str) -> SpecError:
    return SpecError(f"key {key}: {message}", file=source, trial=trial)


def _check_semantics(spec: ConsortiumSpec, source: str) -> None:
    """Checks across keys and against the registry, each naming the trial and key at fault."""
    if not spec.trials:
        raise SpecError("key trials: the spec lists no trials", file=source)
    reserved = set(CORE_COLUMNS) - {"participant_id", "arm"}
    for trial_id, trial in spec.trials.items():
        if not trial_id.strip():
            raise SpecError("key trials: empty trial id", file=source)
        spec.trial_file(trial_id)  # confined to the spec's folder
        fmt = trial.file_format()
        if fmt not in FORMATS:
            raise _fail(source, trial_id, "format", f"cannot infer the format of {trial.file!r}; "
                        f"declare format as one of {', '.join(FORMATS)}")
        for required in ("participant_id", "arm"):
            if required not in trial.columns:
                raise _fail(source, trial_id, f"columns.{required}", "required mapping is missing")
        for name in trial.columns:
            if (not SNAKE_RE.match(name) or name in reserved or name.startswith(("baseline_", "deteriorated_"))
                    or OUTCOME_RE.match(name) or name in STUDY_TRAITS or name.endswith("_raw")):
                raise _fail(source, trial_id, f"columns.{name}",
                            "not an allowed covariate name (snake_case, not a core, score, outcome or trait column)")
        for name in trial.recodes:
            if name not in trial.columns or name in ("participant_id", "arm"):
                raise _fail(source, trial_id, f"recodes.{name}", "recodes apply to mapped covariate columns only")
        roles = set(trial.arms.values())
        if "mbi" not in roles or not roles & {"passive", "active"}:
            raise _fail(source, trial_id, "arms", "a trial needs an `mbi` arm and at least one control arm "
                        "(`passive` or `active`)")
        windows_used: dict[str, str] = {}
        for label, weeks in trial.followups.items():
            if label == BASELINE:
                raise _fail(source, trial_id, f"followups.{label}", "`baseline` is not a follow-up")
            try:
                window = spec.windows.assign(weeks)
            except ValueError as exc:
                raise _fail(source, trial_id, f"followups.{label}", str(exc)) from None
            if window in windows_used:
                raise _fail(source, trial_id, f"followups.{label}",
                            f"falls in window {window} like follow-up {windows_used[window]!r}; "
                            "keep one follow-up per window")
            windows_used[window] = label
        for construct, timepoints in trial.instruments.items():
            if construct not in CONSTRUCTS:
                raise _fail(source, trial_id, f"instruments.{construct}",
                            f"unknown construct; use one of {', '.join(CONSTRUCTS)}")
            for timepoint, measure in timepoints.items():
                key = f"instruments.{construct}.{timepoint}"
                if timepoint != BASELINE and timepoint not in trial.followups:
                    raise _fail(source, trial_id, key, "time point is neither `baseline` nor a declared follow-up "
                                f"({', '.join(trial.followups) or 'none declared'})")
                _check_measure(spec, source, trial_id, key, construct, measure)
    check_standardisation(spec, spec.standardisation)


def check_standardisation(spec: ConsortiumSpec, method: str) -> None:
    """Raise a `SpecError` if `method` cannot be applied to every trial of the spec."""
    source = spec.source
    if method not in STANDARDISATIONS:
        raise SpecError(f"key standardisation: {method!r} is not one of {', '.join(STANDARDISATIONS)}", file=source)
    if method == "within_trial":
        for trial_id, trial in spec.trials.items():
            _check_within_trial_baselines(source, trial_id, trial)


def _check_measure(spec: ConsortiumSpec, source: str, trial_id: str, key: str, construct: str,
                   measure: Measure) -> None:
    instrument = spec.instruments.get(measure.instrument)
    if instrument is None:
        raise _fail(source, trial_id, f"{key}.instrument", f"unknown instrument {measure.instrument!r}")
    if instrument.construct != construct:
        raise _fail(source, trial_id, f"{key}.instrument",
                    f"{measure.instrument} measures {instrument.construct}, not {construct}")
    if isinstance(measure.items, list) and len(measure.items) != instrument.items:
        raise _fail(source, trial_id, f"{key}.items",
                    f"{measure.instrument} has {instrument.items} items, {len(measure.items)} columns given")
    if measure.reverse_items is not None:
        bad = [k for k in measure.reverse_items if not 1 <= k <= instrument.items]
        if bad:
            raise _fail(source, trial_id, f"{key}.reverse_items", f"items {bad} outside 1..{instrument.items}")


def _check_within_trial_baselines(source: str, trial_id: str, trial: TrialSpec) -> None:
    """Within-trial z-scores divide by the trial's baseline SD on the same instrument, so it must be measured."""
    for construct, timepoints in trial.instruments.items():
        base = timepoints.get(BASELINE)
        for timepoint, measure in timepoints.items():
            if timepoint != BASELINE and (base is None or base.instrument != measure.instrument):
                raise _fail(source, trial_id, f"instruments.{construct}.{timepoint}.instrument",
                            f"within_trial standardisation needs a baseline on {measure.instrument} in this trial")

