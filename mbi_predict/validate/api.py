"""Validate any estimator across trials from Python: ``validate_across_trials(estimator, data)``.

The notebook face of the leave-one-trial-out engine (`validate.loto`): the same data preparation
(`loto.prepare_data`), the same fold plan and size rules (`validate.splitters.LeaveOneTrialOut`, which calls
`loto.plan_folds`), the same per-fold seeds (`loto.derive_seed` of the seed, the model's name and the held-out
trial), the same fold-fitted preprocessing (`models.preprocess.make_preprocessor`: imputation, scaling and encoding
learnt from the training trials only), the same per-trial metrics (`validate.metrics.trial_metrics` for outcomes,
`validate.benefit.per_trial_benefit_metrics` for predicted benefit) and the same random-effects pooling
(`validate.pooling.pool_metric`, with Higgins et al. 2009 prediction intervals for a new trial). What differs from
`run_experiment`: the estimator is an object rather than a config name, so there is no Optuna tuning, SHAP,
heterogeneity verdict, MLflow tracking or file output here — only the validation, returned as a frozen result.

Validating a model across the trials that will use it, rather than within one data set, follows Debray et al.
2017 (BMJ 356:i6460) and Riley et al. 2016 (BMJ 353:i3140); benefit metrics are described in `validate.benefit`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.validate.loto import Fold, PreparedData, derive_seed
from mbi_predict.validate.splitters import LeaveOneTrialOut

POOLING_METHODS = ("REML", "ML", "DL", "PM", "FE")
#: effect-model outputs that are bookkeeping or truth-based, not pooled as benefit metrics (as in `loto.effect_fold`)
_NOT_POOLED = ("n", "n_mbi", "n_control", "pehe", "cate_truth_corr")


@dataclass(frozen=True)
class TrialValidation:
    """Per-held-out-trial metrics and their random-effects pooling. Aggregates only: no participant rows."""

    model: str
    kind: str                      # "prognostic" or "effect"
    outcome: str
    outcome_type: str              # "continuous" or "binary"
    scheme: str                    # "loto", or "custom:<splitter>" for another scikit-learn splitter
    per_trial: pd.DataFrame        # one row per held-out trial: counts, metric values, <metric>_variance
    pooled: dict[str, dict[str, Any]]
    skipped: tuple[dict[str, Any], ...] = ()
    pooling: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool | None = None   # effect models: the outcome's direction (a benefit is a negative CATE
    #                                        for distress, where higher is worse)

    def estimate(self, metric: str) -> float | None:
        """The pooled estimate of one metric (None when it could not be pooled)."""
        if metric not in self.pooled:
            raise ConfigError(f"no pooled metric {metric!r}; available: {', '.join(self.pooled)}")
        return self.pooled[metric]["estimate"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN -> None)."""
        rows = self.per_trial.astype(object).where(self.per_trial.notna(), None).to_dict(orient="records")
        return _json_safe({"model": self.model, "kind": self.kind, "outcome": self.outcome,
                           "outcome_type": self.outcome_type, "scheme": self.scheme, "per_trial": rows,
                           "pooled": self.pooled, "skipped": list(self.skipped), "pooling": dict(self.pooling),
                           "higher_is_better": self.higher_is_better})


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.str_):
        return str(value)
    return value


# ------------------------------------------------------------------------------------------------ the inputs

def _kind_of(estimator: Any, kind: str) -> str:
    if kind in ("prognostic", "effect"):
        return kind
    if kind != "auto":
        raise ConfigError(f"kind must be 'auto', 'prognostic' or 'effect', got {kind!r}")
    if callable(getattr(estimator, "effect", None)) and callable(getattr(estimator, "fit", None)):
        return "effect"
    if callable(getattr(estimator, "predict", None)) and callable(getattr(estimator, "fit", None)):
        return "prognostic"
    raise ConfigError(f"{type(estimator).__name__} is neither a scikit-learn regressor/classifier (fit, predict) "
                      "nor an effect estimator (fit(Y, T, X=, groups=), effect(X))")


def _prepared(data: Any, *, outcome: str | None, covariates, study_traits, control_type: str,
              truth: pd.DataFrame | None) -> PreparedData:
    from mbi_predict.validate.loto import attach_truth, prepare_data

    if isinstance(data, PreparedData):
        if outcome is not None and outcome != data.outcome:
            raise ConfigError(f"outcome {outcome!r} differs from the prepared data's {data.outcome!r}")
        return attach_truth(data, truth)
    if not isinstance(data, pd.DataFrame):
        raise ConfigError("data must be an IPD table (pandas DataFrame) or a loto.PreparedData")
    if outcome is None:
        raise ConfigError("outcome: name the outcome column to validate against (e.g. 'distress_fu1_6')")
    from mbi_predict.data.schema import check_ipd

    frame = check_ipd(data, source="data")
    prepared = prepare_data(frame, outcome=outcome, covariates=covariates, study_traits=list(study_traits),
                            control_type=control_type)
    return attach_truth(prepared, truth)


def _folds(cv: Any, data: PreparedData, kind: str) -> tuple[str, list[Fold], list[dict[str, Any]]]:
    """(scheme, folds, skipped) from a LeaveOneTrialOut (the package's rules) or any scikit-learn splitter."""
    from mbi_predict.validate.benefit import MIN_PER_ARM

    skipped = [dict(entry) for entry in data.excluded_trials]
    if cv is None or isinstance(cv, LeaveOneTrialOut):
        cv_in = LeaveOneTrialOut() if cv is None else cv
        size, per_arm = cv_in.min_trial_size, cv_in.min_per_arm
        if kind == "effect":  # benefit is estimated inside the held-out trial: both arms must be big enough
            per_arm = max(per_arm, MIN_PER_ARM)
        splitter = LeaveOneTrialOut(min_trial_size=size, min_per_arm=per_arm, arm=data.arm)
        plan = splitter.plan(data.X, data.y, data.trial)
        if isinstance(cv, LeaveOneTrialOut):  # the caller's object reports what was skipped, as after split()
            cv.held_out_, cv.skipped_, cv.trials_ = splitter.held_out_, splitter.skipped_, splitter.trials_
        return "loto", list(plan.folds), skipped + splitter.skipped_
    if not callable(getattr(cv, "split", None)):
        raise ConfigError("cv must be None, a LeaveOneTrialOut or a scikit-learn splitter with split(X, y, groups)")
    folds = []
    for number, (train, test) in enumerate(cv.split(data.X, data.y, data.trial), start=1):
        held = np.unique(data.trial[test])
        label = str(held[0]) if len(held) == 1 else f"fold_{number}"
        folds.append(Fold(label, np.asarray(train), np.asarray(test)))
    if len(folds) < 2:
        raise ConfigError("cv gave fewer than 2 folds; nothing to pool")
    return f"custom:{type(cv).__name__}", folds, skipped


def _seeded(estimator: Any, seed: int) -> Any:
    """A fresh clone; its own ``random_state`` (if it has one) set to the fold's seed, as `loto` seeds models.
    Estimators without ``get_params`` (econml's) are deep-copied instead; ``fit`` then replaces any fitted state."""
    from sklearn.base import clone

    try:
        model = clone(estimator)
    except TypeError:
        model = copy.deepcopy(estimator)
        if hasattr(model, "random_state"):
            model.random_state = seed
        return model
    if "random_state" in model.get_params(deep=False):
        model.set_params(random_state=seed)
    return model


# --------------------------------------------------------------------------------------------------- a fold

def _prognostic_fold(estimator, fold: Fold, data: PreparedData, seed: int, bootstrap: int, imputer: str) -> dict:
    """Mirror of `loto.prognostic_fold` for an estimator object (population: all randomised participants)."""
    from sklearn.pipeline import Pipeline

    from mbi_predict.models.preprocess import make_preprocessor
    from mbi_predict.models.prognostic import predict_outcome
    from mbi_predict.validate.metrics import trial_metrics

    observed = np.isfinite(data.y)
    train = fold.train[observed[fold.train]]
    if len(train) == 0 or np.unique(data.y[train]).size < 2:
        raise DataError("no outcome variation to learn from in the training rows", trial=fold.label)
    model = Pipeline([("features", make_preprocessor(data.features, use_arm=True, imputer=imputer, seed=seed)),
                      ("model", _seeded(estimator, seed))])
    model.fit(data.X.iloc[train], data.y[train])
    test = fold.test
    prediction = predict_outcome(model, data.X.iloc[test], data.task)
    evaluated = observed[test]
    metrics = trial_metrics(data.y[test][evaluated], prediction[evaluated], data.task, bootstrap=bootstrap,
                            seed=derive_seed(seed, "bootstrap"))
    return _row(fold, int(evaluated.sum()), len(test), {k: (m.value, m.variance) for k, m in metrics.items()})


def _effect_fold(estimator, fold: Fold, data: PreparedData, seed: int, bootstrap: int, imputer: str) -> dict:
    """Mirror of `loto.fit_effect` + `loto.effect_fold` for an estimator object (no intervals, risks or harm)."""
    from mbi_predict.models.preprocess import make_preprocessor
    from mbi_predict.validate.benefit import per_trial_benefit_metrics
    from mbi_predict.validate.loto import _pehe_variance

    observed = np.isfinite(data.y)
    train = fold.train[observed[fold.train]]
    features = make_preprocessor(data.features, use_arm=False, imputer=imputer, seed=seed)
    X_train = features.fit_transform(data.X.iloc[train])
    model = _seeded(estimator, seed)
    model.fit(data.y[train], data.arm[train], X=X_train, groups=data.trial[train])
    test = fold.test
    X_test = features.transform(data.X.iloc[test])
    cate = np.asarray(model.effect(X_test), dtype=float).reshape(-1)
    # the constant-effect yardstick: the model's own average predicted effect in its training trials
    constant = float(np.mean(model.effect(features.transform(data.X.iloc[train]))))
    evaluated = observed[test]
    truth = None
    if data.truth_cate is not None:
        truth = data.truth_cate[test][evaluated]
        truth = truth if truth.size and np.all(np.isfinite(truth)) else None
    raw = per_trial_benefit_metrics(data.y[test][evaluated], data.arm[test][evaluated], cate[evaluated],
                                    X=X_test[evaluated], higher_is_better=not data.outcome_higher_is_worse,
                                    cate_true=truth, seed=derive_seed(seed, "benefit"), B=bootstrap,
                                    constant=constant)
    metrics = {name: (float(value), float(raw.get(f"{name}_se", np.nan)) ** 2) for name, value in raw.items()
               if not name.endswith("_se") and name not in _NOT_POOLED}
    if truth is not None:
        corr = float(raw["cate_truth_corr"])
        metrics["pehe"] = (float(raw["pehe"]), _pehe_variance(truth, cate[evaluated]))
        # Fisher z: var(atanh r) = 1/(n-3), reported on the r scale with the delta method
        metrics["cate_truth_corr"] = (corr, (1 - corr ** 2) ** 2 / max(len(truth) - 3, 1)
                                      if np.isfinite(corr) else np.nan)
    return _row(fold, int(evaluated.sum()), len(test), metrics)


def _row(fold: Fold, n: int, n_randomised: int, metrics: dict[str, tuple[float, float]]) -> dict:
    return {"trial_id": fold.label, "n": n, "n_randomised": n_randomised,
            "n_missing_outcome": n_randomised - n, "metrics": metrics}


_FOLD = {"prognostic": _prognostic_fold, "effect": _effect_fold}


# ---------------------------------------------------------------------------------------------------- public

def validate_across_trials(estimator: Any, data: pd.DataFrame | PreparedData, cv: Any = None, *,
                           outcome: str | None = None, covariates: list[str] | str = "all", kind: str = "auto",
                           pooling: str = "REML", seed: int = 0, n_jobs: int = 1, name: str | None = None,
                           study_traits: tuple[str, ...] | list[str] = (), control_type: str = "passive",
                           bootstrap: int = 200, hksj: bool = False, level: float = 0.95,
                           imputer: str = "simple", truth: pd.DataFrame | None = None) -> TrialValidation:
    """Fit ``estimator`` once per held-out trial on the other trials only; score it in the held-out trial; pool
    each metric over trials by random-effects meta-analysis.

    ``estimator``: a scikit-learn regressor or classifier (``kind="prognostic"``: it predicts the outcome from the
    covariates and the arm, behind the fold-fitted preprocessing), or an effect estimator with
    ``fit(Y, T, *, X, groups)`` and ``effect(X)`` (``kind="effect"``, e.g. ``mbi_predict.TLearner()``: it gets the
    preprocessed covariates, the arm as T and trial ids as groups; econml's estimators qualify). It is cloned per
    fold (deep-copied when it has no ``get_params``) and its ``random_state``, if any, set to the fold's seed. ``data``: an IPD table (see docs/DATA_MODEL.md; ``outcome`` required) or a
    `loto.PreparedData`. ``cv``: None or `LeaveOneTrialOut` (the package's size rules; effect models also need
    `validate.benefit.MIN_PER_ARM` observed participants per arm in a held-out trial) or any scikit-learn splitter
    (called with groups = trial ids). ``pooling``: the tau² estimator (REML, ML, DL, PM, FE); ``hksj`` the
    Hartung–Knapp CI. ``name``: the model's label, which enters the fold seeds as in `run_experiment` (default: the
    class name). ``truth``: a simulator truth table, scored as pehe / cate_truth_corr, never a model input.
    """
    if pooling not in POOLING_METHODS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLING_METHODS)}, got {pooling!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level must lie between 0 and 1, got {level}")
    kind = _kind_of(estimator, kind)
    prepared = _prepared(data, outcome=outcome, covariates=covariates, study_traits=study_traits,
                         control_type=control_type, truth=truth)
    if kind == "prognostic":
        from sklearn.base import is_classifier

        if prepared.task == "binary" and not callable(getattr(estimator, "predict_proba", None)):
            raise ConfigError(f"{prepared.outcome} is a 0/1 outcome: use a classifier with predict_proba")
        if prepared.task == "continuous" and is_classifier(estimator):
            raise ConfigError(f"{prepared.outcome} is continuous: use a regressor, not a classifier")
    label = name or type(estimator).__name__
    scheme, folds, skipped = _folds(cv, prepared, kind)
    jobs = [(estimator, fold, prepared, derive_seed(seed, label, fold.label), int(bootstrap), imputer)
            for fold in folds]
    run = _FOLD[kind]
    if n_jobs == 1:
        rows = [run(*job) for job in jobs]
    else:
        from joblib import Parallel, delayed

        rows = Parallel(n_jobs=n_jobs)(delayed(run)(*job) for job in jobs)
    return _result(rows, prepared, kind=kind, label=label, scheme=scheme, skipped=skipped,
                   pooling=dict(method=pooling, hksj=bool(hksj), level=float(level)))


def _result(rows: list[dict], data: PreparedData, *, kind: str, label: str, scheme: str,
            skipped: list[dict], pooling: dict) -> TrialValidation:
    from mbi_predict.validate.pooling import pool_metric

    names = list(dict.fromkeys(metric for row in rows for metric in row["metrics"]))
    labels = [row["trial_id"] for row in rows]
    pooled = {}
    for metric in names:
        values = [row["metrics"].get(metric, (np.nan, np.nan))[0] for row in rows]
        variances = [row["metrics"].get(metric, (np.nan, np.nan))[1] for row in rows]
        pooled[metric], _ = pool_metric(metric, values, variances, labels, method=pooling["method"],
                                        hksj=pooling["hksj"], level=pooling["level"])
    table = pd.DataFrame([{**{k: v for k, v in row.items() if k != "metrics"},
                           **{m: row["metrics"].get(m, (np.nan, np.nan))[0] for m in names},
                           **{f"{m}_variance": row["metrics"].get(m, (np.nan, np.nan))[1] for m in names}}
                          for row in rows])
    return TrialValidation(model=label, kind=kind, outcome=data.outcome, outcome_type=data.task, scheme=scheme,
                           per_trial=table, pooled=pooled, skipped=tuple(_json_safe(skipped)), pooling=pooling,
                           higher_is_better=None if kind == "prognostic" else not data.outcome_higher_is_worse)


__all__ = ["validate_across_trials", "TrialValidation"]
