"""Raw trial files + consortium spec -> the harmonised IPD table (shared/DATA_MODEL.md).

For each trial: read the file (never modified), blank out its declared missing-value codes, map ids, arms and
covariates, score every instrument at every time point (reverse keying, prorating, range policy), put the scores on
the declared standardised scale, flag reliable deterioration, and attach the study-level traits. Every randomised row
is kept (intention to treat). Anything the data cannot support is a one-line `DataError` naming file, trial and column.

Columns produced: `baseline_{construct}` and `{construct}_{window}` (standardised), each with its `_raw` total beside
it, and `deteriorated_{construct}_{window}` wherever baseline and follow-up use the same instrument (the reliable
change index needs one reliability and one scale). Note for downstream code: `{construct}_{window}_raw` and the
deterioration flags are outcomes too, never predictors.

The arithmetic is in `scoring.py`; this module only locates, validates and assembles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict import io
from mbi_predict.data import scoring
from mbi_predict.data.instruments import Instrument
from mbi_predict.data.missingness import missingness_table
from mbi_predict.data.readers import apply_value_labels, id_text, read_raw_coded, to_numbers
from mbi_predict.data.schema import (CATEGORY_LEVELS, CONSTRUCTS, CORE_COLUMNS, STUDY_TRAITS,
                                     WINDOWS, check_ipd, parse_number, plausible_ranges)
from mbi_predict.data.spec import BASELINE, ConsortiumSpec, Measure, TrialSpec, check_standardisation, label_key, \
    load_spec
from mbi_predict.errors import DataError

FORMAT_VERSION = 1


@dataclass
class HarmonisedData:
    """The harmonised table, how it was made (`metadata`, JSON-safe) and its missingness by trial and arm."""

    ipd: pd.DataFrame
    metadata: dict[str, Any]
    missingness: pd.DataFrame
    spec: ConsortiumSpec | None = field(default=None, repr=False)


def harmonise(spec_path: str | os.PathLike[str] | ConsortiumSpec, *,
              standardisation: str | None = None) -> HarmonisedData:
    """Harmonise every trial of a consortium spec into one IPD table valid under `check_ipd`.

    `standardisation` overrides the spec's declared method (`within_trial` or `norm`); the method used is recorded
    in the metadata either way.
    """
    spec = spec_path if isinstance(spec_path, ConsortiumSpec) else load_spec(spec_path)
    method = standardisation or spec.standardisation
    check_standardisation(spec, method)
    parts, trials_meta = [], {}
    for trial_id in spec.trials:
        part, meta = _TrialHarmoniser(spec, trial_id, method).run()
        parts.append(part)
        trials_meta[trial_id] = meta
    ipd = pd.concat(parts, ignore_index=True)
    ipd = ipd[canonical_order(ipd.columns)]
    ipd = check_ipd(ipd, source=spec.source, ranges=spec.plausible_ranges or None)
    metadata = {
        "format_version": FORMAT_VERSION,
        "consortium": spec.name,
        "spec_file": spec.source,
        "spec_sha256": io.sha256_file(spec.path) if spec.path is not None else None,
        "standardisation": method,
        "standardisation_rule": _STANDARDISATION_RULES[method],
        "out_of_range_policy": spec.out_of_range,
        "prorate_min_share": spec.prorate_min_share,
        "min_cell_size": spec.min_cell_size,
        "plausible_ranges": {k: list(v) for k, v in plausible_ranges(None, spec.plausible_ranges).items()},
        "window_rule": {"post_max_weeks": spec.windows.post_max_weeks,
                        "fu1_6_max_weeks": spec.windows.fu1_6_max_weeks,
                        "rule": "post: weeks <= post_max_weeks; fu1_6: <= fu1_6_max_weeks; fu6plus: beyond"},
        "rci": {"critical": scoring.RCI_CRITICAL,
                "sd": "trial's pooled baseline SD" if method == "within_trial" else "instrument's norm SD",
                "reliability": "instrument registry (internal consistency)"},
        "n_participants": int(len(ipd)),
        "n_trials": int(ipd["trial_id"].nunique()),
        "trials": trials_meta,
    }
    return HarmonisedData(ipd, io.json_safe(metadata), missingness_table(ipd), spec)


_STANDARDISATION_RULES = {
    "within_trial": "z = orientation * (raw - trial's pooled baseline mean) / trial's pooled baseline SD (ddof=1), "
                    "per instrument",
    "norm": "z = orientation * (raw - instrument norm mean) / instrument norm SD",
}


def canonical_order(columns: Any) -> list[str]:
    """Core, covariates, baselines, outcomes, harm flags, study traits, then `_raw` copies and anything else."""
    columns = list(columns)
    first = [c for c in CORE_COLUMNS if c in columns]
    covariates = [c for c in ("age", "gender", "education") if c in columns]
    baselines = [f"baseline_{c}" for c in CONSTRUCTS if f"baseline_{c}" in columns]
    outcomes = [f"{c}_{w}" for c in CONSTRUCTS for w in WINDOWS if f"{c}_{w}" in columns]
    harms = [f"deteriorated_{c}_{w}" for c in CONSTRUCTS for w in WINDOWS if f"deteriorated_{c}_{w}" in columns]
    traits = [c for c in STUDY_TRAITS if c in columns]
    raws = [f"{c}_raw" for c in baselines + outcomes if f"{c}_raw" in columns]
    placed = set(first + covariates + baselines + outcomes + harms + traits + raws)
    other_covariates = [c for c in columns if c not in placed]
    return first + covariates + other_covariates + baselines + outcomes + harms + traits + raws


class _TrialHarmoniser:
    """Harmonises one trial; holds its context so every error can name file, trial and column."""

    def __init__(self, spec: ConsortiumSpec, trial_id: str, method: str) -> None:
        self.spec, self.trial_id, self.method = spec, trial_id, method
        self.trial: TrialSpec = spec.trials[trial_id]
        self.path = spec.trial_file(trial_id)
        self.file = str(self.path)
        self.missing = self.trial.missing_labels()
        self.out_of_range: dict[str, int] = {}
        self.prorated: dict[str, int] = {}
        self.value_labels: dict[str, dict[Any, str]] = {}

    def error(self, message: str, column: str | None = None) -> DataError:
        return DataError(message, file=self.file, trial=self.trial_id, column=column)

    # --- reading and cleaning -------------------------------------------------------------------------------------
    def run(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        raw, self.value_labels = read_raw_coded(self.path, format=self.trial.file_format(), sheet=self.trial.sheet)
        self._check_columns_present(raw)
        out: dict[str, Any] = {}  # column -> values, made into one DataFrame at the end
        out["trial_id"] = np.full(len(raw), self.trial_id, dtype=object)
        out["participant_id"] = self._participant_ids(raw)
        out["arm"], out["control_type"] = self._arms(raw)
        for name, column in self.trial.columns.items():
            if name not in ("participant_id", "arm"):
                out[name] = self._covariate(raw, name, column)
        constructs_meta = {}
        for construct, timepoints in self.trial.instruments.items():
            scores, meta = self._construct(raw, construct, timepoints)
            for column, values in scores.items():
                out[column] = values
            constructs_meta[construct] = meta
        for trait, value in self.trial.traits.model_dump().items():
            out[trait] = np.full(len(raw), value, dtype=object if isinstance(value, str) else type(value))
        out = pd.DataFrame({k: (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in out.items()})
        meta = {
            "file": self.file,
            "file_sha256": io.sha256_file(self.path),
            "format": self.trial.file_format(),
            "n_rows": int(len(out)),
            "n_by_arm": {"mbi": int((out["arm"] == 1).sum()), "control": int((out["arm"] == 0).sum())},
            "control_types": sorted(set(out.loc[out["arm"] == 0, "control_type"])),
            "arms": dict(self.trial.arms),
            "followups": {label: {"weeks": weeks, "window": self.spec.windows.assign(weeks)}
                          for label, weeks in self.trial.followups.items()},
            "constructs": constructs_meta,
            "out_of_range_set_missing": dict(self.out_of_range),
            "prorated_totals": dict(self.prorated),
        }
        return out, meta

    def _check_columns_present(self, raw: pd.DataFrame) -> None:
        wanted = [(f"columns.{name}", column) for name, column in self.trial.columns.items()]
        for construct, timepoints in self.trial.instruments.items():
            for timepoint, measure in timepoints.items():
                n_items = self.spec.instruments[measure.instrument].items
                key = f"instruments.{construct}.{timepoint}"
                wanted += [(key, column) for column in measure.source_columns(n_items)]
        for key, column in wanted:
            if column not in raw.columns:
                shown = ", ".join(list(raw.columns)[:8]) + (", ..." if raw.shape[1] > 8 else "")
                raise self.error(f"mapped column is absent (spec key {key}); the file has: {shown}", column)

    def _labels(self, series: pd.Series) -> pd.Series:
        """Values as canonical label text (object dtype), with missing cells and declared missing codes as None."""
        if series.name in self.value_labels:  # SPSS/Stata: the spec names labels, not codes
            series = apply_value_labels(series, self.value_labels[series.name])
        keys = canonical_labels(series)
        return keys.where(~keys.isin(self.missing) & keys.notna(), None)

    def _numeric(self, series: pd.Series, column: str) -> np.ndarray:
        """Numbers with missing codes removed; a cell that is neither a number nor a missing code is an error.

        What counts as a number is `readers.to_numbers` (plain decimal notation: not `NaN`, `inf` or `1_0`). The
        error gives the count and the first row, never the cell's content.
        """
        values, bad = to_numbers(series, self.missing)
        if bad.any():
            raise self.error(f"{int(bad.sum())} cells are not finite numbers (first at data row "
                             f"{int(np.flatnonzero(bad)[0]) + 1}); fix them or declare the code under missing_codes",
                             column)
        return values

    # --- core columns ---------------------------------------------------------------------------------------------
    def _participant_ids(self, raw: pd.DataFrame) -> pd.Series:
        column = self.trial.columns["participant_id"]
        ids = id_text(raw[column])  # text, never a number: 007 and 7 are two people
        ids = ids.where(~ids.isin(self.missing), None)
        if ids.isna().any():
            raise self.error(f"{int(ids.isna().sum())} rows have no participant id (row {int(ids.isna().idxmax()) + 1} "
                             "first); every randomised participant needs one", column)
        repeated = ids.duplicated(keep="first").to_numpy()
        if repeated.any():
            raise self.error(f"{int(ids[repeated].nunique())} participant ids occur more than once (first repeat "
                             f"at data row {int(np.flatnonzero(repeated)[0]) + 1}); every row must be one person",
                             column)
        return ids.astype(str)

    def _arms(self, raw: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        column = self.trial.columns["arm"]
        labels = self._labels(raw[column])
        if labels.isna().any():
            raise self.error(f"{int(labels.isna().sum())} rows have no arm; intention to treat needs the randomised "
                             "arm of every participant", column)
        try:
            roles = recode(labels, self.trial.arms)
        except UndeclaredLabel as exc:
            raise self.error(f"arm label {exc.label!r} has no mapping under `arms` "
                             f"(mapped: {', '.join(map(repr, self.trial.arms))})", column) from None
        arm = (roles == "mbi").astype(int).to_numpy()
        if len(np.unique(arm)) < 2:
            raise self.error(f"the data hold only one arm ({'MBI' if arm[0] == 1 else 'control'}); a randomised "
                             "comparison needs both", column)
        control_type = np.where(arm == 1, None, roles.to_numpy(dtype=object)).astype(object)
        return arm, control_type

    def _covariate(self, raw: pd.DataFrame, name: str, column: str) -> pd.Series:
        mapping = self.trial.recodes.get(name)
        if mapping is not None:
            try:
                values = recode(self._labels(raw[column]), mapping)
            except UndeclaredLabel as exc:
                raise self.error(f"value {exc.label!r} has no mapping under recodes.{name} "
                                 f"(mapped: {', '.join(map(repr, mapping))})", column) from None
        elif name == "age" or (name not in CATEGORY_LEVELS and column not in self.value_labels
                               and _looks_numeric(raw[column], self.missing)):
            return pd.Series(self._numeric(raw[column], column), index=raw.index)
        else:
            values = self._labels(raw[column])
        if name in CATEGORY_LEVELS:
            bad = sorted(set(values.dropna()) - set(CATEGORY_LEVELS[name]))
            if bad:
                raise self.error(f"value {bad[0]!r} is not one of {', '.join(CATEGORY_LEVELS[name])}; "
                                 f"declare recodes.{name}", column)
        return values.where(values.notna(), None).astype(object)

    # --- scores ---------------------------------------------------------------------------------------------------
    def _raw_score(self, raw: pd.DataFrame, measure: Measure, instrument: Instrument) -> np.ndarray:
        """Total raw score per participant: item sum (reverse keyed, prorated) or the given total, range-checked."""
        if measure.total is not None:
            total = self._numeric(raw[measure.total], measure.total)
            return self._apply_range(total, instrument.total_min, instrument.total_max, measure.total,
                                     f"total range {instrument.total_min}-{instrument.total_max} of "
                                     f"{instrument.name}")
        columns = measure.item_columns(instrument.items)
        items = np.column_stack([
            self._apply_range(self._numeric(raw[c], c), instrument.item_min, instrument.item_max, c,
                              f"item range {instrument.item_min}-{instrument.item_max} of {instrument.name}")
            for c in columns])
        reverse = instrument.reverse_items if measure.reverse_items is None else tuple(measure.reverse_items)
        items = scoring.apply_reverse_keying(items, reverse, instrument.item_min, instrument.item_max)
        total, prorated = scoring.prorated_total(items, self.spec.prorate_min_share)
        if prorated.any():
            self.prorated[measure.items if isinstance(measure.items, str) else columns[0]] = int(prorated.sum())
        return total

    def _apply_range(self, values: np.ndarray, low: float, high: float, column: str, what: str) -> np.ndarray:
        bad = scoring.out_of_range(values, low, high)
        if not bad.any():
            return values
        if self.spec.out_of_range == "error":
            raise self.error(f"{int(bad.sum())} values outside the {what} (first at data row "
                             f"{int(np.flatnonzero(bad)[0]) + 1}); fix the data or declare out_of_range: set_missing",
                             column)
        self.out_of_range[column] = self.out_of_range.get(column, 0) + int(bad.sum())
        return np.where(bad, np.nan, values)

    def _construct(self, raw: pd.DataFrame, construct: str,
                   timepoints: dict[str, Measure]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        windows = self.spec.followup_windows(self.trial_id)
        raw_scores = {}
        for timepoint, measure in timepoints.items():
            raw_scores[timepoint] = self._raw_score(raw, measure, self.spec.instruments[measure.instrument])
        out: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"timepoints": {}}
        base_measure = timepoints.get(BASELINE)
        base_reference = None
        if base_measure is not None:
            base_instrument = self.spec.instruments[base_measure.instrument]
            base_reference = self._reference(raw_scores[BASELINE], base_instrument, construct, base_measure)
        for timepoint, measure in timepoints.items():
            instrument = self.spec.instruments[measure.instrument]
            same_as_baseline = base_measure is not None and base_measure.instrument == measure.instrument
            # within_trial: the spec guarantees every follow-up shares the baseline instrument and its reference
            reference = base_reference if same_as_baseline else \
                self._reference(raw_scores[timepoint], instrument, construct, measure)
            mean, sd = reference
            column = f"baseline_{construct}" if timepoint == BASELINE else f"{construct}_{windows[timepoint]}"
            out[column] = scoring.standardise(raw_scores[timepoint], mean, sd, instrument.orientation(construct))
            out[f"{column}_raw"] = raw_scores[timepoint]
            meta["timepoints"][timepoint] = {
                "column": column, "instrument": instrument.name,
                "window": None if timepoint == BASELINE else windows[timepoint],
                "weeks": None if timepoint == BASELINE else self.trial.followups[timepoint],
                "level": "total" if measure.total is not None else "items",
                "reference_mean": mean, "reference_sd": sd,
                "orientation": instrument.orientation(construct),
                "n_scored": int(np.isfinite(raw_scores[timepoint]).sum()),
            }
            if timepoint != BASELINE and same_as_baseline:
                out[f"deteriorated_{construct}_{windows[timepoint]}"] = scoring.reliable_deterioration(
                    raw_scores[BASELINE], raw_scores[timepoint], sd, instrument.reliability,
                    instrument.higher_is_worse)
        return out, meta

    def _reference(self, baseline_raw: np.ndarray, instrument: Instrument, construct: str,
                   measure: Measure) -> tuple[float, float]:
        """(mean, SD) against which raw scores are standardised, by the declared method."""
        if self.method == "norm":
            return instrument.norm_mean, instrument.norm_sd
        try:
            return scoring.baseline_reference(baseline_raw)
        except ValueError as exc:
            column = measure.total or (measure.items if isinstance(measure.items, str) else measure.items[0])
            raise self.error(f"cannot standardise {construct} within the trial: {exc}", column) from None


def canonical_labels(series: pd.Series) -> pd.Series:
    """`spec.label_key` applied to a whole column at once (vectorised: harmonising reads ~10^5 cells per trial).

    Blank cells become None; integral numbers, whether stored as 1, 1.0 or "1", become "1"; other text is stripped.
    """
    values = series.astype(object)
    blank = values.isna()
    text = values.where(~blank, "").astype(str).str.strip()
    blank |= text == ""
    numbers = pd.to_numeric(text.where(~blank, None), errors="coerce").astype(float)
    integral = numbers.notna() & np.isfinite(numbers) & (numbers == np.floor(numbers)) & (numbers.abs() < 2**53)
    keys = text.astype(object)
    keys[integral] = numbers[integral].astype(np.int64).astype(str).astype(object)
    keys[blank] = None
    return keys


class UndeclaredLabel(ValueError):
    """A raw label the spec does not map; `harmonise` turns it into a DataError naming file, trial and column."""

    def __init__(self, label: str) -> None:
        super().__init__(f"label {label!r} is not declared")
        self.label = label


def recode(labels: pd.Series, mapping: dict[str, Any]) -> pd.Series:
    """Map canonical labels (see `spec.label_key`) through `mapping`; missing stays missing.

    A label the mapping does not declare is an error, never silently missing: a typo in a spec or an unexpected code
    in a file would otherwise quietly drop people from an analysis.
    """
    undeclared = sorted({label_key(v) for v in labels.dropna()} - set(mapping))
    if undeclared:
        raise UndeclaredLabel(undeclared[0])
    return pd.Series([None if _is_blank(v) else mapping[label_key(v)] for v in labels], index=labels.index,
                     dtype=object)


def _is_blank(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _is_number(text: str) -> bool:
    return parse_number(text) is not None


def _looks_numeric(series: pd.Series, missing: set[str]) -> bool:
    if pd.api.types.is_numeric_dtype(series.dtype):
        return True
    if isinstance(series.dtype, pd.CategoricalDtype):
        return False
    present = [v for v in series if not _is_blank(v) and label_key(v) not in missing]
    return bool(present) and all(_is_number(str(v)) for v in present)
