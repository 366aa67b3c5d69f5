"""Leave-one-trial-out as a scikit-learn cross-validator, with the package's rules for which trials are held out.

``LeaveOneTrialOut`` behaves like scikit-learn's ``LeaveOneGroupOut`` with ``groups`` = trial ids, so it plugs
into ``cross_val_score``, ``cross_validate`` and ``GridSearchCV``. What it adds is the package's minimum-size rule
(`mbi_predict.validate.loto.plan_folds`, called here rather than re-implemented): a trial with fewer than
``min_trial_size`` observed outcomes — or, for effect models, fewer than ``min_per_arm`` observed outcomes in one
arm — is too small to be scored on its own, so it is never yielded as a test fold; it stays in every training set.
After ``split`` (or ``get_n_splits``) the skipped trials and the reason are in ``skipped_``, so nothing is dropped
silently. At least three trials must be large enough to hold out (fewer cannot be pooled by random-effects
meta-analysis; Debray et al. 2017, BMJ 356:i6460, on validating models across clusters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator
from sklearn.model_selection._split import GroupsConsumerMixin
from sklearn.utils.validation import _num_samples

from mbi_predict.config import ValidationConfig
from mbi_predict.errors import ConfigError, DataError

#: the experiment configs' default (``validation.min_trial_size``), so a splitter and a run hold out the same trials
DEFAULT_MIN_TRIAL_SIZE: int = ValidationConfig.model_fields["min_trial_size"].default


@dataclass(frozen=True)
class _Rows:
    """The fields of `loto.PreparedData` that `loto.plan_folds` reads for ``scheme="loto"``."""

    y: np.ndarray            # 0.0 where the outcome is observed, NaN where missing
    trial: np.ndarray        # trial ids (str)
    arm: np.ndarray | None   # 0/1, only read when min_per_arm > 0
    excluded_trials: tuple = ()

    @property
    def n(self) -> int:
        return len(self.y)


def _observed(y: Any, n: int) -> np.ndarray:
    """Which rows have an observed outcome (all of them when ``y`` is None); works for class labels too."""
    if y is None:
        return np.ones(n, dtype=bool)
    if _num_samples(y) != n:
        raise DataError(f"LeaveOneTrialOut: y has {_num_samples(y)} rows but X has {n}")
    values = pd.DataFrame(np.asarray(y, dtype=object).reshape(n, -1))
    return ~values.isna().any(axis=1).to_numpy()


class LeaveOneTrialOut(GroupsConsumerMixin, BaseCrossValidator):
    """Hold out each trial large enough to score in turn; train on all the other trials (small ones included).

    Parameters
    ----------
    trials : array-like of trial ids, optional
        One per row; used when ``split`` gets no ``groups`` (``groups`` wins when both are given).
    min_trial_size : int, default 20
        Fewest participants with an observed outcome (``y`` not missing) for a trial to be held out (the
        ``validation.min_trial_size`` of experiment configs).
    min_per_arm : int, default 0
        Fewest observed participants in each arm for a trial to be held out; effect models need
        ``mbi_predict.validate.benefit.MIN_PER_ARM`` (their benefit metrics are estimated within the trial).
    arm : str or array-like, default "arm"
        The 0/1 arm per row, or the name of the column of ``X`` holding it; read only when ``min_per_arm > 0``.

    Attributes (set by ``split`` / ``get_n_splits``)
    ----------
    held_out_ : list of str, the trials yielded as test folds, in order (sorted ids)
    skipped_ : list of dict (trial_id, n, reason), the trials never held out
    trials_ : list of dict (trial_id, n, n_observed, n_missing_outcome), every trial
    """

    def __init__(self, trials=None, *, min_trial_size: int = DEFAULT_MIN_TRIAL_SIZE, min_per_arm: int = 0,
                 arm="arm"):
        self.trials = trials
        self.min_trial_size = min_trial_size
        self.min_per_arm = min_per_arm
        self.arm = arm

    # ------------------------------------------------------------------------------------------------ planning
    def _groups(self, groups, n: int) -> np.ndarray:
        chosen = groups if groups is not None else self.trials
        if chosen is None:
            raise ConfigError("LeaveOneTrialOut needs the trial ids: pass groups=trial_ids to split (or to "
                              "cross_val_score / GridSearchCV.fit), or LeaveOneTrialOut(trials=trial_ids)")
        values = np.asarray(chosen, dtype=object).reshape(-1)
        if len(values) != n:
            raise DataError(f"LeaveOneTrialOut: {len(values)} trial ids for {n} rows")
        if pd.isna(pd.Series(values)).any():
            raise DataError("LeaveOneTrialOut: trial ids have missing values", column="trial_id")
        return values.astype(str)

    def _arms(self, X, n: int) -> np.ndarray | None:
        if not self.min_per_arm:
            return None
        if isinstance(self.arm, str):
            if not isinstance(X, pd.DataFrame) or self.arm not in X.columns:
                raise ConfigError(f"LeaveOneTrialOut(min_per_arm={self.min_per_arm}) needs the arm: X has no "
                                  f"column {self.arm!r}; pass arm=<0/1 array>", column=self.arm)
            values = X[self.arm].to_numpy()
        else:
            values = np.asarray(self.arm).reshape(-1)
        if len(values) != n:
            raise DataError(f"LeaveOneTrialOut: {len(values)} arm values for {n} rows", column="arm")
        numeric = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isin(numeric, (0.0, 1.0))):
            raise DataError("LeaveOneTrialOut: arm must be coded 0 = control, 1 = MBI", column="arm")
        return numeric.astype(int)

    def plan(self, X, y=None, groups=None):
        """The `loto.FoldPlan` for these rows (held-out folds, skipped trials, per-trial counts)."""
        from mbi_predict.validate.loto import plan_folds

        if self.min_trial_size < 1 or self.min_per_arm < 0:
            raise ConfigError("LeaveOneTrialOut: min_trial_size must be >= 1 and min_per_arm >= 0")
        n = _num_samples(X)
        rows = _Rows(y=np.where(_observed(y, n), 0.0, np.nan), trial=self._groups(groups, n), arm=self._arms(X, n))
        try:
            plan = plan_folds(rows, scheme="loto", min_trial_size=int(self.min_trial_size),
                              min_per_arm=int(self.min_per_arm))
        except ConfigError as exc:
            if "at least 3 trials" not in str(exc):
                raise
            first = str(exc).split(". For internal")[0]
            raise ConfigError(f"LeaveOneTrialOut: {first} (min_trial_size {self.min_trial_size}, min_per_arm "
                              f"{self.min_per_arm})") from None
        self.held_out_ = [str(fold.label) for fold in plan.folds]
        self.skipped_ = [{**entry, "trial_id": str(entry["trial_id"])} for entry in plan.skipped]
        self.trials_ = [{**entry, "trial_id": str(entry["trial_id"])} for entry in plan.trials]
        return plan

    # -------------------------------------------------------------------------------------- sklearn protocol
    def split(self, X, y=None, groups=None):
        """Yield (train, test) row indices, one pair per held-out trial; sets ``held_out_`` and ``skipped_`` at
        once (before the first pair is drawn)."""
        plan = self.plan(X, y, groups)
        return ((fold.train, fold.test) for fold in plan.folds)

    def get_n_splits(self, X=None, y=None, groups=None):
        """The number of held-out trials (needs the rows: which trials are held out depends on their sizes)."""
        if X is None:
            trials = groups if groups is not None else self.trials
            if trials is None:
                raise ConfigError("LeaveOneTrialOut.get_n_splits needs X (and groups) or trials=...")
            X = np.zeros((len(np.asarray(trials).reshape(-1)), 1))
        return len(self.plan(X, y, groups).folds)

