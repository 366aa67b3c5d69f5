"""The consortium spec: how each trial's raw file maps onto the harmonised IPD table.

A spec is YAML validated by pydantic with extra keys forbidden, so a typo is an error, not a silently ignored key.
Every error is one line naming the spec file, the trial and the dotted key, e.g.

    file consortium.yaml, trial T03: key instruments.distress.w12.instrument: unknown instrument 'PHQ10'

Checks that need the instrument registry (known instruments, item counts, constructs) or several keys at once
(time points declared, one follow-up per window) run after the field-level validation, in `_check_semantics`. The
pydantic models (the field-level schema), `label_key` and `confined_path` are in `spec_models`, re-exported here.

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

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mbi_predict.data.instruments import load_registry
from mbi_predict.data.schema import CONSTRUCTS, CORE_COLUMNS, OUTCOME_RE, SNAKE_RE, STUDY_TRAITS
from mbi_predict.data.spec_models import (BASELINE, FORMATS, ROLES, STANDARDISATIONS, ConsortiumSpec,  # noqa: F401
                                          Measure, Traits, TrialSpec, Windows, confined_path, label_key)
from mbi_predict.errors import SpecError
from mbi_predict.io import parse_yaml


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

