"""The leave-one-trial-out engine: plan folds, run one job per (model, held-out trial), collect per-trial metrics.

The engine is four modules; this one runs the jobs and keeps every name importable from ``validate.loto``:
`validate.prepared` (the analysis data, `prepare_data`), `validate.folds` (`plan_folds`, `FoldJob`, `FoldResult`,
`derive_seed`), `validate.fold_fits` (the fold runners per model kind) and here (`make_jobs`, `run_jobs`,
`run_fold`, the final all-trials models).

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
* SHAP runs inside a fold job when asked for, through the job's ``explainer`` (``make_jobs(..., explainer=)``, given
  by the pipeline): validation never imports the explain layer above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.errors import ConfigError
from mbi_predict.parallel import run_in_order
from mbi_predict.validate.fold_fits import (MIN_HARM_GROUP, _fit_params_errors, _fold_shap,  # noqa: F401
                                            _group_metrics, _harm_metrics, _pehe_variance, effect_fold, fit_effect,
                                            fit_prognostic, prognostic_fold)
from mbi_predict.validate.folds import (INTERNAL_NOTE, FittedModel, Fold, FoldJob, FoldPlan, FoldResult, derive_seed,
                                        plan_folds)
from mbi_predict.validate.prepared import ITT_NOTE, PreparedData, attach_truth, prepare_data, resolve_covariates

__all__ = ["FINAL_FITTERS", "FOLD_RUNNERS", "INTERNAL_NOTE", "ITT_NOTE", "MIN_HARM_GROUP", "FittedModel", "Fold",
           "FoldJob", "FoldPlan", "FoldResult", "PreparedData", "attach_truth", "derive_seed", "effect_fold",
           "fit_effect", "fit_final_model", "fit_final_models", "fit_prognostic", "make_jobs", "plan_folds",
           "prepare_data", "prognostic_fold", "resolve_covariates", "run_fold", "run_jobs"]
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


def make_jobs(config: ExperimentConfig, plan: FoldPlan, *, keep_models: bool = False,
              explainer: Callable[..., Any] | None = None) -> list[FoldJob]:
    """Jobs in a fixed order (model, then fold) with seeds that do not depend on the order they run in.
    ``explainer``: SHAP of each fold's model for the models whose explain settings are enabled
    (``mbi_predict.explain.run.explain_fold``)."""
    if config.tuning.storage:
        # create the shared Optuna schema once, here: parallel workers opening a new database race on creating it
        import optuna

        try:
            optuna.storages.RDBStorage(config.tuning.storage)
        except Exception as exc:  # unreachable server, unwritable path, missing driver: the config's fault
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"tuning.storage cannot be opened ({type(exc).__name__}: {message[:160]})") \
                from None
    jobs = []
    for spec in config.models:
        for fold in plan.folds:
            seed = derive_seed(config.seed, spec.name, fold.label)
            study = f"{config.experiment}:{spec.name}:{fold.label}:{config.seed}" if config.tuning.storage else None
            jobs.append(FoldJob(spec, fold, seed, config.validation.bootstrap, config.tuning.inner_folds,
                                config.tuning.storage, study, keep_models, config.explain_settings(spec.name),
                                groups=config.group_settings() if spec.kind == "effect" else None,
                                explainer=explainer))
    return jobs


def run_jobs(jobs: list[FoldJob], data: PreparedData, *, n_jobs: int = 1,
             on_result: Callable[[FoldResult], None] | None = None,
             on_trial: Callable[[], None] | None = None) -> list[FoldResult]:
    """Run the fold jobs, in parallel when ``n_jobs != 1``; results come back in job order either way
    (``on_trial``, tuning trials, is heard only in this process: serially)."""
    extra = (on_trial,) if n_jobs == 1 else ()
    return run_in_order([(run_fold, (job, data, *extra)) for job in jobs], n_jobs, on_result)
