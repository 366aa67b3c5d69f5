"""Stage "folds": every model validated leave-one-trial-out, one fold job per (model, held-out trial), run as one
parallel call (`validate.loto.run_jobs`), and each model's performance block built from its folds.

Contract: `fold_jobs` declares the jobs (before the execution backend is entered: a shared Optuna storage is
created there); `run_folds` returns the `FoldOutputs` (per-fold results in job order, also grouped by model; in memory
only). `model_block` is a pure function of one model's fold results: the summary's ``models.<name>`` block (task,
estimator, features, per-trial metrics, the metrics pooled across held-out trials, timing, tuned parameters) and the
forest-plot inputs (labels, values, variances, the `PoolResult`s) the verdict and the figures read. `subgroups`
adds a prognostic model's performance by subgroup. SHAP is computed inside the fold jobs
(`explain.run.explain_fold`, the jobs' explainer) and summarised by the explanations stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.errors import ConfigError
from mbi_predict.explain.run import explain_fold
from mbi_predict.models.prognostic import input_columns
from mbi_predict.parallel import local_workers
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.pipeline.progress import Progress, status
from mbi_predict.validate.estimate import MIN_ROWS, CostEstimate, available_memory, estimate_run
from mbi_predict.validate.loto import FoldJob, FoldResult, PreparedData, make_jobs, run_jobs
from mbi_predict.validate.pooling import pool_metric
from mbi_predict.validate.subgroup_performance import subgroup_metrics
from mbi_predict.validate.verdict_null import null_refits


@dataclass(frozen=True)
class FoldOutputs:
    """The fold results of the run (in memory; the fitted models only with ``keep_models``)."""

    results: tuple[FoldResult, ...]              # in job order: model, then held-out trial
    by_model: dict[str, list[FoldResult]]


def fold_jobs(inputs: RunInputs, *, keep_models: bool = False) -> list[FoldJob]:
    """The stage's jobs: one per (model, held-out trial), SHAP in the fold when the model's explain settings ask."""
    return make_jobs(inputs.config, inputs.plan, keep_models=keep_models, explainer=explain_fold)


def estimate(inputs: RunInputs, n_jobs: int, jobs: list[FoldJob], *, final_models: bool,
             progress: bool = False) -> tuple[CostEstimate | None, dict[tuple[str, Any], FoldResult]]:
    """The run's time and memory, estimated before fitting (`validate.estimate`), or None: small data, the dask
    backend (its workers are the cluster's) or ``validation.estimate: false``; and the results of the run's fold
    ``jobs`` the pilots ran (`run_folds` does not repeat them). Raises `ConfigError` (one line, before the rest is
    fitted) when the memory estimate exceeds what the machine has available."""
    config = inputs.config
    if not config.validation.estimate or config.validation.backend != "local":
        return None, {}
    models, null_B = null_refits(config, inputs.data, inputs.plan)
    workers = local_workers(n_jobs if n_jobs > 0 else 10**6)  # -1: every core
    free = available_memory()
    with status(progress and inputs.data.n >= MIN_ROWS, "estimating time and memory: the run's own fold jobs on "
                                                         "representative folds (kept for the run)"):
        found, done = estimate_run(config, inputs.data, inputs.plan, workers=workers, verdict_models=models,
                                   null_B=null_B, final_models=final_models, explainer=explain_fold, jobs=jobs,
                                   memory_limit=free)
    if found is not None and free is not None and found.peak_bytes > free:
        raise ConfigError(f"data too large for these settings on this machine ({free / 2**30:.1f} GiB available): "
                          f"{found.line()}; fewer validation.n_jobs, or "
                          "validation.estimate: false to run anyway")
    return found, done


def group_by_model(config: ExperimentConfig, results: list[FoldResult]) -> dict[str, list[FoldResult]]:
    by_model: dict[str, list[FoldResult]] = {m.name: [] for m in config.models}
    for result in results:
        by_model[result.model].append(result)
    return by_model


def run_folds(inputs: RunInputs, jobs: list[FoldJob], *, n_jobs: int, progress: bool = True,
              done: dict[tuple[str, Any], FoldResult] | None = None) -> FoldOutputs:
    """Run the fold jobs (in parallel when ``n_jobs != 1``) with a progress bar over folds and tuning trials;
    ``done``: results of some of these jobs already run (the estimate's pilots: the same job, so the same result),
    by (model, held-out label), used in their place."""
    done = done or {}
    todo = [job for job in jobs if (job.model.name, job.fold.label) not in done]
    n_trials = sum(job.model.tuning.n_trials for job in todo)
    parallel = n_jobs != 1
    with Progress(progress, len(todo), n_trials) as bar:
        fitted = iter(run_jobs(todo, inputs.data, n_jobs=n_jobs, on_result=bar.on_result(parallel),
                               on_trial=None if parallel else bar.on_trial))
    results = [done[(job.model.name, job.fold.label)] if (job.model.name, job.fold.label) in done else next(fitted)
               for job in jobs]  # the jobs' order
    return FoldOutputs(tuple(results), group_by_model(inputs.config, results))


def _per_trial_row(result: FoldResult) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": result.held_out, "n": result.n, "n_randomised": result.n_randomised,
                           "n_missing_outcome": result.n_missing_outcome}
    row.update({name: value.value for name, value in result.metrics.items()})
    row["variances"] = {name: value.variance for name, value in result.metrics.items()}
    return row


def _features(spec: ModelConfig, data: PreparedData) -> list[str]:
    if spec.kind == "prognostic":
        return input_columns(spec.estimator, data.features)
    return list(data.covariates)


def model_block(spec: ModelConfig, results: list[FoldResult], config: ExperimentConfig,
                data: PreparedData) -> tuple[dict, dict]:
    """The summary block of one model, and what its forest plots (and the verdict) need."""
    labels = [r.held_out for r in results]
    metric_names = list(results[0].metrics) if results else []
    pooled, forest = {}, {}
    for metric in metric_names:
        values = [r.metrics[metric].value for r in results]
        variances = [r.metrics[metric].variance for r in results]
        pooled[metric], pool_result = pool_metric(metric, values, variances, labels, model=spec.name,
                                                  method=config.validation.pooling_method,
                                                  hksj=config.validation.hksj, level=config.validation.level)
        forest[metric] = {"labels": labels, "values": values, "variances": variances, "pooled": pool_result}
    timing = {key: float(sum(r.timing.get(key, 0.0) for r in results))
              for key in ("fit_seconds", "predict_seconds", "tune_seconds", "shap_seconds")}
    block = {
        "task": spec.kind, "estimator": spec.estimator, "outcome_type": data.task, "features": _features(spec, data),
        "population": results[0].population if results else "all",
        "per_trial": [_per_trial_row(r) for r in results], "pooled": pooled, "timing": timing,
        "best_params": {r.held_out: r.best_params for r in results},
        "tuning": {r.held_out: r.tuning for r in results if r.tuning is not None} or None,
    }
    return block, forest


def subgroups(results: list[FoldResult], data: PreparedData) -> list[dict]:
    """Performance by gender, education, age band and baseline-distress tertile on the pooled held-out predictions
    (aggregates only; small groups suppressed by `validate.subgroup_performance`), for the model card's fairness section."""
    rows = np.concatenate([r.test_rows[r.evaluated] for r in results]) if results else np.array([], dtype=int)
    predicted = np.concatenate([r.predictions["prediction"].to_numpy()[r.evaluated] for r in results]) \
        if results else np.array([])
    return subgroup_metrics(data.y[rows], predicted, data.X.iloc[rows], data.task)
