"""LeaveOneTrialOut: the package's hold-out rules behind scikit-learn's cross-validator protocol."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score

from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.validate.benefit import MIN_PER_ARM
from mbi_predict.validate.loto import plan_folds, prepare_data
from mbi_predict.validate.splitters import LeaveOneTrialOut


def toy(sizes=(30, 30, 30, 30, 10), seed=0):
    rng = np.random.default_rng(seed)
    trials = np.repeat([f"t{k}" for k in range(len(sizes))], sizes)
    X = pd.DataFrame({"x": rng.normal(size=len(trials)), "arm": np.tile([0, 1], len(trials))[:len(trials)]})
    y = X["x"].to_numpy() + rng.normal(size=len(trials))
    return X, y, trials


def test_small_trials_train_but_are_never_held_out():
    X, y, trials = toy()
    cv = LeaveOneTrialOut()
    folds = list(cv.split(X, y, groups=trials))
    assert cv.held_out_ == ["t0", "t1", "t2", "t3"] and len(folds) == cv.get_n_splits(X, y, trials) == 4
    assert [s["trial_id"] for s in cv.skipped_] == ["t4"] and "min_trial_size 20" in cv.skipped_[0]["reason"]
    small = np.flatnonzero(trials == "t4")
    for (train, test), held in zip(folds, cv.held_out_):
        assert set(trials[test]) == {held}
        assert np.array_equal(np.sort(np.r_[train, test]), np.arange(len(y)))
        assert set(small) <= set(train)


def test_only_observed_outcomes_count_and_trials_can_be_given_up_front():
    X, y, trials = toy()
    y = y.copy()
    y[np.flatnonzero(trials == "t0")[:15]] = np.nan  # 15 of 30 observed: below 20
    cv = LeaveOneTrialOut(trials=trials)
    list(cv.split(X, y))
    assert [s["trial_id"] for s in cv.skipped_] == ["t0", "t4"]
    entry = next(t for t in cv.trials_ if t["trial_id"] == "t0")
    assert entry == {"trial_id": "t0", "n": 30, "n_observed": 15, "n_missing_outcome": 15}


def test_min_per_arm_reads_the_arm_column():
    X, y, trials = toy(sizes=(30, 30, 30, 30, 30))
    X.loc[np.flatnonzero(trials == "t1")[:24], "arm"] = 0  # t1: 3 MBI participants left
    cv = LeaveOneTrialOut(min_per_arm=MIN_PER_ARM)
    assert cv.get_n_splits(X, y, trials) == 4
    assert cv.skipped_[0]["trial_id"] == "t1" and "per arm" in cv.skipped_[0]["reason"]
    with pytest.raises(ConfigError, match="needs the arm"):
        LeaveOneTrialOut(min_per_arm=5).get_n_splits(X.to_numpy(), y, trials)


def test_cross_val_score_and_grid_search_use_it():
    X, y, trials = toy()
    scores = cross_val_score(Ridge(), X[["x"]], y, groups=trials, cv=LeaveOneTrialOut(), scoring="r2")
    by_hand = [Ridge().fit(X.loc[trials != t, ["x"]], y[trials != t]).score(X.loc[trials == t, ["x"]],
                                                                              y[trials == t])
               for t in ("t0", "t1", "t2", "t3")]
    assert np.allclose(scores, by_hand)
    search = GridSearchCV(Ridge(), {"alpha": [0.1, 10.0]}, cv=LeaveOneTrialOut()).fit(X[["x"]], y, groups=trials)
    assert search.n_splits_ == 4 and search.best_params_["alpha"] in (0.1, 10.0)


def test_user_errors_are_one_line():
    X, y, trials = toy(sizes=(30, 30, 10, 10))
    with pytest.raises(ConfigError, match="at least 3 trials") as info:
        list(LeaveOneTrialOut().split(X, y, trials))
    assert "\n" not in str(info.value) and "validation.scheme" not in str(info.value)
    with pytest.raises(ConfigError, match="needs the trial ids"):
        list(LeaveOneTrialOut().split(X, y))
    with pytest.raises(DataError, match="trial ids"):
        list(LeaveOneTrialOut().split(X, y, trials[:-1]))


def test_same_folds_as_the_runner_plan():
    ipd = simulate_latent("galante2023", seed=5, n_trials=6, n=900).ipd
    data = prepare_data(ipd, outcome="distress_fu1_6")
    plan = plan_folds(data, min_trial_size=20, min_per_arm=MIN_PER_ARM)
    cv = LeaveOneTrialOut(min_per_arm=MIN_PER_ARM)
    folds = list(cv.split(data.X, data.y, data.trial))
    assert cv.held_out_ == [f.label for f in plan.folds]
    for (train, test), fold in zip(folds, plan.folds):
        assert np.array_equal(train, fold.train) and np.array_equal(test, fold.test)
