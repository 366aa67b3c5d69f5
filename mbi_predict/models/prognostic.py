"""The prognostic model zoo: predict a participant's outcome (or risk of a binary outcome) from baseline data.

Every model is ONE sklearn Pipeline, ``features`` (``models.preprocess``) then ``model``, so it can be cloned per
leave-one-trial-out fold and nothing is fitted outside the fold. Families:

* ``reference``   the outcome on its own baseline score and the arm (linear / unpenalised logistic regression):
                  the bar any richer model has to clear to be worth its complexity.
* ``elastic_net`` all covariates + arm, ElasticNet / logistic regression with the elastic-net penalty (saga).
* ``random_forest`` all covariates + arm.
* ``xgboost``     all covariates + arm, histogram trees, one thread per model (parallelism is across folds).
* ``path_risk``   a PATH-statement risk model (Kent et al. 2020): fitted on CONTROL participants only, without the
                  arm, so it predicts the outcome under control; it is what a risk-stratified effect analysis needs.
                  Its metrics are computed on held-out control participants (the population it predicts for).

The task is inferred from the outcome: a 0/1 column is a binary classification (probabilities from
``predict_proba``), anything else a regression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import ElasticNet, LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline

from mbi_predict.config import PROGNOSTIC_ESTIMATORS
from mbi_predict.data.schema import is_binary_outcome
from mbi_predict.errors import ConfigError
from mbi_predict.models.preprocess import FeatureSpec, make_preprocessor

Task = Literal["continuous", "binary"]


@dataclass(frozen=True)
class Family:
    """How a family is built and which rows it learns from and is judged on."""

    uses_arm: bool
    population: Literal["all", "control"]
    reference_features_only: bool
    defaults: dict[Task, dict[str, Any]]


FAMILIES: dict[str, Family] = {
    "reference": Family(True, "all", True, {"continuous": {}, "binary": {}}),
    "elastic_net": Family(True, "all", False, {
        "continuous": {"alpha": 0.01, "l1_ratio": 0.5, "max_iter": 5000},
        "binary": {"C": 1.0, "l1_ratio": 0.5, "max_iter": 5000},
    }),
    "random_forest": Family(True, "all", False, {
        "continuous": {"n_estimators": 300, "min_samples_leaf": 10, "max_features": 0.5},
        "binary": {"n_estimators": 300, "min_samples_leaf": 10, "max_features": 0.5},
    }),
    "xgboost": Family(True, "all", False, {
        "continuous": {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8,
                       "colsample_bytree": 0.8, "min_child_weight": 5.0, "reg_lambda": 1.0},
        "binary": {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05, "subsample": 0.8,
                   "colsample_bytree": 0.8, "min_child_weight": 5.0, "reg_lambda": 1.0},
    }),
    "path_risk": Family(False, "control", False, {
        "continuous": {"alpha": 0.01, "l1_ratio": 0.5, "max_iter": 5000},
        "binary": {"C": 1.0, "l1_ratio": 0.5, "max_iter": 5000},
    }),
}
assert tuple(FAMILIES) == PROGNOSTIC_ESTIMATORS, "config.PROGNOSTIC_ESTIMATORS must list the same families"


def infer_task(frame: pd.DataFrame, outcome: str) -> Task:
    """0/1 outcomes (``deteriorated_*``, response) are binary; everything else is continuous."""
    return "binary" if is_binary_outcome(frame, outcome) else "continuous"


def _estimator(name: str, task: Task, params: dict[str, Any], seed: int):
    if name == "reference":
        if params:
            raise ConfigError(f"the reference model takes no params (got {', '.join(sorted(params))})")
        # C=inf: the reference model is the unpenalised textbook regression, so its coefficients mean what they say
        return LinearRegression() if task == "continuous" else LogisticRegression(C=np.inf, max_iter=1000)
    if name in ("elastic_net", "path_risk"):
        if task == "continuous":
            return ElasticNet(random_state=seed, **params)
        return LogisticRegression(solver="saga", random_state=seed, **params)
    if name == "random_forest":
        cls = RandomForestRegressor if task == "continuous" else RandomForestClassifier
        return cls(random_state=seed, n_jobs=1, **params)
    if name == "xgboost":
        from xgboost import XGBClassifier, XGBRegressor

        check_xgboost_params(task, params)
        if task == "continuous":
            return XGBRegressor(tree_method="hist", n_jobs=1, random_state=seed, **params)
        return XGBClassifier(tree_method="hist", n_jobs=1, random_state=seed, eval_metric="logloss", **params)
    raise ConfigError(f"unknown prognostic estimator {name!r}; use one of {', '.join(FAMILIES)}")


#: xgboost parameters whose check needs the real features (constraints per feature, evaluation sets): the probe fit
#: of `check_xgboost_params` cannot judge their values, only their names
_XGB_DATA_DEPENDENT = {"monotone_constraints", "interaction_constraints", "feature_types", "feature_weights",
                       "enable_categorical", "early_stopping_rounds", "eval_metric", "callbacks", "base_score",
                       "max_cat_to_onehot", "max_cat_threshold"}
_XGB_CHECKED: dict[str, str | None] = {}
_XGB_PROBE: dict[str, Any] = {}


def check_xgboost_params(task: Task, params: dict[str, Any]) -> None:
    """A one-line ConfigError for an xgboost parameter xgboost would not use or refuses, before any fitting.

    xgboost's sklearn estimators accept any keyword and only warn, at fit time and inside the fold's worker, that
    ``Parameters: { "max_dept" } are not used``: a misspelt parameter silently fitted the defaults. Its value checks
    (``subsample`` outside [0, 1], a text ``max_depth``, an unknown ``objective``) were internal errors from a
    worker. So the parameters are tried once on a tiny fit (one tree, eight rows, ~2 ms), with xgboost's own
    parameter validation; the verdict is cached per parameter set (tuning builds a model per trial).
    """
    import json

    key = json.dumps([task, sorted(params.items(), key=lambda kv: kv[0])], default=repr)
    if key not in _XGB_CHECKED:
        _XGB_CHECKED[key] = _xgboost_problem(task, params)
    if _XGB_CHECKED[key] is not None:
        raise ConfigError(f"model xgboost: {_XGB_CHECKED[key]}")


def _xgboost_problem(task: Task, params: dict[str, Any]) -> str | None:
    import difflib
    import re
    import warnings

    import xgboost
    from xgboost import XGBClassifier, XGBRegressor
    from xgboost.core import XGBoostError

    cls = XGBRegressor if task == "continuous" else XGBClassifier
    probe = {k: v for k, v in params.items() if k not in _XGB_DATA_DEPENDENT and k != "n_estimators"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # the booster's own parameter checks, without the sklearn wrapper's fit overhead (~2 ms)
            booster = cls(**{**probe, "n_jobs": 1, "tree_method": probe.get("tree_method", "hist")}).get_xgb_params()
            if "data" not in _XGB_PROBE:  # made once: building a DMatrix costs ~40 ms, a one-tree fit ~2 ms
                _XGB_PROBE["data"] = xgboost.DMatrix(np.arange(8.0).reshape(-1, 1), label=np.array([0.0, 1.0] * 4),
                                                     nthread=1)
            xgboost.train({**booster, "verbosity": 1}, _XGB_PROBE["data"], num_boost_round=1)
        except XGBoostError as exc:
            text = re.sub(r"^\[[0-9:]+\] \S+:\d+: ", "", str(exc).strip()).splitlines()[0].strip()
            named = re.search(r"[Pp]arameter (?:format for )?(\w+)", text)
            if named or "objective" in text.lower():
                return f"parameter {named.group(1)}: {text}" if named else text
            return None
        except (TypeError, ValueError):
            return None  # left to the real fit, which names the problem with the real data
    for warning in caught:
        unused = re.search(r'Parameters: \{ (.*?) \} are not used', str(warning.message))
        if unused:
            names = re.findall(r'"([^"]+)"', unused.group(1))
            known = sorted(cls().get_params())
            close = difflib.get_close_matches(names[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown parameter {names[0]!r}{hint}: xgboost would ignore it and fit its default"
    return None


def make_prognostic_model(name: str, task: Task, params: dict[str, Any] | None, seed: int, *,
                          features: FeatureSpec, imputer: str = "simple") -> Pipeline:
    """An unfitted Pipeline(features -> model) for family ``name``; ``params`` override the family defaults."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown prognostic estimator {name!r}; use one of {', '.join(FAMILIES)}")
    if task not in ("continuous", "binary"):
        raise ConfigError(f"unknown task {task!r}; use continuous or binary")
    family = FAMILIES[name]
    if family.reference_features_only:
        baseline = features.outcome_baseline
        if baseline is None or baseline not in features.all_columns:
            raise ConfigError(f"the reference model needs the outcome's own baseline column ({baseline or 'none'}) "
                              "among the covariates")
        features = features.restricted_to([baseline])
    merged = {**family.defaults[task], **(params or {})}
    try:
        estimator = _estimator(name, task, merged, int(seed))
    except TypeError as exc:
        raise ConfigError(f"model {name}: {exc}") from None
    preprocessor = make_preprocessor(features, use_arm=family.uses_arm, imputer=imputer, seed=int(seed))
    return Pipeline([("features", preprocessor), ("model", estimator)])


def input_columns(name: str, features: FeatureSpec) -> list[str]:
    """The columns a family reads from a participant's row (what a user of the final model must supply)."""
    family = FAMILIES[name]
    columns = [features.outcome_baseline] if family.reference_features_only else list(features.all_columns)
    return columns + ([features.arm] if family.uses_arm else [])


def predict_outcome(model: Pipeline, X: pd.DataFrame, task: Task) -> np.ndarray:
    """Predicted outcome (continuous) or predicted probability of the outcome being 1 (binary)."""
    if task == "binary":
        classes = list(model.classes_)
        return model.predict_proba(X)[:, classes.index(1)] if 1 in classes else np.zeros(len(X))
    return np.asarray(model.predict(X), dtype=float)
