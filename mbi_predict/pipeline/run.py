"""`run_experiment`: one experiment config end to end, as a composition of the stages and the sinks.

The order of work is chosen so that bad input fails before anything is fitted (config, tracking store, data,
outcome, covariates, folds, model parameters), and that nothing is half-written: outputs are built in a staging
folder inside ``out_dir`` and moved into place, ``summary.json`` last, only when everything (including MLflow
logging) has succeeded. This module is the composition root: it sits above the stages and the sinks it wires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict import __version__
from mbi_predict.config import ExperimentConfig
from mbi_predict.interrupts import deferred_interrupts
from mbi_predict.parallel import local_workers
from mbi_predict.pipeline import average_effect, explanations, final_models, heterogeneity, interactions, projection
from mbi_predict.pipeline.batch import execution, run_batch
from mbi_predict.pipeline.folds import estimate, fold_jobs, run_folds
from mbi_predict.pipeline.load import load_inputs, resolve_config
from mbi_predict.pipeline.progress import Progress
from mbi_predict.pipeline.results import FinishedRun, build_results
from mbi_predict.pipeline.sinks import run_folder, tracking
from mbi_predict.pipeline.sinks.figures import PlotRenderer, plot_tasks
from mbi_predict.pipeline.summary import CodeProvenance
from mbi_predict.track.store import git_commit
from mbi_predict.validate.estimate import CostEstimate


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    summary_path: Path
    mlflow_run_id: str | None
    predictions_path: Path | None = None
    plot_paths: tuple[Path, ...] = field(default_factory=tuple)
    #: per-fold results with the fitted models, only with ``keep_models=True`` (in memory, never written)
    fold_results: tuple[Any, ...] = field(default_factory=tuple, repr=False)


def run_experiment(config_path_or_obj: ExperimentConfig | str | Path | dict, *,
                   data: str | Path | pd.DataFrame | None = None,
                   outcome: str | None = None, out_dir: str | Path | None = None, tracking_uri: str | None = None,
                   save_predictions: bool = False, progress: bool = True, keep_models: bool = False,
                   on_estimate: Callable[[CostEstimate], None] | None = None) -> RunResult:
    """Validate every model of the config; write ``out_dir/summary.json`` (+ plots, + predictions on request) and
    log the run to MLflow. Flags override the config (``data`` a harmonised table path or an IPD DataFrame, in
    which case the config needs no data block; ``outcome`` a column; ``tracking_uri`` the MLflow store).
    ``on_estimate``: given the run's time and memory estimate before fitting, when there is one (large data)."""
    config = resolve_config(config_path_or_obj, data=data, outcome=outcome, tracking_uri=tracking_uri)
    uri = tracking.tracking_uri(config)
    # the MLflow runs exist (RUNNING) from here: FAILED on an error, KILLED on Ctrl-C or SIGTERM
    with tracking.open_run(config, uri) as run:
        inputs = load_inputs(config, data if isinstance(data, pd.DataFrame) else None)
        jobs = fold_jobs(inputs, keep_models=keep_models)
        with execution(config) as n_jobs:
            # the estimate's pilots run some of the run's own fold jobs; their results are used, not refitted
            estimated, done = estimate(inputs, n_jobs, jobs, final_models=final_models.wanted(config, run is not None),
                                       progress=progress)
            if estimated is not None and on_estimate is not None:
                on_estimate(estimated)
            folds = run_folds(inputs, jobs, n_jobs=n_jobs, progress=progress, done=done)
            # the run-level work that does not need the fold models, as one batch of parallel jobs
            batch_jobs = [*final_models.jobs(inputs, fit=final_models.wanted(config, run is not None)),
                          *explanations.jobs(inputs), *interactions.jobs(inputs), *average_effect.jobs(inputs),
                          *projection.jobs(inputs)]
            with Progress(progress and len(batch_jobs) > 1, len(batch_jobs),
                          label="run-level jobs (final models, SHAP nulls, interactions)") as bar:
                batch = run_batch(batch_jobs, n_jobs, on_result=bar.advance)
            # the verdict's dependence-aware calibration: the validation repeated on constant-effect draws
            calibration = heterogeneity.calibration(inputs, n_jobs, progress=progress)
        finished = build_results(inputs, folds, batch, calibration, CodeProvenance(__version__, git_commit()))
        out_dir = Path(out_dir) if out_dir is not None else run_folder.default_out_dir(config)
        summary, plot_paths = _write(finished, run, out_dir, save_predictions)
        return RunResult(summary, out_dir, out_dir / run_folder.SUMMARY, summary["mlflow_run_id"],
                         out_dir / run_folder.PREDICTIONS if save_predictions else None, tuple(plot_paths),
                         folds.results if keep_models else ())


def _write(finished: FinishedRun, run: Any, out_dir: Path, save_predictions: bool) -> tuple[dict, list[Path]]:
    """The sinks: figures (rendered in worker processes while this process logs to MLflow), MLflow, run folder."""
    with run_folder.staging_folder(out_dir) as staging:
        tasks = plot_tasks(finished, staging / "plots")
        plots = None
        try:
            # the workers start and `plots` is bound as one step for Ctrl-C and SIGTERM, so the handler below
            # always knows of workers that may still write into the staging folder
            with deferred_interrupts():
                plots = PlotRenderer(tasks, n_jobs=local_workers(finished.inputs.config.validation.n_jobs))
            summary = tracking.log_run(run, finished, staging, plots) if run is not None else finished.summary
            plots.result()
            if run is None:
                run_folder.write_summary(staging, summary)
            if save_predictions:
                run_folder.write_predictions(staging, finished.folds.results)
            return summary, run_folder.publish(staging, out_dir)
        except BaseException:
            # whatever ended the block (an error, Ctrl-C or SIGTERM, also one that arrived while waiting for the
            # figures), the plot workers finish before the staging folder is removed, or they would write into a
            # folder that is gone (leaving it behind) or die with the process mid-write; a second signal waits
            # too, and the interrupt or error that ended logging is the one reported, not a broken plot pool
            if plots is not None:
                with deferred_interrupts():
                    plots.wait()
            raise
