"""The fold runners: fit one model on a fold's training rows and score it on the held-out trial.

* ``prognostic`` (`prognostic_fold`): tune (optionally, trial-grouped inner folds) and fit an sklearn Pipeline on the
  training rows of its population; predict every held-out row; score the observed ones with `validate.metrics`.
* ``effect`` (`effect_fold`): fit a CATE model behind a fold-fitted covariate transformer; score predicted benefit
  in the held-out trial with `validate.benefit` (doubly robust pseudo-outcomes from the held-out trial alone), plus
  group effects, harm and a treatment rule (`validate.groups`), and ``pehe``/``cate_truth_corr`` against the
  simulator's truth when the data carry it.

Contract: each runner is a plain function of (job, data) returning a `FoldResult`; the held-out trial only ever
reaches ``predict``/``effect``. SHAP, when the job asks for it, is the job's ``explainer`` (run in the same worker,
so the fold's model never has to be kept or shipped back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import InvalidParameterError

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models.effect import make_effect_model
from mbi_predict.models.preprocess import make_preprocessor
from mbi_predict.models.prognostic import FAMILIES, make_prognostic_model, predict_outcome
from mbi_predict.models.tuning import search_space, tune
from mbi_predict.validate.benefit import dr_pseudo_outcomes, harm_summary, per_trial_benefit_metrics
from mbi_predict.validate.folds import FittedModel, FoldJob, FoldResult, derive_seed
from mbi_predict.validate.groups import held_out_groups, rule_frame
from mbi_predict.validate.metrics import MetricValue, trial_metrics
from mbi_predict.validate.prepared import PreparedData


def _fit_params_errors(name: str):
    """Invalid hyper-parameter values surface at fit time in sklearn; make them config errors naming the model."""
    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            if exc_type is not None and issubclass(exc_type, InvalidParameterError):
                raise ConfigError(f"models.{name}.params: {exc}") from None
            return False
    return _Guard()


def fit_prognostic(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FittedModel:
    """Tune (optionally) and fit one prognostic model on the fold's training rows of its population."""
    spec, family = job.model, FAMILIES[job.model.estimator]
    observed = np.isfinite(data.y)
    in_population = data.arm == 0 if family.population == "control" else np.ones(data.n, dtype=bool)
    train = job.fold.train[observed[job.fold.train] & in_population[job.fold.train]]
    if len(train) == 0 or np.unique(data.y[train]).size < 2:
        raise DataError(f"model {spec.name}: no outcome variation to learn from in the training rows",
                        trial=job.fold.label)
    X_train, y_train = data.X.iloc[train], data.y[train]

    def build(params: dict[str, Any]):
        return make_prognostic_model(spec.estimator, data.task, {**spec.params, **params}, job.seed,
                                     features=data.features, imputer=spec.imputer)

    def predict(model, X):
        return predict_outcome(model, X, data.task)

    tuning, tuned = None, {}
    start = time.perf_counter()
    if spec.tuning.n_trials > 0:
        space = search_space(spec.estimator, data.task, spec.tuning.search_space, spec.params)
        strata = data.arm[train] * 3 + (y_train.astype(int) if data.task == "binary" else 0)
        with _fit_params_errors(spec.name):
            result = tune(build, predict, X_train, y_train, groups=data.trial[train], strata=strata,
                          task=data.task, space=space, n_trials=spec.tuning.n_trials, timeout=spec.tuning.timeout,
                          seed=job.seed, inner_folds=job.inner_folds,
                          defaults=FAMILIES[spec.estimator].defaults[data.task], storage=job.storage,
                          study_name=job.study_name, on_trial=on_trial,
                          identity={"estimator": spec.estimator, "params": spec.params, "imputer": spec.imputer})
        tuning, tuned = result.to_dict(), result.best_params
    tune_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with _fit_params_errors(spec.name):
        model = build(tuned).fit(X_train, y_train)
    return FittedModel(model, None, train, tuning, tuned, tune_seconds, time.perf_counter() - start)


def prognostic_fold(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FoldResult:
    """Fit on the training trials (`fit_prognostic`); predict every held-out row and score the observed ones."""
    spec, family = job.model, FAMILIES[job.model.estimator]
    observed = np.isfinite(data.y)
    in_population = data.arm == 0 if family.population == "control" else np.ones(data.n, dtype=bool)
    fitted = fit_prognostic(job, data, on_trial)
    model, tuning, tuned = fitted.model, fitted.tuning, fitted.tuned
    tune_seconds, fit_seconds = fitted.tune_seconds, fitted.fit_seconds

    def predict(model, X):
        return predict_outcome(model, X, data.task)

    test = job.fold.test
    start = time.perf_counter()
    prediction = predict(model, data.X.iloc[test])
    predict_seconds = time.perf_counter() - start
    evaluated = observed[test] & in_population[test]
    metrics = trial_metrics(data.y[test][evaluated], prediction[evaluated], data.task, bootstrap=job.bootstrap,
                            seed=derive_seed(job.seed, "bootstrap"))
    predictions = pd.DataFrame({"trial_id": data.trial[test], "participant_id": data.participant[test],
                                "model": spec.name, "prediction": prediction})
    shap = _fold_shap(job, data, fitted)
    return FoldResult(
        model=spec.name, kind="prognostic", held_out=job.fold.label, n=int(evaluated.sum()),
        n_randomised=int(in_population[test].sum()),
        n_missing_outcome=int((in_population[test] & ~observed[test]).sum()), metrics=metrics,
        timing={"fit_seconds": fit_seconds, "predict_seconds": predict_seconds, "tune_seconds": tune_seconds,
                "shap_seconds": shap.seconds if shap is not None else 0.0},
        best_params={**spec.params, **tuned}, tuning=tuning, predictions=predictions, evaluated=evaluated,
        population=family.population, test_rows=test, fitted_model=model if job.keep_model else None, shap=shap)


def _fold_shap(job: FoldJob, data: PreparedData, fitted: FittedModel):
    """SHAP of the fold model on held-out rows when the job asks for it (aggregates + in-memory values), through
    the job's ``explainer``."""
    if job.explain is None or not job.explain.enabled:
        return None
    if job.explainer is None:
        raise ConfigError(f"models.{job.model.name}.explain: SHAP in a fold job needs an explainer (make_jobs(..., "
                          "explainer=mbi_predict.explain.run.explain_fold))")
    return job.explainer(job, data, fitted)


def fit_effect(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FittedModel:
    """Fit a CATE model on the fold's training rows behind a fold-fitted covariate transformer (no arm: it is the
    treatment); trials are passed as ``groups`` so cross-fitting folds hold whole trials."""
    spec = job.model
    if spec.tuning.n_trials > 0:
        raise ConfigError(f"models.{spec.name}.tuning.n_trials: tuning of effect models is not supported yet; "
                          "set it to 0 and give params")
    train = job.fold.train[np.isfinite(data.y[job.fold.train])]
    start = time.perf_counter()
    features = make_preprocessor(data.features, use_arm=False, imputer=spec.imputer, seed=job.seed)
    X_train = features.fit_transform(data.X.iloc[train])
    model = make_effect_model(spec.estimator, **{"random_state": job.seed, **spec.params})
    model.fit(data.y[train], data.arm[train], X=X_train, groups=data.trial[train])
    return FittedModel(model, features, train, None, {}, 0.0, time.perf_counter() - start)


def effect_fold(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FoldResult:
    """Fit a CATE model on the training trials (`fit_effect`); score predicted benefit in the held-out trial
    with `validate.benefit.per_trial_benefit_metrics` (+ ``pehe``/``cate_truth_corr`` when the data carry the
    simulator's truth); for a 0/1 worsening outcome and a model with ``predict_risk``, predicted harm."""
    spec = job.model
    observed = np.isfinite(data.y)
    test = job.fold.test
    fitted = fit_effect(job, data, on_trial)
    model, features, fit_seconds = fitted.model, fitted.preprocess, fitted.fit_seconds
    start = time.perf_counter()
    X_test = features.transform(data.X.iloc[test])
    cate = np.asarray(model.effect(X_test), dtype=float).reshape(-1)
    # the constant-effect yardstick: the model's own average predicted effect in its training trials, for everyone
    cate_train = np.asarray(model.effect(features.transform(data.X.iloc[fitted.train_rows])), dtype=float).reshape(-1)
    constant = float(np.mean(cate_train))
    cate_low = cate_high = np.full(len(test), np.nan)
    try:  # only some estimators give pointwise intervals; the others refuse with a ConfigError
        if not job.light:
            low, high = model.effect_interval(X_test)
            cate_low, cate_high = (np.asarray(v, dtype=float).reshape(-1) for v in (low, high))
    except (ConfigError, NotImplementedError):
        pass
    risks = None
    if data.task == "binary" and data.outcome.startswith("deteriorated_") and hasattr(model, "predict_risk"):
        try:
            risks = tuple(np.asarray(r, dtype=float).reshape(-1) for r in model.predict_risk(X_test))
        except ConfigError:
            risks = None
    predict_seconds = time.perf_counter() - start
    evaluated = observed[test]
    y_eval, t_eval, cate_eval, X_eval = data.y[test][evaluated], data.arm[test][evaluated], cate[evaluated], \
        X_test[evaluated]
    truth = None
    if data.truth_cate is not None:
        truth = data.truth_cate[test][evaluated]
        truth = truth if truth.size and np.all(np.isfinite(truth)) else None
    seed = derive_seed(job.seed, "benefit")
    pseudo = dr_pseudo_outcomes(y_eval, t_eval, X_eval, seed=seed)
    raw = per_trial_benefit_metrics(y_eval, t_eval, cate_eval, X=X_eval,
                                    higher_is_better=not data.outcome_higher_is_worse, cate_true=truth, seed=seed,
                                    B=job.bootstrap, constant=constant, full=not job.light, pseudo=pseudo)
    metrics = {name: MetricValue(float(value), float(raw.get(f"{name}_se", np.nan)) ** 2, "benefit_se")
               for name, value in raw.items()
               if not name.endswith("_se") and name not in ("n", "n_mbi", "n_control", "pehe", "cate_truth_corr")}
    group_extras: dict[str, Any] = {}
    if job.groups is not None and data.task == "continuous":
        group_metrics, group_extras = _group_metrics(job, data, fitted, cate_train, cate, evaluated, pseudo,
                                                     X_test)
        metrics.update(group_metrics)
    if job.light:
        return FoldResult(model=spec.name, kind="effect", held_out=job.fold.label, n=int(evaluated.sum()),
                          n_randomised=len(test), n_missing_outcome=int((~observed[test]).sum()), metrics=metrics,
                          timing={"fit_seconds": fit_seconds, "predict_seconds": 0.0, "tune_seconds": 0.0,
                                  "shap_seconds": 0.0}, best_params={}, tuning=None,
                          predictions=pd.DataFrame(), evaluated=evaluated, test_rows=test)
    if truth is not None:
        n_eval = len(truth)
        metrics["pehe"] = MetricValue(float(raw["pehe"]), _pehe_variance(truth, cate_eval), "delta")
        corr = float(raw["cate_truth_corr"])
        # Fisher z: var(atanh r) = 1/(n-3); reported on the r scale with the delta method
        metrics["cate_truth_corr"] = MetricValue(corr, (1 - corr ** 2) ** 2 / max(n_eval - 3, 1)
                                                 if np.isfinite(corr) else np.nan, "fisher_z")
    # the pseudo-outcomes of the metrics, in memory for the pooled calibration-for-benefit table and plot
    extras: dict[str, Any] = {"pseudo": pseudo, "cate_scored": cate_eval, **group_extras}
    predictions = pd.DataFrame({"trial_id": data.trial[test], "participant_id": data.participant[test],
                                "model": spec.name, "cate": cate, "cate_low": cate_low, "cate_high": cate_high})
    if risks is not None:
        risk_control, risk_mbi = risks
        predictions["risk_control"], predictions["risk_mbi"] = risk_control, risk_mbi
        harm = harm_summary(risk_control, risk_mbi)
        extras["harm"] = harm
        metrics.update(_harm_metrics(harm, risk_mbi - risk_control, (risk_mbi - risk_control)[evaluated], pseudo))
    shap = _fold_shap(job, data, fitted)
    return FoldResult(
        model=spec.name, kind="effect", held_out=job.fold.label, n=int(evaluated.sum()), n_randomised=len(test),
        n_missing_outcome=int((~observed[test]).sum()), metrics=metrics,
        timing={"fit_seconds": fit_seconds, "predict_seconds": predict_seconds, "tune_seconds": 0.0,
                "shap_seconds": shap.seconds if shap is not None else 0.0},
        best_params=dict(spec.params), tuning=None, predictions=predictions, evaluated=evaluated,
        test_rows=test, fitted_model=model if job.keep_model else None, shap=shap, extras=extras)


def _group_metrics(job: FoldJob, data: PreparedData, fitted: FittedModel, cate_train: np.ndarray, cate: np.ndarray,
                   evaluated: np.ndarray, pseudo: np.ndarray, X_test: np.ndarray) -> tuple[dict, dict]:
    """Group effects, harm and the treatment rule of the held-out trial (`validate.groups.held_out_groups`)."""
    settings = replace(job.groups, rules=job.groups.rules and not job.light)
    rule_train = rule_test = None
    if settings.rules:
        covariates = list(data.covariates)
        rule_train, fill = rule_frame(data.X.iloc[fitted.train_rows], covariates)
        rule_test, _ = rule_frame(data.X.iloc[job.fold.test], covariates, fill)
    raw, extras = held_out_groups(sign=-1.0 if data.outcome_higher_is_worse else 1.0, cate_train=cate_train,
                                  cate_test=cate, evaluated=evaluated, pseudo=pseudo, X_test=X_test,
                                  arm_test=data.arm[job.fold.test], settings=settings, rule_train=rule_train,
                                  rule_test=rule_test,
                                  deteriorated_test=None if data.deteriorated is None else
                                  data.deteriorated[job.fold.test])
    return {name: MetricValue(float(value), float(variance), "groups") for name, (value, variance) in raw.items()}, \
        extras


def _pehe_variance(truth: np.ndarray, cate: np.ndarray) -> float:
    """Delta-method variance of sqrt(mean squared error) over participants."""
    squared = (truth - cate) ** 2
    mse = squared.mean()
    if len(squared) < 2 or mse <= 0:
        return np.nan
    return float(squared.var(ddof=1) / len(squared) / (4 * mse))


#: fewest participants predicted harmed (or not) for the observed effect among them to be reported
MIN_HARM_GROUP = 10


def _harm_metrics(harm: dict, difference_all: np.ndarray, difference_scored: np.ndarray,
                  pseudo: np.ndarray) -> dict[str, MetricValue]:
    """Predicted harm of one held-out trial as poolable metrics, validated against the trial's own outcomes:
    the observed (doubly robust) risk difference among those predicted to be harmed and among the others."""
    n = len(difference_all)
    share = harm["share_harmed"]
    out = {"share_predicted_harmed": MetricValue(share, share * (1 - share) / n if 0 < share < 1 else np.nan,
                                                 "binomial"),
           "mean_predicted_risk_difference": MetricValue(harm["mean_risk_difference"],
                                                         float(np.var(difference_all, ddof=1) / n), "mean")}
    harmed = difference_scored > harm["threshold"]
    for name, rows in (("observed_effect_predicted_harmed", harmed),
                       ("observed_effect_predicted_not_harmed", ~harmed)):
        if rows.sum() >= MIN_HARM_GROUP:
            out[name] = MetricValue(float(pseudo[rows].mean()), float(pseudo[rows].var(ddof=1) / rows.sum()), "mean")
        else:
            out[name] = MetricValue(np.nan, np.nan, "mean")
    return out
