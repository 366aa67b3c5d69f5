"""A simulated consortium as raw trial files, each in its own instruments, codings, formats and schedule.

`simulate_latent` gives every participant's standardised scores and true effects; this module turns each trial into
what a data manager would actually receive: one file per trial (CSV, TSV, SPSS, Stata, Excel, parquet), its own column
names, arm and covariate codings (value labels in SPSS/Stata), its own missing-value codes, instruments given as totals
or as items (with reverse-keyed items stored as on the form), and its own follow-up schedule in weeks (the teams'
habits are the profiles of `rawsim_profiles`). It also writes `consortium.yaml`, the spec that harmonises them, the
truth table and the scenario's parameters.

Raw scores: total = round(norm_mean + orientation * z * norm_sd), clipped to the instrument's range; item-level trials
get integer items that sum to that total, then a few items go missing at random (so prorating is exercised), and
reverse-keyed items are stored mirrored. Scores are integers, like real questionnaires.

`simulate_ipd` computes the harmonised table the spec should produce, from those same raw integers but with its own
short arithmetic (not `harmonise.py`'s), which is what makes "simulate then harmonise reproduces simulate_ipd" a test
of the harmoniser rather than a tautology.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mbi_predict import io
from mbi_predict.data.instruments import Instrument, default_registry
from mbi_predict.data.rawsim_profiles import PROFILES, SPSS_ARM_NAMES, Profile
from mbi_predict.data.schema import WINDOWS
from mbi_predict.data.simulate import LatentConsortium, simulate_latent

ITEM_MISSING_RATE = 0.03  # share of single items skipped by participants who answered the questionnaire
PRORATE_MIN_SHARE = 0.8


@dataclass
class _MeasureData:
    """One instrument at one time point as stored in the raw file."""

    construct: str
    timepoint: str  # "baseline" or the follow-up label
    window: str | None
    instrument: Instrument
    level: str
    columns: list[str]
    stored: np.ndarray  # participants x columns, floats holding integers, NaN = missing


@dataclass
class _TrialRaw:
    trial_id: str
    profile: Profile
    frame: pd.DataFrame  # the raw file's content, NaN/None where missing (codes are substituted on writing)
    value_labels: dict[str, dict[Any, str]]
    spec: dict[str, Any]
    measures: list[_MeasureData] = field(default_factory=list)
    harmonised_ids: list[str] = field(default_factory=list)


def _stem(instrument: str, style: str) -> str:
    stem = "".join(ch for ch in instrument if ch.isalnum())
    return stem.upper() if style == "upper" else stem.lower()


def _column(stem: str, tp: str, style: str, item: int | str | None = None) -> str:
    middle = "" if item is None else f"_{item}"
    return f"{stem}{middle}_{tp.upper() if style == 'upper' else tp}"


def _raw_total(z: np.ndarray, instrument: Instrument, construct: str) -> np.ndarray:
    """Latent z -> integer raw total on the instrument, clipped to its range (NaN stays NaN)."""
    raw = instrument.norm_mean + instrument.orientation(construct) * z * instrument.norm_sd
    return np.where(np.isfinite(raw), np.clip(np.round(raw), instrument.total_min, instrument.total_max), np.nan)


def _split_into_items(rng: np.random.Generator, totals: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Integer items in [item_min, item_max] summing exactly to each total: the points above the floor are dealt
    to uniformly chosen free slots (each item has item_max - item_min slots)."""
    n, k, width = len(totals), instrument.items, instrument.item_max - instrument.item_min
    above_floor = np.nan_to_num(totals - k * instrument.item_min).astype(int)
    keys = rng.random((n, k * width))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    chosen = ranks < above_floor[:, None]
    items = instrument.item_min + chosen.reshape(n, k, width).sum(axis=2).astype(float)
    items[~np.isfinite(totals)] = np.nan
    return items


def _coded(values: pd.Series) -> pd.Series:
    """Numeric codes as floats (NaN = missing), text labels as objects (None = missing)."""
    present = values.dropna()
    if len(present) and all(isinstance(v, (int, float, np.integer)) for v in present):
        return pd.to_numeric(values, errors="raise").astype(float)
    return values.astype(object).where(values.notna(), None)


def _schedule(profile: Profile, has_fu6plus: bool) -> dict[str, tuple[str, float]]:
    """Latent window -> (follow-up label, weeks after the end of the programme)."""
    windows = WINDOWS if has_fu6plus else WINDOWS[:2]
    out = {}
    for window, weeks in zip(windows, profile.schedule):
        label = "post" if window == "post" else f"fu{int(weeks)}w"
        out[window] = (label if profile.style == "snake" else f"t{len(out) + 1}", weeks)
    return out


def _build_trial(rng: np.random.Generator, latent: LatentConsortium, design: pd.Series,
                 profile: Profile) -> _TrialRaw:
    trial_id = str(design["trial_id"])
    people = latent.ipd[latent.ipd["trial_id"] == trial_id].reset_index(drop=True)
    registry = default_registry()
    upper = profile.style == "upper"
    labelled = profile.fmt in ("sav", "dta")
    names = {"participant_id": "ID" if upper else "pid", "arm": "GROUP" if upper else "arm_label",
             "age": "AGE" if upper else "age_years", "gender": "SEX" if upper else "gender",
             "education": "EDUC" if upper else "education_level"}
    frame: dict[str, Any] = {}  # column -> values; one DataFrame at the end (inserting ~100 columns fragments it)
    ids = (np.arange(1, len(people) + 1) + 1000 * int(trial_id[1:]) if profile.integer_ids
           else people["participant_id"].to_numpy())
    frame[names["participant_id"]] = pd.Series(ids, index=people.index)
    mbi, passive, active = profile.arm_labels
    roles = np.where(people["arm"] == 1, "mbi", people["control_type"].astype(object).to_numpy())
    frame[names["arm"]] = pd.Series([{"mbi": mbi, "passive": passive, "active": active}[r] for r in roles],
                                    index=people.index)
    frame[names["age"]] = people["age"]
    frame[names["gender"]] = _coded(people["gender"].map(lambda v: profile.gender.get(v)))
    frame[names["education"]] = _coded(people["education"].map(lambda v: profile.education.get(v)))

    controls = list(design["controls"])
    arm_roles = {"mbi": mbi, **{c: {"passive": passive, "active": active}[c] for c in controls}}
    value_labels: dict[str, dict[Any, str]] = {}
    if labelled:
        # SPSS/Stata teams store codes and attach labels; the spec then names the labels it will read back
        value_labels[names["arm"]] = {code: text for code, text in zip(profile.arm_labels, SPSS_ARM_NAMES)
                                      if code in arm_roles.values()}
        value_labels[names["gender"]] = {code: level.capitalize() for level, code in profile.gender.items()}
        value_labels[names["education"]] = {code: level.replace("_", " ").capitalize()
                                             for level, code in profile.education.items()}

    def spelled(column: str, code: Any) -> Any:
        return value_labels[column][code] if column in value_labels else code

    schedule = _schedule(profile, bool(design["has_fu6plus"]))
    baseline_label = "T0" if upper else "t0"
    measures: list[_MeasureData] = []
    instruments_spec: dict[str, dict[str, Any]] = {}
    for construct, (name, level) in profile.instruments.items():
        if construct == "mindfulness" and not bool(design["measures_mindfulness"]):
            continue
        instrument = registry[name]
        stem = _stem(name, profile.style)
        timepoints = [("baseline", baseline_label, None, f"baseline_{construct}")]
        if construct != "mindfulness":
            timepoints += [(label, label, window, f"{construct}_{window}") for window, (label, _w) in schedule.items()]
        per_construct: dict[str, Any] = {}
        for timepoint, tp_label, window, latent_column in timepoints:
            totals = _raw_total(people[latent_column].to_numpy(dtype=float), instrument, construct)
            if level == "total":
                column = _column(stem, tp_label, profile.style)
                stored, columns = totals[:, None], [column]
                per_construct[timepoint] = {"instrument": name, "total": column}
            else:
                scored = _split_into_items(rng, totals, instrument)
                skipped = rng.random(scored.shape) < ITEM_MISSING_RATE
                scored[skipped] = np.nan
                stored = scored.copy()
                for item in instrument.reverse_items:  # stored as on the form: reverse-keyed items mirrored
                    stored[:, item - 1] = instrument.item_min + instrument.item_max - stored[:, item - 1]
                columns = [_column(stem, tp_label, profile.style, i) for i in range(1, instrument.items + 1)]
                if labelled:  # as in real SPSS/Stata files, the response anchors carry labels; scores are codes
                    value_labels.update({c: {instrument.item_min: "Not at all", instrument.item_max: "Very much"}
                                         for c in columns})
                per_construct[timepoint] = {"instrument": name,
                                            "items": _column(stem, tp_label, profile.style, "{i}")}
            for j, column in enumerate(columns):
                frame[column] = pd.Series(stored[:, j], index=people.index)
            measures.append(_MeasureData(construct, timepoint, window, instrument, level, columns, stored))
        instruments_spec[construct] = per_construct

    missing_codes = [] if profile.missing is None else [profile.missing]
    trial_spec: dict[str, Any] = {
        "file": f"raw/{trial_id}.{profile.fmt}",
        "format": profile.fmt,
        "missing_codes": missing_codes,
        "columns": names,
        "arms": {spelled(names["arm"], code): role for role, code in arm_roles.items()},
        "recodes": {
            "gender": {spelled(names["gender"], code): level for level, code in profile.gender.items()},
            "education": {spelled(names["education"], code): level for level, code in profile.education.items()},
        },
        "followups": {label: weeks for _window, (label, weeks) in schedule.items()},
        "instruments": instruments_spec,
        "traits": {trait: (int(design[trait]) if trait == "n_sessions" else str(design[trait]))
                   for trait in ("mbi_type", "n_sessions", "delivery", "setting", "country")},
    }
    harmonised_ids = [str(v) for v in ids]
    return _TrialRaw(trial_id, profile, pd.DataFrame(frame, index=people.index), value_labels, trial_spec, measures, harmonised_ids)


def build_raw_trials(latent: LatentConsortium) -> list[_TrialRaw]:
    """Every trial's raw content and spec, in memory (deterministic given the latent consortium's seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([latent.seed, len(latent.trials), len(latent.ipd), 77]))
    return [_build_trial(rng, latent, design, PROFILES[j % len(PROFILES)])
            for j, (_, design) in enumerate(latent.trials.iterrows())]


def consortium_spec(trials: list[_TrialRaw], *, name: str, standardisation: str) -> dict[str, Any]:
    return {
        "name": name,
        "standardisation": standardisation,
        "out_of_range": "error",
        "prorate_min_share": PRORATE_MIN_SHARE,
        "windows": {"post_max_weeks": 4, "fu1_6_max_weeks": 26},
        "trials": {t.trial_id: t.spec for t in trials},
    }


# --- writing ----------------------------------------------------------------------------------------------------------
def _with_missing_code(frame: pd.DataFrame, code: Any, fmt: str) -> pd.DataFrame:
    """Integers as integers, missing cells as the trial's code (or empty)."""
    out: dict[str, pd.Series] = {}
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values.dtype)
        if numeric and np.all(np.mod(values.dropna(), 1) == 0):
            values = values.astype("Int64")
        if code is None or not values.isna().any():
            out[column] = values
        elif not numeric:
            out[column] = values.astype(object).where(values.notna(), str(code))  # a text column holds text codes
        elif isinstance(code, str):
            out[column] = values.astype(object).where(values.notna(), code)
        else:
            out[column] = values.fillna(code)
    return pd.DataFrame(out, index=frame.index)


def _write_trial(trial: _TrialRaw, path: Path) -> None:
    profile = trial.profile
    frame = _with_missing_code(trial.frame, profile.missing, profile.fmt)
    with io.atomic_path(path) as tmp:
        if profile.fmt in ("csv", "tsv"):
            frame.to_csv(tmp, sep="," if profile.fmt == "csv" else "\t", index=False, lineterminator="\n")
        elif profile.fmt == "xlsx":
            frame.to_excel(tmp, index=False, engine="openpyxl")
        elif profile.fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            import pyreadstat

            numeric = frame.apply(lambda s: s.astype(float) if str(s.dtype) == "Int64" else s)
            writer = pyreadstat.write_sav if profile.fmt == "sav" else pyreadstat.write_dta
            writer(numeric, str(tmp), variable_value_labels=trial.value_labels)


def simulate_consortium_files(out_dir: str | os.PathLike[str], *, scenario: str = "galante2023", seed: int = 2023,
                              n_trials: int = 13, n: int = 2371, standardisation: str = "within_trial") -> Path:
    """Write a simulated consortium's raw trial files, `consortium.yaml`, `truth.parquet` and `scenario.json`.

    Returns the path of `consortium.yaml`. Deterministic for a given (scenario, seed, n_trials, n): text files are
    byte-identical across runs, binary formats hold identical values.
    """
    out_dir = Path(out_dir)
    latent = simulate_latent(scenario, seed=seed, n_trials=n_trials, n=n)
    trials = build_raw_trials(latent)
    for trial in trials:
        _write_trial(trial, out_dir / trial.spec["file"])
    spec = consortium_spec(trials, name=f"simulated {scenario} (seed {seed})", standardisation=standardisation)
    spec_path = io.write_text_atomic(out_dir / "consortium.yaml",
                                     "# Generated by mbi_predict.data.rawsim: maps each raw trial file onto the "
                                     "harmonised IPD table.\n"
                                     + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120))
    io.write_parquet_atomic(out_dir / "truth.parquet", _truth(latent, trials), index=False)
    params = latent.params()
    params["trials"] = latent.trials.assign(controls=latent.trials["controls"].map(list)).to_dict(orient="records")
    io.write_json_atomic(out_dir / "scenario.json", params)
    return spec_path


def _truth(latent: LatentConsortium, trials: list[_TrialRaw]) -> pd.DataFrame:
    """The latent truth table keyed by the participant ids the harmonised table will carry."""
    truth = latent.truth.copy()
    harmonised = np.concatenate([t.harmonised_ids for t in trials]) if trials else np.array([], dtype=str)
    truth.insert(2, "latent_participant_id", truth["participant_id"])
    truth["participant_id"] = harmonised
    return truth


# --- the expected harmonised table, computed independently of harmonise.py ------------------------------------------
def simulate_ipd(scenario: str = "galante2023", *, seed: int = 2023, n_trials: int = 13, n: int = 2371,
                 standardisation: str = "within_trial") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The harmonised IPD table that harmonising `simulate_consortium_files(...)` must produce, and the truth table.

    Scores are computed from the simulated raw integers with this function's own arithmetic: prorated item sums
    (at least 80% of items), within-trial or norm z-scores, and Jacobson-Truax flags whose SD follows the method.
    """
    if standardisation not in ("within_trial", "norm"):
        raise ValueError("standardisation must be 'within_trial' or 'norm'")
    latent = simulate_latent(scenario, seed=seed, n_trials=n_trials, n=n)
    trials = build_raw_trials(latent)
    parts = [_expected_trial(latent, trial, standardisation) for trial in trials]
    ipd = pd.concat(parts, ignore_index=True)
    return ipd, _truth(latent, trials)


def _expected_total(measure: _MeasureData) -> np.ndarray:
    if measure.level == "total":
        return measure.stored[:, 0].astype(float)
    inst = measure.instrument
    items = measure.stored.copy()
    for item in inst.reverse_items:
        items[:, item - 1] = inst.item_min + inst.item_max - items[:, item - 1]
    answered = np.sum(~np.isnan(items), axis=1)
    needed = math.ceil(PRORATE_MIN_SHARE * inst.items - 1e-9)
    total = np.nansum(items, axis=1) * inst.items / np.where(answered > 0, answered, 1)
    return np.where(answered >= max(needed, 1), total, np.nan)


def _expected_trial(latent: LatentConsortium, trial: _TrialRaw, method: str) -> pd.DataFrame:
    people = latent.ipd[latent.ipd["trial_id"] == trial.trial_id].reset_index(drop=True)
    out = pd.DataFrame({"trial_id": trial.trial_id, "participant_id": trial.harmonised_ids,
                        "arm": people["arm"].astype(int), "control_type": people["control_type"].astype(object)})
    out["control_type"] = out["control_type"].where(out["arm"] == 0, None)
    out["age"] = people["age"].astype(float)
    out["gender"] = people["gender"].astype(object)
    out["education"] = people["education"].astype(object).where(people["education"].notna(), None)
    baseline_stats: dict[str, tuple[np.ndarray, float, float]] = {}
    for m in trial.measures:
        total = _expected_total(m)
        if m.timepoint == "baseline":
            if method == "within_trial":
                present = total[~np.isnan(total)]
                mean, sd = present.mean(), present.std(ddof=1)
            else:
                mean, sd = m.instrument.norm_mean, m.instrument.norm_sd
            baseline_stats[m.construct] = (total, mean, sd)
            column = f"baseline_{m.construct}"
        else:
            column = f"{m.construct}_{m.window}"
        base_total, mean, sd = baseline_stats[m.construct]
        sign = 1.0 if m.instrument.orientation(m.construct) > 0 else -1.0
        out[column] = sign * (total - mean) / sd
        out[f"{column}_raw"] = total
        if m.timepoint != "baseline":
            change = (total - base_total) / (np.sqrt(2.0) * sd * np.sqrt(1.0 - m.instrument.reliability))
            worse = change > 1.96 if m.instrument.higher_is_worse else change < -1.96
            out[f"deteriorated_{m.construct}_{m.window}"] = np.where(np.isnan(change), np.nan, worse * 1.0)
    for trait in ("mbi_type", "n_sessions", "delivery", "setting", "country"):
        out[trait] = trial.spec["traits"][trait]
    return out
