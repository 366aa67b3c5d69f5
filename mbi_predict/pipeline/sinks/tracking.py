"""The MLflow sink: the run's parent run and one child run per model (`mbi_predict.track.ExperimentRun`).

The tracked runs are opened (`open_run`) before anything is fitted, so they exist (RUNNING) for the whole run and
end FAILED on an error, KILLED on Ctrl-C or SIGTERM. When the results are finished, `log_run` logs the dataset
(schema and counts only), the final models as LoggedModels in their model runs, every model's metrics and params,
then ``summary.json``, the config and the plots by model. It returns the summary with the tracker's facts (run
ids, final-model URIs and params) as a NEW dict (`pipeline.summary.with_tracking`): the results are not changed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from mbi_predict.config import ExperimentConfig
from mbi_predict.deploy import envelope_from_training
from mbi_predict.pipeline.final_models import final_model_params
from mbi_predict.pipeline.results import FinishedRun
from mbi_predict.pipeline.sinks.figures import PlotRenderer
from mbi_predict.pipeline.sinks.run_folder import write_summary
from mbi_predict.pipeline.summary import with_tracking
from mbi_predict.track import ExperimentRun, check_tracking_uri


def tracking_uri(config: ExperimentConfig) -> str | None:
    """The checked tracking store of a tracked run (a one-line error when unusable), None when untracked."""
    return check_tracking_uri(config.tracking.uri) if config.tracking.enabled else None


def open_run(config: ExperimentConfig, uri: str | None) -> contextlib.AbstractContextManager[Any]:
    """The experiment's MLflow runs as a context (``None`` inside when the run is not tracked)."""
    if not uri:
        return contextlib.nullcontext()
    return ExperimentRun(uri, config.tracking_experiment, config=config, checked=True)


def log_run(run: ExperimentRun, finished: FinishedRun, staging: Path, plots: PlotRenderer) -> dict[str, Any]:
    """Log the finished run into its open MLflow run; write the tracked summary.json into ``staging``; return the
    tracked summary."""
    summary, data = finished.summary, finished.inputs.data
    run.log_dataset({**summary, "mlflow_run_id": run.run_id}, columns=finished.inputs.frame)  # dtypes and counts
    final: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, fitted in (finished.final_models or {}).items():
        block = summary["models"][name]
        features = block["features"]
        envelope = envelope_from_training(data.X.iloc[fitted.train_rows][features])
        uri = run.log_final_model(name, fitted.model, kind=block["task"], features=features, task=data.task,
                                  envelope=envelope, preprocess=fitted.preprocess)
        final[name] = (uri, final_model_params(fitted))
    tracked = with_tracking(summary, run.run_id, dict(run.model_runs), final)
    run.log_results(tracked)
    summary_path = write_summary(staging, tracked)
    plots.result()
    run.log_artifacts(summary_path=summary_path, config=finished.inputs.config, plots=plots.by_model)
    return tracked
