"""Folds and fold jobs: which trials are held out (`plan_folds`), the unit of parallel work (`FoldJob`: one model x
one held-out trial), what a job returns (`FoldResult`) and a fitted model (`FittedModel`).

Contract: a plan is a pure function of the prepared data and the settings; every job's randomness comes from
`derive_seed(config seed, model, held-out trial)`, so results do not depend on ``n_jobs``, the backend or the order
jobs run in.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from mbi_predict.config import ModelConfig
from mbi_predict.errors import ConfigError
from mbi_predict.validate.metrics import MetricValue
from mbi_predict.validate.prepared import PreparedData

INTERNAL_NOTE = "internal, not external, validation: K-fold over participants of the same trial(s)"


@dataclass(frozen=True)
class Fold:
    label: str            # the held-out trial id (or fold_<k> under K-fold)
    train: np.ndarray     # row indices the fold may fit on
    test: np.ndarray      # row indices that only get predictions


@dataclass(frozen=True)
class FoldPlan:
    scheme: str
    folds: tuple[Fold, ...]
    skipped: tuple[dict[str, Any], ...]
    note: str
    trials: tuple[dict[str, Any], ...]  # every analysed trial with its n and n_missing_outcome


def derive_seed(seed: int, *parts: Any) -> int:
    """A 31-bit seed from the config seed and stable labels (crc32, not hash(), which is salted per process)."""
    words = [int(seed)] + [zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1)[0] % (2**31 - 1))


def plan_folds(data: PreparedData, *, scheme: str = "loto", n_folds: int = 5, min_trial_size: int = 20,
               seed: int = 0, min_per_arm: int = 0) -> FoldPlan:
    """Which trials are held out, which are reported and skipped, and why.

    ``min_per_arm``: effect models validate predicted benefit inside the held-out trial (cross-fitted pseudo-outcomes),
    which needs enough observed participants in each arm; smaller trials are still used for training.
    """
    observed = np.isfinite(data.y)
    trials, skipped = [], [dict(e) for e in data.excluded_trials]
    eligible = []
    for trial_id in sorted(np.unique(data.trial)):
        rows = data.trial == trial_id
        n_obs, n_all = int((rows & observed).sum()), int(rows.sum())
        trials.append({"trial_id": trial_id, "n": n_all, "n_observed": n_obs, "n_missing_outcome": n_all - n_obs})
        if n_obs == 0:
            skipped.append({"trial_id": trial_id, "n": n_all, "reason": "outcome missing for every participant"})
        elif n_obs < min_trial_size:
            skipped.append({"trial_id": trial_id, "n": n_all, "reason": f"only {n_obs} participants with an observed "
                            f"outcome (min_trial_size {min_trial_size}); used for training, not held out"})
        elif min_per_arm and (smallest := int(min((rows & observed & (data.arm == a)).sum() for a in (0, 1)))) \
                < min_per_arm:
            skipped.append({"trial_id": trial_id, "n": n_all, "reason": f"only {smallest} participants with an "
                            f"observed outcome in one arm (effect validation needs {min_per_arm} per arm); used "
                            "for training, not held out"})
        else:
            eligible.append(trial_id)
    if scheme == "loto":
        if len(eligible) < 3:
            raise ConfigError(f"leave-one-trial-out needs at least 3 trials large enough to hold out; found "
                              f"{len(eligible)}. For internal validation within the data set "
                              "validation.scheme: kfold")
        folds = tuple(Fold(t, np.flatnonzero(data.trial != t), np.flatnonzero(data.trial == t)) for t in eligible)
        note = "external validation: each trial held out in turn, everything fitted on the other trials"
        return FoldPlan("loto", folds, tuple(skipped), note, tuple(trials))
    if scheme != "kfold":
        raise ConfigError(f"validation.scheme: unknown scheme {scheme!r}; use loto or kfold")
    strata = data.arm * 3 + (np.where(observed, np.nan_to_num(data.y), 2).astype(int) if data.task == "binary"
                             else 0)
    k = int(min(n_folds, np.unique(strata, return_counts=True)[1].min()))
    if k < 2:
        raise ConfigError("validation.folds: too few participants per arm (and outcome) for K-fold validation")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=derive_seed(seed, "kfold"))
    folds = tuple(Fold(f"fold_{i + 1}", train, test)
                  for i, (train, test) in enumerate(splitter.split(np.zeros((data.n, 1)), strata)))
    return FoldPlan("kfold", folds, tuple(skipped), INTERNAL_NOTE, tuple(trials))


@dataclass(frozen=True)
class FoldJob:
    model: ModelConfig
    fold: Fold
    seed: int
    bootstrap: int = 200
    inner_folds: int = 3
    storage: str | None = None
    study_name: str | None = None
    keep_model: bool = False
    explain: Any = None          # ExplainConfig when SHAP is computed in the fold
    #: a permutation refit of the heterogeneity verdict's calibration (`validate.verdict_null`): only the metrics the
    #: verdict uses (RATE, calibration slope, the constant-effect yardstick); no intervals, SHAP or predictions kept
    light: bool = False
    #: ``validate.groups.GroupSettings``: group effects, harm and treatment rules of effect models (None: off)
    groups: Any = None
    #: ``explainer(job, data, fitted) -> FoldShap``: SHAP of the fold's fitted model on the held-out rows, run in
    #: the worker that fitted it (``mbi_predict.explain.run.explain_fold``, given by the caller: validation does not
    #: import the explain layer); needed when ``explain`` is enabled
    explainer: Callable[..., Any] | None = None


@dataclass
class FoldResult:
    model: str
    kind: str
    held_out: str
    n: int                   # participants scored (observed outcome, in the evaluated population)
    n_randomised: int        # participants of the held-out trial in the evaluated population
    n_missing_outcome: int
    metrics: dict[str, MetricValue]
    timing: dict[str, float]
    best_params: dict[str, Any]
    tuning: dict[str, Any] | None
    predictions: pd.DataFrame   # trial_id, participant_id, prediction column(s), for every held-out row
    evaluated: np.ndarray       # boolean mask over predictions' rows: scored in the metrics
    population: str = "all"
    test_rows: np.ndarray = field(default_factory=lambda: np.array([], dtype=int), repr=False)  # into the data
    fitted_model: Any = field(default=None, repr=False)
    #: SHAP of the fold model on held-out rows (``explain.run.FoldShap``); participant-level parts stay in memory
    shap: Any = field(default=None, repr=False)
    #: in-memory extras for run-level aggregates (effect models: DR pseudo-outcomes of the scored rows, risks)
    extras: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class FittedModel:
    """A model fitted on a fold's training rows (or on every trial, for the final model)."""

    model: Any
    preprocess: Any            # the fitted ColumnTransformer an effect model's X came through; None otherwise
    train_rows: np.ndarray
    tuning: dict[str, Any] | None
    tuned: dict[str, Any]
    tune_seconds: float
    fit_seconds: float
