"""One experiment run in MLflow, laid out so that MLflow is the place where models are compared.

Layout::

    <experiment>                                   MLflow experiment (config tracking.experiment)
    └── <experiment>-<UTC YYYYmmdd-HHMMSS>         parent run: run-level facts, the dataset, config, summary,
        │                                          cards, plots/<model>/..., the run's heterogeneity verdict
        ├── <model name>                           child run per model: pooled metrics under ONE vocabulary
        │     metrics  rmse, rmse_ci_low, rmse_ci_high, rmse_pi_low, rmse_pi_high, rmse_tau2, rmse_k, r2, ...
        │              held_out/rmse, held_out/r2, ... at step i = the i-th held-out trial
        │     params   the model's hyper-parameters, estimator, kind, held_out_trials (step i -> trial id)
        │     model    the final (all-trials) model as an MLflow LoggedModel carrying the same metrics and params
        └── ...

so ``mlflow.search_runs(filter_string="tags.mlflow.parentRunId = '<parent>'", order_by=["metrics.rmse ASC"])`` is
the leaderboard, and the runs table, the parallel-coordinates and the scatter charts compare models as runs.

Why step-indexed per-trial metrics on the model's run rather than a grandchild run per (model, held-out trial):
MLflow 3's chart view draws a metric logged at several steps as one line per run against the step, so the
``held_out`` section shows each model as one line across the held-out trials, every model on the same chart (the
same x position is the same trial for every model: the step is the trial's index in the summary's
``validation.held_out``, listed in the ``held_out_trials`` param and tag). Grandchild runs would instead add
models x trials rows to the runs table (60 for 4 models x 15 trials), bury the models under them, and chart
per-trial values only as unconnected points per run; they also cost a run creation each. The per-trial names
carry a ``held_out/`` prefix because the runs table, ``search_runs`` and sorting read a metric's value at its
LAST step: sharing the name ``rmse`` with the pooled value would make the leaderboard sort by the last trial's
RMSE. The UI groups metrics into sections by the part before ``/``.

Lifecycle: `ExperimentRun` is a context manager opened when the experiment starts, before any fitting; the parent
and the model runs are RUNNING while models are fitted, and end FINISHED, FAILED on an exception, KILLED on
KeyboardInterrupt or SIGTERM (a handler raising `RunTerminated` is installed for the duration, in the main thread
only, and the previous handler restored; an error raised while an interrupt was being handled still ends them
KILLED; a second interrupt while the runs are being ended waits until they are). Every run records its host and
process; a run whose process died without closing it (SIGKILL) is ended KILLED by the next experiment run in the same
experiment (`mbi_predict.track.liveness`).

The tracker only reads results: it never writes into the summary; it returns what the caller needs (run ids,
model URIs). Nothing participant-level is logged: metrics are pooled or per-trial aggregates, the dataset is its
schema and counts, artifacts are the config, summary, cards, reports and figures the caller names, and tabular
participant-level files are refused.

The MLflow client API is used throughout (no global tracking URI or active run is changed), except to log a final
model, where MLflow needs a fluent active run: the global URI is switched for that call and restored.
"""

from __future__ import annotations

import math
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mbi_predict.errors import ConfigError
from mbi_predict.interrupts import InterruptsHeld, note_sigterm
from mbi_predict.io import Terminated, deferred_interrupts, interrupt_in_chain
from mbi_predict.track.artifacts import check_artifact, log_artifacts_to, log_cards
from mbi_predict.track.liveness import KILLED_REASON_TAG, process_tags, reap_dead_runs
from mbi_predict.track.mapping import (_BATCH, _METRIC_BATCH, _MAX_PARAM_LENGTH, BOUNDS, ESTIMATOR_TAG,
                                       HELD_OUT_PREFIX, KIND_TAG, RUN_TYPE_TAG, _clip_tags, _config_dict, _finite,
                                       _is_unset, _model_specs, _now_ms, _run_name, _source_name, config_sha256,
                                       flat_params, held_out_metrics, model_metrics, model_params, run_facts)
from mbi_predict.track.store import check_tracking_uri, client, experiment_id, git_commit


class RunTerminated(Terminated):
    """SIGTERM arrived while an experiment run was open (a KeyboardInterrupt, so the run ends KILLED)."""


# ------------------------------------------------------------------------------------------------ the run

class ExperimentRun:
    """The MLflow side of one experiment run. Open it (``with``) when the experiment starts, before fitting.

    ``config``: the resolved `ExperimentConfig` (or its ``model_dump(mode="json")``), for the model runs, the
    run-level params (unset values and the tracking URI left out) and the config hash. ``models`` overrides the
    config's model list (objects or dicts with name, kind, estimator). ``run_name`` defaults to
    ``<experiment>-<UTC YYYYmmdd-HHMMSS>`` (the config's experiment, else the MLflow experiment's name).
    ``registry=True`` also checks the Model Registry is reachable.
    """

    def __init__(self, uri: str | None, experiment: str, *, config: Any = None, models: Iterable[Any] | None = None,
                 run_name: str | None = None, tags: Mapping[str, Any] | None = None, checked: bool = False,
                 registry: bool = False) -> None:
        self.uri = uri if (checked and uri) else check_tracking_uri(uri, registry=registry)
        # every store call with Ctrl-C and SIGTERM held: an interrupt lands between calls, never inside SQLAlchemy
        self.client = InterruptsHeld(client(self.uri))
        self.experiment = experiment
        self.experiment_id = experiment_id(self.client, experiment, self.uri)
        self.config = _config_dict(config)
        self.specs = _model_specs(config, models)
        names = [s["name"] for s in self.specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"model names must be unique to be tracked, got {', '.join(names)}")
        self.run_name = run_name or _run_name(str(self.config.get("experiment") or experiment))
        self.extra_tags = dict(tags or {})
        self.run_id: str | None = None
        self.model_runs: dict[str, str] = {}      # model name -> child run id
        self.model_ids: dict[str, str] = {}       # model name -> LoggedModel id of its final model
        self._done: set[str] = set()              # child runs whose results are logged
        self._dataset = None
        self._old_handler: Any = None
        self._handler_installed = False

    # ---------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> ExperimentRun:
        from mbi_predict import __version__

        self._reap(f"experiment run {self.run_name}")
        commit = git_commit()
        process = process_tags()
        tags = {RUN_TYPE_TAG: "experiment", "mlflow.source.name": _source_name(), "mlflow.source.type": "LOCAL",
                "mlflow.source.git.commit": commit, "mbi_predict.git_commit": commit,
                "mbi_predict.version": __version__,
                "mbi_predict.config_sha256": config_sha256(self.config) if self.config else None,
                "mbi_predict.models": ",".join(s["name"] for s in self.specs), **process, **self.extra_tags}
        self._install_sigterm()  # before the first run exists: a SIGTERM from here on ends what was created KILLED
        try:
            run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=_clip_tags(tags))
            self.run_id = run.info.run_id
            config_params = {k: v for k, v in flat_params(self.config).items()
                             if not k.startswith(("models.", "tracking.uri"))}
            self._log(self.run_id, params=config_params)
            for spec in self.specs:
                child = self.client.create_run(self.experiment_id, run_name=spec["name"], tags=_clip_tags({
                    "mlflow.parentRunId": self.run_id, RUN_TYPE_TAG: "model", KIND_TAG: spec["kind"],
                    ESTIMATOR_TAG: spec["estimator"], "mlflow.source.name": tags["mlflow.source.name"],
                    "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": commit, **process}))
                self.model_runs[spec["name"]] = child.info.run_id
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # a SIGTERM or a second Ctrl-C while the runs are being ended waits until they are (then goes to the
        # handler that was in place before the run opened)
        restore = {signal.SIGTERM: self._old_handler} if self._handler_installed else None
        self._handler_installed, self._old_handler = False, None
        with deferred_interrupts(restore=restore):
            interrupt = interrupt_in_chain(exc)
            if exc_type is None:
                status = "FINISHED"
            elif interrupt is not None:
                status = "KILLED"
            else:
                status = "FAILED"
            ending = [run_id for name, run_id in self.model_runs.items()
                      if status != "FINISHED" or name not in self._done]
            ending += [self.run_id] if self.run_id is not None else []
            reason = None
            if interrupt is not None:
                reason = "SIGTERM" if isinstance(interrupt, Terminated) else "interrupted (Ctrl-C / SIGINT)"
            failures = []
            for run_id in ending:
                try:
                    if reason:
                        self.client.set_tag(run_id, KILLED_REASON_TAG, reason)
                    self.client.set_terminated(run_id, status=status)
                except Exception as error:  # best effort: the exception that ended the block matters more
                    failures.append(error)
            if failures and exc_type is None:
                raise failures[0]
        return False

    def _reap(self, by: str) -> None:
        """End KILLED the runs of this experiment left RUNNING by processes that no longer exist (best effort: a
        problem here never stops a new run)."""
        try:
            reap_dead_runs(self.client, [self.experiment_id], by=by)
        except Exception:  # noqa: BLE001
            pass

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame):
            note_sigterm(signum)
            raise RunTerminated(f"signal {signum} (SIGTERM): the run is being ended as KILLED")

        self._old_handler = signal.signal(signal.SIGTERM, on_sigterm)
        self._handler_installed = True

    # ------------------------------------------------------------------------------------------ logging

    def _log(self, run_id: str, *, metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
             tags: Mapping[str, str] | None = None, model_id: str | None = None,
             stepped: Iterable[tuple[int, Mapping[str, float]]] = ()) -> None:
        """One run's metrics (at step 0, plus ``stepped``: (step, metrics) pairs), params and tags, in as few
        ``log_batch`` calls as MLflow's limits allow (each call is a transaction of the store)."""
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        dataset = self._dataset
        metric_list = [Metric(k, float(v), now, 0, model_id=model_id,
                              dataset_name=dataset.name if dataset is not None and model_id else None,
                              dataset_digest=dataset.digest if dataset is not None and model_id else None)
                       for k, v in (metrics or {}).items() if _finite(v)]
        metric_list += [Metric(k, float(v), now, at) for at, values in stepped for k, v in values.items()
                        if _finite(v)]
        param_list = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in (params or {}).items() if not _is_unset(v)]
        tag_list = [RunTag(k, v) for k, v in _clip_tags(tags or {}).items()]
        chunks = max(math.ceil(len(metric_list) / _METRIC_BATCH), math.ceil(len(param_list) / _BATCH),
                     math.ceil(len(tag_list) / _BATCH))
        for i in range(chunks):
            self.client.log_batch(run_id, metrics=metric_list[i * _METRIC_BATCH:(i + 1) * _METRIC_BATCH],
                                  params=param_list[i * _BATCH:(i + 1) * _BATCH],
                                  tags=tag_list[i * _BATCH:(i + 1) * _BATCH])

    def log_dataset(self, summary: dict[str, Any], columns: Any = None, name: str | None = None) -> None:
        """The IPD as a dataset input of the parent (context ``ipd``) and of every model run (context
        ``training``): schema from ``columns`` (a frame with the IPD's columns and dtypes; its rows are dropped
        before anything is built), counts from the summary, digest from its data sha256."""
        from mlflow.entities import DatasetInput, InputTag

        from mbi_predict.track.dataset import build_dataset

        dataset = build_dataset(summary, columns, name=name)
        entity = dataset._to_mlflow_entity()
        self.client.log_inputs(self.run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", "ipd")])])
        for run_id in self.model_runs.values():
            self.client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", "training")])])
        self._dataset = dataset

    def log_final_model(self, name: str, fitted: Any, *, kind: str, features: list[str], task: str,
                        envelope: dict[str, Any], preprocess: Any = None, alpha: float = 0.05) -> str:
        """Log model ``name``'s final (all-trials) model as an MLflow LoggedModel inside its model run (through
        `mbi_predict.deploy.log_final_model`); returns its model URI (``models:/<model id>``) for the summary.
        Its metrics and params are attached by `log_results`."""
        import mlflow

        from mbi_predict.deploy import log_final_model

        run_id = self.model_runs[name]
        spec = next(s for s in self.specs if s["name"] == name)
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            # the LoggedModel is written whole (never left PENDING by Ctrl-C) before an interrupt lands
            with deferred_interrupts(), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
                uri = log_final_model(fitted, kind=kind, features=features, task=task, envelope=envelope, name=name,
                                      preprocess=preprocess, alpha=alpha,
                                      tags={KIND_TAG: kind, ESTIMATOR_TAG: spec["estimator"],
                                            "mbi_predict.experiment_run": self.run_id})
            # the fluent block ended the model run; it is RUNNING again until its results are logged
            self.client.update_run(run_id, status="RUNNING")
        finally:
            mlflow.set_tracking_uri(previous)
        self.model_ids[name] = _model_id(uri)
        return uri

    def log_results(self, summary: dict[str, Any]) -> dict[str, str]:
        """Every model run's pooled metrics, per-held-out-trial metrics and params (and its LoggedModel's, when
        logged), ending each model run FINISHED; the parent's run-level facts. Returns model name -> run id."""
        metrics, params, tags = run_facts(summary)
        self._log(self.run_id, metrics=metrics, params=params, tags=tags)
        for name, run_id in self.model_runs.items():
            if name not in summary["models"]:
                continue
            block = summary["models"][name]
            pooled, params = model_metrics(name, summary), model_params(name, summary)
            model_tags = {"mbi_predict.outcome": summary.get("outcome")}
            if (block.get("heterogeneity") or {}).get("verdict"):
                model_tags["mbi_predict.heterogeneity"] = block["heterogeneity"]["verdict"]
            model_id = self.model_ids.get(name)
            # the held-out trials' metrics (step = trial) go in the same batch, tied to the run, not the model
            self._log(run_id, metrics=pooled, params=params, tags=model_tags, model_id=model_id,
                      stepped=held_out_metrics(name, summary))
            if model_id is not None:
                hyper = {k: v for k, v in params.items() if k != "held_out_trials"}
                for i in range(0, len(hyper), _BATCH):
                    self.client.log_model_params(model_id, dict(list(hyper.items())[i:i + _BATCH]))
            self.client.set_terminated(run_id, status="FINISHED")
            self._done.add(name)
        return dict(self.model_runs)

    def log_artifacts(self, *, summary_path: str | Path | None = None, config: Any = None,
                      cards: Mapping[str, Iterable[str | Path]] | None = None,
                      plots: Mapping[str, Iterable[str | Path]] | None = None,
                      harmonisation_report: Iterable[str | Path] | str | Path | None = None,
                      meta_analysis: Iterable[str | Path] | str | Path | None = None,
                      extra: Mapping[str, Iterable[str | Path]] | None = None) -> None:
        """Artifacts of the parent run: ``summary.json``; ``config.yaml`` (``config``: a YAML path, an
        ExperimentConfig or a dict; default the config given at open); ``cards/<model>/...`` (``cards``: model ->
        card files, md/html/json); ``plots/<model>/...`` (``plots``: model -> figure paths, explicitly mapped by the
        caller); ``data/...`` (the harmonisation report files); ``meta_analysis/...``; ``extra``: folder ->
        paths. Participant-level files are refused (ValueError) before anything is logged."""
        log_artifacts_to(self.client, self.run_id, summary_path=summary_path, cards=cards, plots=plots,
                         harmonisation_report=harmonisation_report, meta_analysis=meta_analysis, extra=extra)
        self._log_config(config)

    def _log_config(self, config: Any) -> None:
        if config is None and not self.config:
            return
        if isinstance(config, (str, Path)) and Path(config).is_file():
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "config.yaml"
                target.write_bytes(Path(config).read_bytes())
                self.client.log_artifact(self.run_id, str(target))
            return
        import yaml

        dumped = _config_dict(config) if config is not None else self.config
        dumped = {k: v for k, v in dumped.items()}
        if isinstance(dumped.get("tracking"), dict):  # a server URI may hold credentials
            dumped["tracking"] = {k: v for k, v in dumped["tracking"].items() if k != "uri"}
        self.client.log_text(self.run_id, yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True),
                             "config.yaml")



def _model_id(model_uri: str) -> str:
    """``models:/m-abc`` -> ``m-abc`` (MLflow 3 LoggedModel URIs)."""
    if model_uri.startswith("models:/"):
        return model_uri.removeprefix("models:/").split("/")[0]
    from mlflow.models import get_model_info

    return get_model_info(model_uri).model_id


def open_run(uri: str | None, experiment: str, **kwargs: Any) -> ExperimentRun:
    """``with open_run(uri, experiment, config=config) as run: ...`` (an alias of `ExperimentRun`)."""
    return ExperimentRun(uri, experiment, **kwargs)


#: the names this module has always offered, now defined in mapping.py and artifacts.py (imports keep working)
__all__ = ["ExperimentRun", "RunTerminated", "open_run", "model_metrics", "model_params", "held_out_metrics",
           "run_facts", "config_sha256", "flat_params", "check_artifact", "log_artifacts_to", "log_cards",
           "BOUNDS", "ESTIMATOR_TAG", "HELD_OUT_PREFIX", "KIND_TAG", "RUN_TYPE_TAG"]
