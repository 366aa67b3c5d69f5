"""The analysis data of one comparison, prepared once per run: the rows of MBI and one kind of control, the outcome
and covariates checked, in model-ready form (`PreparedData`), and the simulator's truth aligned for scoring only.

Contract: `prepare_data` reads a checked IPD table and returns a frozen `PreparedData`; nothing here is fitted, so
nothing can leak from a held-out trial. Every problem is a one-line `DataError` / `ConfigError` naming the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.data.schema import (HIGHER_IS_WORSE, STUDY_TRAITS, baseline_of, construct_of, deterioration_of,
                                     present_baseline_covariates, predictor_refusal)
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models.preprocess import ARM, FeatureSpec, categorical_as_object
from mbi_predict.models.prognostic import infer_task

ITT_NOTE = ("intention-to-treat table: participants with a missing outcome are kept, get predictions, and are "
            "counted per trial (n_missing_outcome), but are excluded from fitting and from the metrics")


@dataclass(frozen=True)
class PreparedData:
    """The comparison's rows in model-ready form, built once per run."""

    X: pd.DataFrame          # covariates + arm
    y: np.ndarray            # the outcome, NaN where missing
    trial: np.ndarray        # trial ids (str)
    participant: np.ndarray  # participant ids (str)
    arm: np.ndarray          # 0/1
    outcome: str
    task: str
    covariates: tuple[str, ...]
    features: FeatureSpec
    control_type: str
    excluded_trials: tuple[dict[str, Any], ...] = ()
    outcome_higher_is_worse: bool = True
    #: the simulator's true CATE per row (NaN where unknown), or None: used only to score effect models (pehe,
    #: cate_truth_corr), never as a model input (it is not in X)
    truth_cate: np.ndarray | None = field(default=None, repr=False)
    #: the outcome's reliable-deterioration flag per row (0/1, NaN where missing; ``deteriorated_<outcome>``), or
    #: None when the data have none: described by group in the harm report, never a model input
    deteriorated: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.y)

    def __sizeof__(self) -> int:
        """Bytes held by the arrays and the covariate table (object columns shallow), as ``sys.getsizeof`` and
        dask's ``sizeof`` report them. joblib's dask backend scatters a job argument to the workers once when dask
        sizes it above 1 kB, and otherwise pickles it into every job; without this the prepared data sized as the
        bare object (56 bytes) and travelled with each fold job."""
        arrays = (self.y, self.trial, self.participant, self.arm, self.truth_cate, self.deteriorated)
        return (object.__sizeof__(self) + int(self.X.memory_usage(index=True, deep=False).sum())
                + sum(int(a.nbytes) for a in arrays if a is not None))


def resolve_covariates(frame: pd.DataFrame, covariates: list[str] | str, study_traits: list[str]) -> list[str]:
    """The covariates and study traits to model, under the covariate policy (`schema.predictor_refusal`): outcomes
    of any window (with their `_raw` totals, harm and improvement flags), ids, trial and arm columns are never
    predictors; naming one is a one-line ConfigError naming the column."""
    chosen = present_baseline_covariates(frame) if covariates == "all" else list(covariates)
    for trait in study_traits:
        if trait not in STUDY_TRAITS and trait not in frame.columns:
            raise ConfigError(f"study_traits: {trait!r} is not a study-level trait in the data", column=trait)
    chosen += [t for t in study_traits if t not in chosen]
    for column in chosen:  # the covariate policy: outcomes, ids and design columns are never predictors
        reason = predictor_refusal(column)
        if reason is not None:
            raise ConfigError(f"cannot be a covariate: {reason}", column=str(column))
    missing = [c for c in chosen if c not in frame.columns]
    if missing:
        raise DataError(f"covariate not in the data (columns: {', '.join(map(str, frame.columns[:12]))} ...)",
                        column=missing[0])
    if not chosen:
        raise ConfigError("no covariates: none of the data model's baseline covariates is in the data; list them")
    return chosen


def prepare_data(frame: pd.DataFrame, *, outcome: str, covariates: list[str] | str = "all",
                 study_traits: list[str] = (), control_type: str = "passive") -> PreparedData:
    """Select the comparison's rows (MBI + controls of ``control_type``) and check the outcome and covariates."""
    if outcome not in frame.columns:
        raise DataError("outcome is not a column of the data", column=outcome)
    if outcome in (list(covariates) if not isinstance(covariates, str) else []) or outcome in study_traits:
        raise ConfigError("the outcome cannot also be a covariate", column=outcome)
    chosen = resolve_covariates(frame, covariates, list(study_traits))
    # `covariates: all` with a baseline score as the outcome: the score itself (and its raw-scale or standardised
    # twin) leaves the covariates, or the model would predict the outcome from itself
    twins = {outcome, outcome.removesuffix("_raw"), f"{outcome}_raw"}
    chosen = [c for c in chosen if c not in twins]
    if not chosen:
        raise ConfigError("no covariates left once the outcome is taken out of them", column=outcome)
    values = pd.to_numeric(frame[outcome], errors="coerce")
    if frame[outcome].notna().sum() != values.notna().sum():
        raise DataError("outcome must be numeric", column=outcome)
    rows = (frame["arm"] == 1) | (frame["control_type"] == control_type)
    data = frame.loc[rows].copy()
    excluded = []
    for trial_id, trial_rows in data.groupby("trial_id", sort=True):
        if trial_rows["arm"].nunique() < 2:
            excluded.append({"trial_id": str(trial_id), "n": int(len(trial_rows)),
                             "reason": f"no {control_type} control arm: the trial does not enter this comparison"})
    data = data.loc[~data["trial_id"].isin([e["trial_id"] for e in excluded])].reset_index(drop=True)
    if data.empty:
        raise DataError(f"no trial has both an MBI arm and a {control_type} control arm")
    y = pd.to_numeric(data[outcome], errors="coerce").to_numpy(dtype=float)
    observed = y[np.isfinite(y)]
    if observed.size == 0 or np.ptp(observed) == 0:
        raise DataError("outcome has no variance in the analysed rows (constant or missing throughout)",
                        column=outcome)
    task = infer_task(data, outcome)
    numeric_like = [c for c in chosen if pd.api.types.is_numeric_dtype(data[c])]
    categorical = [c for c in chosen if c not in numeric_like]
    data = categorical_as_object(data, categorical)
    X = data[chosen + [ARM]].copy()
    X[ARM] = X[ARM].astype(float)
    for column in numeric_like:
        X[column] = X[column].astype(float)
    baseline = baseline_of(outcome)
    construct = construct_of(outcome)
    worse_up = outcome.startswith("deteriorated_") or HIGHER_IS_WORSE.get(construct or "", True)
    flag_column = deterioration_of(outcome)
    deteriorated = None
    if task == "continuous" and flag_column in data.columns:
        deteriorated = pd.to_numeric(data[flag_column], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(deteriorated).any():
            deteriorated = None
    return PreparedData(X=X, y=y, trial=data["trial_id"].astype(str).to_numpy(),
                        participant=data["participant_id"].astype(str).to_numpy(),
                        arm=data["arm"].to_numpy(dtype=int), outcome=outcome, task=task, covariates=tuple(chosen),
                        features=FeatureSpec.from_frame(X, chosen, baseline), control_type=control_type,
                        excluded_trials=tuple(excluded), outcome_higher_is_worse=bool(worse_up),
                        deteriorated=deteriorated)


def attach_truth(data: PreparedData, truth: pd.DataFrame | None) -> PreparedData:
    """Align a simulator truth table (trial_id, participant_id, ``true_effect_{control}_{outcome}``) with the
    analysed rows. The true CATE goes to ``truth_cate`` (scoring only), never into X. No truth column for this
    comparison and outcome (e.g. a ``deteriorated_*`` outcome) -> the data are returned unchanged."""
    if truth is None:
        return data
    column = f"true_effect_{data.control_type}_{data.outcome}"
    if column not in truth.columns or not {"trial_id", "participant_id"} <= set(truth.columns):
        return data
    keyed = truth.assign(trial_id=truth["trial_id"].astype(str), participant_id=truth["participant_id"].astype(str))
    keyed = keyed.drop_duplicates(["trial_id", "participant_id"]).set_index(["trial_id", "participant_id"])[column]
    index = pd.MultiIndex.from_arrays([data.trial, data.participant])
    values = keyed.reindex(index).to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return data
    return replace(data, truth_cate=values)
