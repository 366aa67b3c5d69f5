"""The leave-one-trial-out engine: plan folds, run one job per (model, held-out trial), collect per-trial metrics.

Why this shape:
* The data are loaded, checked and put into model-ready form ONCE (`prepare_data`); every fold gets row indices.
* Everything fitted (imputer, scaler, encoder, tuning, model) lives in one sklearn Pipeline built per fold from the
  training trials' rows only. The held-out trial only ever reaches `predict`.
* A fold job is a plain function of (job, data) returning a `FoldResult`, so joblib can run jobs in parallel (or on
  a Dask cluster through joblib's backend) and results are identical whatever ``n_jobs``: each job's randomness is
  seeded from the config seed, the model and the held-out trial, never from the order jobs run in.
* ``FOLD_RUNNERS`` dispatches on the model's kind: ``prognostic`` predicts outcomes and scores them with
  `validate.metrics`; ``effect`` fits a CATE model (`models.effect.make_effect_model`) and scores predicted benefit
  with `validate.benefit.per_trial_benefit_metrics`. A new kind is one new function in that table.
* ITT: participants with a missing outcome stay in the table; they are excluded from fitting and from that outcome's
  metrics but counted (``n_missing_outcome``) and still get a prediction.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from sklearn.utils._param_validation import InvalidParameterError

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.data.schema import (HIGHER_IS_WORSE, STUDY_TRAITS, baseline_of, construct_of,
                                     present_baseline_covariates)
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.models.preprocess import ARM, FeatureSpec, categorical_as_object, make_preprocessor
from mbi_predict.models.prognostic import FAMILIES, infer_task, make_prognostic_model, predict_outcome
from mbi_predict.models.tuning import search_space, tune
from mbi_predict.validate.metrics import MetricValue, trial_metrics

INTERNAL_NOTE = "internal, not external, validation: K-fold over participants of the same trial(s)"
ITT_NOTE = ("intention-to-treat table: participants with a missing outcome are kept, get predictions, and are "
            "counted per trial (n_missing_outcome), but are excluded from fitting and from the metrics")


# ------------------------------------------------------------------------------------------------------ data

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

    @property
    def n(self) -> int:
        return len(self.y)


def resolve_covariates(frame: pd.DataFrame, covariates: list[str] | str, study_traits: list[str]) -> list[str]:
    """The covariates and study traits to model, under the covariate policy (`schema.predictor_refusal`): outcomes
    of any window (with their `_raw` totals, harm and improvement flags), ids, trial and arm columns are never
    predictors; naming one is a one-line ConfigError naming the column."""
    from mbi_predict.data.schema import predictor_refusal

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
    return PreparedData(X=X, y=y, trial=data["trial_id"].astype(str).to_numpy(),
                        participant=data["participant_id"].astype(str).to_numpy(),
                        arm=data["arm"].to_numpy(dtype=int), outcome=outcome, task=task, covariates=tuple(chosen),
                        features=FeatureSpec.from_frame(X, chosen, baseline), control_type=control_type,
                        excluded_trials=tuple(excluded), outcome_higher_is_worse=bool(worse_up))


# ----------------------------------------------------------------------------------------------------- folds

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


# ------------------------------------------------------------------------------------------------------ jobs

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
    explain: Any = None          # ExplainConfig when SHAP is computed in the fold (mbi_predict.explain.run)
    #: a permutation refit of the heterogeneity verdict's calibration (`validate.verdict_null`): only the metrics the
    #: verdict uses (RATE, calibration slope, the constant-effect yardstick); no intervals, SHAP or predictions kept
    light: bool = False
    #: ``validate.groups.GroupSettings``: group effects, harm and treatment rules of effect models (None: off)
    groups: Any = None


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
                          study_name=job.study_name, on_trial=on_trial)
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
    """SHAP of the fold model on held-out rows when the job asks for it (aggregates + in-memory values)."""
    if job.explain is None or not job.explain.enabled:
        return None
    from mbi_predict.explain.run import explain_fold

    return explain_fold(job, data, fitted)


def fit_effect(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FittedModel:
    """Fit a CATE model on the fold's training rows behind a fold-fitted covariate transformer (no arm: it is the
    treatment); trials are passed as ``groups`` so cross-fitting folds hold whole trials."""
    try:
        from mbi_predict.models.effect import make_effect_model
    except ImportError as exc:
        raise ConfigError(f"models.{job.model.name}: effect models are not available ({exc})") from None
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
    try:
        from mbi_predict.validate.benefit import dr_pseudo_outcomes, per_trial_benefit_metrics
    except ImportError as exc:
        raise ConfigError(f"models.{job.model.name}: benefit metrics are not available ({exc})") from None
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
        from mbi_predict.validate.benefit import harm_summary

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
    from dataclasses import replace

    from mbi_predict.validate.groups import held_out_groups, rule_frame

    settings = replace(job.groups, rules=job.groups.rules and not job.light)
    rule_train = rule_test = None
    if settings.rules:
        covariates = list(data.covariates)
        rule_train, fill = rule_frame(data.X.iloc[fitted.train_rows], covariates)
        rule_test, _ = rule_frame(data.X.iloc[job.fold.test], covariates, fill)
    raw, extras = held_out_groups(sign=-1.0 if data.outcome_higher_is_worse else 1.0, cate_train=cate_train,
                                  cate_test=cate, evaluated=evaluated, pseudo=pseudo, X_test=X_test,
                                  arm_test=data.arm[job.fold.test], settings=settings, rule_train=rule_train,
                                  rule_test=rule_test)
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


#: The extension point: one fold function per model kind (and how that kind fits its final, all-trials model).
FOLD_RUNNERS: dict[str, Callable[..., FoldResult]] = {"prognostic": prognostic_fold, "effect": effect_fold}
FINAL_FITTERS: dict[str, Callable[..., FittedModel]] = {"prognostic": fit_prognostic, "effect": fit_effect}


def fit_final_models(config: ExperimentConfig, data: PreparedData) -> dict[str, FittedModel]:
    """Every model refitted (and re-tuned, with trial-grouped inner folds) on all analysed trials: the model a user
    would deploy, whose expected performance in a new trial is what the leave-one-trial-out metrics estimate."""
    return {spec.name: fit_final_model(config, spec, data) for spec in config.models}


def fit_final_model(config: ExperimentConfig, spec: ModelConfig, data: PreparedData) -> FittedModel:
    """One model refitted on all analysed trials (a plain function of its inputs, so it can run as a parallel job)."""
    everything = Fold("all_trials", np.arange(data.n), np.array([], dtype=int))
    job = FoldJob(spec, everything, derive_seed(config.seed, spec.name, "final"), config.validation.bootstrap,
                  config.tuning.inner_folds)
    return FINAL_FITTERS[spec.kind](job, data)


def run_fold(job: FoldJob, data: PreparedData, on_trial: Callable[[], None] | None = None) -> FoldResult:
    try:
        runner = FOLD_RUNNERS[job.model.kind]
    except KeyError:
        raise ConfigError(f"models.{job.model.name}.kind: no fold runner for kind {job.model.kind!r}") from None
    return runner(job, data, on_trial)


def make_jobs(config: ExperimentConfig, plan: FoldPlan, *, keep_models: bool = False) -> list[FoldJob]:
    """Jobs in a fixed order (model, then fold) with seeds that do not depend on the order they run in."""
    if config.tuning.storage:
        # create the shared Optuna schema once, here: parallel workers opening a new database race on creating it
        import optuna

        optuna.storages.RDBStorage(config.tuning.storage)
    jobs = []
    for spec in config.models:
        for fold in plan.folds:
            seed = derive_seed(config.seed, spec.name, fold.label)
            study = f"{config.experiment}:{spec.name}:{fold.label}:{config.seed}" if config.tuning.storage else None
            jobs.append(FoldJob(spec, fold, seed, config.validation.bootstrap, config.tuning.inner_folds,
                                config.tuning.storage, study, keep_models, config.explain_settings(spec.name),
                                groups=config.group_settings() if spec.kind == "effect" else None))
    return jobs


def run_jobs(jobs: list[FoldJob], data: PreparedData, *, n_jobs: int = 1,
             on_result: Callable[[FoldResult], None] | None = None,
             on_trial: Callable[[], None] | None = None) -> list[FoldResult]:
    """Run the fold jobs, in parallel when ``n_jobs != 1``; results come back in job order either way."""
    results: list[FoldResult] = []
    if n_jobs == 1:
        for job in jobs:
            result = run_fold(job, data, on_trial)
            results.append(result)
            if on_result:
                on_result(result)
        return results
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    for result in parallel(delayed(run_fold)(job, data) for job in jobs):
        results.append(result)
        if on_result:
            on_result(result)
    return results


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
    from dataclasses import replace

    return replace(data, truth_cate=values)
