"""The figures sink: one plotting task per model (forest plots, calibration for prognostic models, calibration for
benefit for effect models, SHAP figures), rendered by `PlotRenderer` in a background thread that farms them out to
worker processes (matplotlib's Agg rendering is CPU-bound Python), so the caller can log to MLflow meanwhile.

Reads the finished results (fold predictions in memory, forest inputs, SHAP tables); writes only image files, in
the format and resolution of the run's config (``figures:``), which each task carries to its worker process
explicitly (a worker need not share this process's environment or state).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed

from mbi_predict import figstyle
from mbi_predict.explain.run import shap_plots
from mbi_predict.pipeline.results import FinishedRun
from mbi_predict.pipeline.subgroups import benefit_inputs
from mbi_predict.report.plots import write_plots
from mbi_predict.validate.loto import FoldResult, PreparedData


def calibration_inputs(results: list[FoldResult], data: PreparedData) -> dict[str, Any]:
    """Observed and predicted outcomes of the scored held-out rows of a prognostic model, with their trials."""
    observed, predicted, trial = [], [], []
    for result in results:
        if "prediction" not in result.predictions:
            continue
        observed.append(data.y[result.test_rows][result.evaluated])
        predicted.append(result.predictions["prediction"].to_numpy()[result.evaluated])
        trial.append(np.full(int(result.evaluated.sum()), result.held_out))
    cat = (lambda parts: np.concatenate(parts) if parts else np.array([]))
    return {"observed": cat(observed), "predicted": cat(predicted), "trial": cat(trial), "task": data.task}


class PlotTask(NamedTuple):
    """One model's figures to render (the arguments of `plot_model`, sent to a worker process)."""

    folder: Path
    name: str
    forest: dict
    calibration: dict
    benefit: dict
    shap: tuple | None
    data: PreparedData | None
    style: figstyle.FigureSettings


def plot_tasks(finished: FinishedRun, folder: Path, style: figstyle.FigureSettings | None = None) -> list[PlotTask]:
    """One plotting task per model: its forest plots, calibration (prognosis) or calibration for benefit (effect),
    and SHAP figures, in ``style`` (default: the config's ``figures:`` block)."""
    config, data = finished.inputs.config, finished.inputs.data
    style = style or figstyle.from_config(config)
    tasks = []
    for spec in config.models:
        fold_results = finished.folds.by_model[spec.name]
        calibration = {spec.name: calibration_inputs(fold_results, data)} if spec.kind == "prognostic" else {}
        benefit = {spec.name: benefit_inputs(fold_results)} if spec.kind == "effect" else {}
        shap = None
        if finished.shap_tables.get(spec.name) is not None:
            shap = (spec.kind, fold_results, finished.shap_tables[spec.name], config.explain_settings(spec.name),
                    finished.null_refs.get(spec.name))
        tasks.append(PlotTask(folder, spec.name, finished.forests[spec.name], calibration, benefit, shap,
                              data if shap else None, style))
    return tasks


def plot_model(folder: Path, name: str, forest: dict, calibration: dict, benefit: dict, shap, data,
               style: figstyle.FigureSettings) -> list[Path]:
    """One model's figures, written under ``folder`` in ``style`` (format and dpi); their paths."""
    written = write_plots(folder, forests={name: forest}, calibration=calibration, benefit_calibration=benefit,
                          format=style.format, dpi=style.dpi)
    if shap is not None:
        kind, results, table, settings, null_ref = shap
        written += shap_plots(folder, name, kind, results, table, settings=settings, null_ref=null_ref, data=data,
                              style=style)
    return written


class PlotRenderer:
    """Render the plotting tasks in a background thread that farms them out to worker processes, so the caller can
    log to MLflow meanwhile. ``result()`` waits (and re-raises a rendering error in the caller's thread)."""

    def __init__(self, tasks: list[PlotTask], n_jobs: int) -> None:
        self._paths: list[Path] = []
        self.by_model: dict[str, list[Path]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(tasks, n_jobs), daemon=True)
        self._thread.start()

    def _run(self, tasks: list[PlotTask], n_jobs: int) -> None:
        try:
            if n_jobs == 1 or len(tasks) <= 1:
                chunks = [plot_model(*task) for task in tasks]
            else:
                chunks = Parallel(n_jobs=n_jobs, backend="loky")(delayed(plot_model)(*task) for task in tasks)
            self._paths = [path for chunk in chunks for path in chunk]
            self.by_model = {task.name: list(chunk) for task, chunk in zip(tasks, chunks)}
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = exc

    def wait(self) -> None:
        """Wait for the rendering to end, without raising its error: for a caller that is already ending on an
        exception of its own (Ctrl-C or SIGTERM reach the plot workers too, and their broken pool must not replace
        the interrupt)."""
        if self._thread.ident is not None:
            self._thread.join()

    def result(self) -> list[Path]:
        """The rendered figures' paths, once rendering has ended; a rendering error is re-raised here."""
        self.wait()
        if self._error is not None:
            raise self._error
        return list(self._paths)
