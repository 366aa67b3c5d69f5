"""Optuna tuning nested inside one training fold.

Why nested and grouped: the held-out trial must not influence the hyper-parameters (that would leak it into the
model), and the inner validation must mimic the outer question (does the model transport to a *new trial*?), so the
inner folds hold out whole training trials (GroupKFold; LeaveOneGroupOut with two trials). With a single training
trial (the internal K-fold scheme) they fall back to folds stratified on arm (and outcome, when binary).

The objective is the inner-fold mean of RMSE (continuous) or log-loss (binary), minimised. Each inner fold reports its
running mean so the MedianPruner can stop hopeless configurations early. The family's default configuration is
enqueued as the first trial, so tuning can only improve on the defaults (by the inner-fold criterion).
Reproducibility: the TPE sampler is seeded from the config seed and the fold, and every fit in the study uses the
same model seed; results are identical run to run unless a `timeout` cuts the budget (then it depends on speed) or a
shared storage lets other workers add trials.

A shared storage (``tuning.storage``) keeps studies between runs, so a study's name carries a fingerprint of what
its trials depend on (`study_fingerprint`: the training rows, the inner folds, the search space, the budget, the
seed, the model's fixed settings and the code's versions). A run whose inputs changed (new data, another space or
budget, a different model, an upgraded library) starts a new study instead of resuming one scored on other data or
by other code, which would silently hand it that study's best parameters. A study whose budget is already spent
is read, not extended: rerunning the same run gets the same parameters without a new trial, and a worker that
arrives after the others finished adds nothing.
A study a killed run (or a ``timeout``) left short of its budget is resumed up to it (its remaining trials are then
sampled in a new process, so the result can differ from an uninterrupted run's; the budget and the inputs are the
same). The tuning record's ``trials_before`` says how many finished trials the stored study already had.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedKFold

from mbi_predict.errors import ConfigError
from mbi_predict.io import json_safe

#: Default search spaces: (type, low, high, log) or ("categorical", choices). Ranges are the ones that matter for
#: a few thousand participants with a handful of covariates: shallow trees, strong regularisation.
DEFAULT_SPACES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "reference": {"continuous": {}, "binary": {}},
    "elastic_net": {
        "continuous": {"alpha": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
                       "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0}},
        "binary": {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
                   "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0}},
    },
    "random_forest": {task: {
        "n_estimators": {"type": "int", "low": 100, "high": 500},
        "max_depth": {"type": "int", "low": 2, "high": 12},
        "min_samples_leaf": {"type": "int", "low": 5, "high": 50, "log": True},
        "max_features": {"type": "float", "low": 0.2, "high": 1.0},
    } for task in ("continuous", "binary")},
    "xgboost": {task: {
        "n_estimators": {"type": "int", "low": 100, "high": 600},
        "max_depth": {"type": "int", "low": 2, "high": 6},
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "min_child_weight": {"type": "float", "low": 1.0, "high": 30.0, "log": True},
        "subsample": {"type": "float", "low": 0.5, "high": 1.0},
        "colsample_bytree": {"type": "float", "low": 0.5, "high": 1.0},
        "reg_lambda": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    } for task in ("continuous", "binary")},
}
DEFAULT_SPACES["path_risk"] = DEFAULT_SPACES["elastic_net"]


@dataclass(frozen=True)
class TuningResult:
    best_params: dict[str, Any]
    best_value: float
    metric: str
    n_trials: int
    n_complete: int
    n_pruned: int
    seconds: float
    study_name: str | None
    history: list[float] = field(default_factory=list)  # objective per completed trial, in order
    #: finished (complete or pruned) trials a stored study already held when this call began: at least the budget
    #: when a finished study was read (workers sharing it can overshoot by a trial each), fewer when a killed run's
    #: study was resumed
    trials_before: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"best_params": self.best_params, "best_value": self.best_value, "metric": self.metric,
                "n_trials": self.n_trials, "n_complete": self.n_complete, "n_pruned": self.n_pruned,
                "seconds": self.seconds, "study_name": self.study_name, "trials_before": self.trials_before}


def search_space(family: str, task: str, overrides: dict[str, Any] | None = None,
                 fixed: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The family's default space with config overrides applied; parameters fixed in the config are not tuned."""
    space = {name: dict(spec) for name, spec in DEFAULT_SPACES.get(family, {}).get(task, {}).items()}
    for name, spec in (overrides or {}).items():
        spec = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
        space[name] = {k: v for k, v in spec.items() if v is not None}
    for name in fixed or {}:
        space.pop(name, None)
    return space


def representative_params(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One point of the space (each numeric parameter's low end, each categorical's first choice): building a model
    with it checks every parameter name and type before any tuning starts."""
    point = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            point[name] = list(spec["choices"])[0]
        else:
            point[name] = int(spec["low"]) if spec["type"] == "int" else float(spec["low"])
    return point


def suggest(trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "int":
            params[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        elif kind == "float":
            params[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                               log=bool(spec.get("log")))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        else:
            raise ConfigError(f"search space parameter {name}: unknown type {kind!r}")
    return params


def inner_splits(groups: np.ndarray, strata: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray,
                                                                                                 np.ndarray]]:
    """Inner folds over the training rows: whole trials held out when there are >= 2 trials."""
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    dummy = np.zeros((len(groups), 1))
    if n_groups >= 3:
        splitter = GroupKFold(n_splits=min(n_folds, n_groups))
        return list(splitter.split(dummy, groups=groups))
    if n_groups == 2:
        return list(LeaveOneGroupOut().split(dummy, groups=groups))
    counts = np.unique(strata, return_counts=True)[1]
    k = int(max(2, min(n_folds, counts.min())))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(dummy, strata))


def study_fingerprint(X: pd.DataFrame, y: np.ndarray, *, groups: np.ndarray, strata: np.ndarray, task: str,
                      space: dict[str, dict[str, Any]], n_trials: int, seed: int, inner_folds: int,
                      defaults: dict[str, Any] | None = None, identity: dict[str, Any] | None = None) -> str:
    """16 hex digits of a SHA-256 over what a study's trials depend on: the training rows (column names, types and
    values of X, y, the trial groups and strata, in order), the task, search space, budget, seed, inner folds, the
    enqueued defaults, ``identity`` (the model's fixed settings: plain JSON values) and the versions of this
    package and of the libraries that fit and sample (`_code_versions`; changed code scores trials differently).
    Equal inputs give equal names; a change to any of them gives a new study. Not covered: a local edit that keeps
    the package version. The hash of a table of participant data is not participant data (and is not reversible);
    the name is stored only in the user's own storage and the run's tuning record."""
    digest = hashlib.sha256()
    digest.update(json.dumps([list(map(str, X.columns)), [str(t) for t in X.dtypes]]).encode())
    digest.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    for array in (y, groups, strata):
        values = np.asarray(array)
        digest.update(pd.util.hash_array(values.astype(str) if values.dtype == object else values).tobytes())
    settings = {"task": task, "space": space, "n_trials": int(n_trials), "seed": int(seed),
                "inner_folds": int(inner_folds), "defaults": defaults or {}, "identity": identity or {},
                "code": _code_versions()}
    try:  # numpy values as plain numbers; anything else JSON cannot encode is refused, never hashed by its str(),
        # which could hold a memory address and give every run a new study
        digest.update(json.dumps(json_safe(settings), sort_keys=True).encode())
    except TypeError as exc:
        raise ConfigError(f"tuning.storage: a model setting cannot name a stored study ({exc}); give the tuned "
                          "model's params as plain numbers, strings, lists or mappings") from None
    return digest.hexdigest()[:16]


def _code_versions() -> dict[str, str]:
    """The versions of the code a study's trials ran: this package and the libraries that fit, score and sample."""
    from mbi_predict import __version__
    from mbi_predict.io import installed_distribution

    versions = {"mbi-predict": __version__}
    for name, distributions in (("numpy", ("numpy",)), ("pandas", ("pandas",)), ("scikit-learn", ("scikit-learn",)),
                                ("xgboost", ("xgboost-cpu", "xgboost")), ("optuna", ("optuna",))):
        found = installed_distribution(*distributions)
        versions[name] = "" if found is None else found[1]
    return versions


def _loss(task: str, y: np.ndarray, prediction: np.ndarray) -> float:
    if task == "binary":
        return float(log_loss(y, np.clip(prediction, 1e-7, 1 - 1e-7), labels=[0, 1]))
    return float(np.sqrt(np.mean((y - prediction) ** 2)))


def tune(build: Callable[[dict[str, Any]], Any], predict: Callable[[Any, pd.DataFrame], np.ndarray],
         X: pd.DataFrame, y: np.ndarray, *, groups: np.ndarray, strata: np.ndarray, task: str,
         space: dict[str, dict[str, Any]], n_trials: int, timeout: float | None, seed: int, inner_folds: int = 3,
         defaults: dict[str, Any] | None = None, storage: str | None = None, study_name: str | None = None,
         identity: dict[str, Any] | None = None, on_trial: Callable[[], None] | None = None) -> TuningResult:
    """Search ``space`` with TPE on inner trial-grouped folds of (X, y); returns the best parameters.

    ``build(params)`` returns an unfitted model, ``predict(model, X)`` its predictions on the task's scale. With a
    ``storage``, the study is named ``<study_name>:<fingerprint>`` (`study_fingerprint`; ``identity``: what
    ``build`` fixes besides the tuned parameters, e.g. the estimator and its config params).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is raised as one line, not logged
    metric = "log_loss" if task == "binary" else "rmse"
    start = time.perf_counter()
    if n_trials < 1 or not space:
        return TuningResult({}, math.nan, metric, 0, 0, 0, 0.0, study_name)
    splits = inner_splits(groups, strata, inner_folds, seed)
    y = np.asarray(y, dtype=float)

    def objective(trial) -> float:
        params = suggest(trial, space)
        losses = []
        for step, (train, valid) in enumerate(splits):
            model = build(params).fit(X.iloc[train], y[train])
            losses.append(_loss(task, y[valid], predict(model, X.iloc[valid])))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 2)))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if storage:
        study_name = f"{study_name or 'study'}:" + study_fingerprint(
            X, y, groups=groups, strata=strata, task=task, space=space, n_trials=n_trials, seed=seed,
            inner_folds=inner_folds, defaults=defaults, identity=identity)
    try:
        study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner, storage=storage,
                                    study_name=study_name if storage else None, load_if_exists=bool(storage))
    except Exception as exc:  # a bad storage URL is a config problem, not a crash
        raise ConfigError(f"tuning.storage {storage!r} cannot be used: {type(exc).__name__}: {exc}") from None
    from optuna.trial import TrialState

    start_values = {k: v for k, v in (defaults or {}).items() if k in space and _inside(space[k], v)}
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    if start_values and finished < n_trials and not any(
            t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)
            and t.system_attrs.get("fixed_params") == start_values for t in study.trials):
        # first, and again in a study a killed run left with the defaults unscored (failed, or running in a
        # process that is gone; a worker running them right now cannot be told apart and they are scored twice)
        study.enqueue_trial(start_values)
    callbacks = []
    if on_trial is not None:
        callbacks.append(lambda _study, _trial: on_trial())
    if storage:
        # workers sharing the study stop once the study as a whole has spent the budget
        from optuna.study import MaxTrialsCallback

        callbacks.append(MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if finished < n_trials:  # a stored study whose budget is spent is read as it is
        study.optimize(objective, n_trials=n_trials - finished if storage else n_trials, timeout=timeout,
                       callbacks=callbacks, catch=())

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise ConfigError("tuning finished no trial within its budget; raise tuning.n_trials or tuning.timeout")
    pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    return TuningResult(dict(study.best_params), float(study.best_value), metric, len(study.trials),
                        len(complete), pruned, time.perf_counter() - start, study_name,
                        [float(t.value) for t in complete], finished)


def _inside(spec: dict[str, Any], value: Any) -> bool:
    if spec["type"] == "categorical":
        return value in spec["choices"]
    try:
        return float(spec["low"]) <= float(value) <= float(spec["high"])
    except (TypeError, ValueError):
        return False
