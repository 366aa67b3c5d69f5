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
only, and the previous handler restored).

The tracker only reads results: it never writes into the summary; it returns what the caller needs (run ids,
model URIs). Nothing participant-level is logged: metrics are pooled or per-trial aggregates, the dataset is its
schema and counts, artifacts are the config, summary, cards, reports and figures the caller names, and tabular
participant-level files are refused.

The MLflow client API is used throughout (no global tracking URI or active run is changed), except to log a final
model, where MLflow needs a fluent active run: the global URI is switched for that call and restored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mbi_predict.errors import ConfigError
from mbi_predict.track.store import check_tracking_uri, client, experiment_id, git_commit

RUN_TYPE_TAG = "mbi_predict.run_type"
KIND_TAG = "mbi_predict.model_kind"
ESTIMATOR_TAG = "mbi_predict.estimator"
HELD_OUT_PREFIX = "held_out/"
BOUNDS = ("ci_low", "ci_high", "pi_low", "pi_high", "tau2")
_MAX_PARAM_LENGTH = 6000   # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LENGTH = 8000     # MAX_TAG_VAL_LENGTH
_BATCH = 100               # params/tags per log_batch (MAX_PARAMS_TAGS_PER_BATCH); metrics allow 1000
_METRIC_BATCH = 900
#: files that hold (or typically hold) participant-level rows never go to the tracking store
_REFUSED_SUFFIXES = {".parquet", ".feather", ".arrow", ".sav", ".zsav", ".dta", ".sas7bdat", ".xpt", ".xlsx", ".xls",
                     ".rds", ".rdata", ".pkl", ".pickle"}


class RunTerminated(KeyboardInterrupt):
    """SIGTERM arrived while an experiment run was open (a KeyboardInterrupt, so the run ends KILLED)."""


# ------------------------------------------------------------------------------------------------ helpers

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config)


def config_sha256(config: Any) -> str:
    """A hash of the resolved config (canonical JSON), the same for the same settings whatever the YAML layout."""
    text = json.dumps(_config_dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_unset(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (dict, list, tuple)) and not value) or (
        isinstance(value, float) and not math.isfinite(value))


def flat_params(node: Any, prefix: str = "") -> dict[str, str]:
    """``a.b.c -> value`` strings, unset values (None, "", {}, [], NaN) omitted; lists as JSON."""
    out: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
    elif not _is_unset(node):
        text = json.dumps(node, default=str) if isinstance(node, (list, tuple)) else str(node)
        out[prefix] = text[:_MAX_PARAM_LENGTH]
    return out


def _clip_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:_MAX_TAG_LENGTH] for k, v in tags.items() if v is not None and v != ""}


def _model_specs(config: Any, models: Iterable[Any] | None) -> list[dict[str, str]]:
    """[{name, kind, estimator}] from ``models`` (objects or dicts) or the config's models."""
    source = models if models is not None else _config_dict(config).get("models", [])
    specs = []
    for m in source:
        get = m.get if isinstance(m, Mapping) else lambda k, m=m: getattr(m, k, None)
        specs.append({"name": str(get("name")), "kind": str(get("kind") or "prognostic"),
                      "estimator": str(get("estimator") or "")})
    return specs


def _run_name(experiment: str) -> str:
    return f"{experiment}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def _source_name() -> str:
    """What started the run: the console script (``mbi-predict``), the ``-m`` module, or the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name.removesuffix(".__main__")
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return Path(argv0).name or "python"


def check_artifact(path: Path) -> None:
    """Refuse files that hold participant-level rows (tabular data formats; a CSV with a participant_id column)."""
    suffix = path.suffix.lower()
    if suffix in _REFUSED_SUFFIXES:
        raise ValueError(f"refusing to log participant-level file {path.name} to MLflow")
    if suffix in (".csv", ".tsv", ".txt") and path.is_file():
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = handle.readline().lower()
        if "participant_id" in header:
            raise ValueError(f"refusing to log participant-level file {path.name} to MLflow")


# ----------------------------------------------------------------------------------------- metric mapping

def model_metrics(name: str, summary: dict[str, Any]) -> dict[str, float]:
    """The model run's pooled metrics: ``<metric>``, ``<metric>_<bound>``, ``<metric>_k``; the comparison with the
    reference model (``<metric>_vs_reference`` and its CI), the clustered ATE, the heterogeneity verdict (0/1)
    and its decisive tests' p-values, and timings. Names are the same for every model of a kind."""
    block = summary["models"][name]
    metrics: dict[str, float] = {}
    for metric, pooled in (block.get("pooled") or {}).items():
        if _finite(pooled.get("estimate")):
            metrics[metric] = float(pooled["estimate"])
        for bound in BOUNDS:
            if _finite(pooled.get(bound)):
                metrics[f"{metric}_{bound}"] = float(pooled[bound])
        if _finite(pooled.get("k")):
            metrics[f"{metric}_k"] = float(pooled["k"])
    comparison = summary.get("comparison_to_reference") or {}
    versus = (comparison.get("models") or {}).get(name) or {}
    if versus and comparison.get("metric"):
        stem = f"{comparison['metric']}_vs_reference"
        for key, label in (("difference", stem), ("ci_low", f"{stem}_ci_low"), ("ci_high", f"{stem}_ci_high")):
            if _finite(versus.get(key)):
                metrics[label] = float(versus[key])
        if isinstance(versus.get("beats_reference"), bool):
            metrics[f"{stem}_beats"] = float(versus["beats_reference"])
    ate = block.get("ate_clustered") or {}
    for key in ("estimate", "se", "ci_low", "ci_high"):
        if _finite(ate.get(key)):
            metrics["ate_clustered" if key == "estimate" else f"ate_clustered_{key}"] = float(ate[key])
    heterogeneity = block.get("heterogeneity") or {}
    if heterogeneity.get("verdict") in ("evidence", "no_evidence"):
        metrics["heterogeneity_evidence"] = float(heterogeneity["verdict"] == "evidence")
    for test in heterogeneity.get("tests", []) or []:
        if test.get("decisive") and _finite(test.get("p_value")):
            metrics[f"heterogeneity_p_{test['name']}"] = float(test["p_value"])
    for key, value in (block.get("timing") or {}).items():
        if _finite(value):
            metrics[key] = float(value)
    return metrics


def held_out_metrics(name: str, summary: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """``held_out/<metric>`` per held-out trial, step = the trial's index in ``validation.held_out``; numeric
    tuned hyper-parameters that differ between folds as ``held_out/param_<name>``."""
    block = summary["models"][name]
    order = {trial: i for i, trial in enumerate(summary["validation"]["held_out"])}
    varying = _varying_params(block)
    out = []
    for row in block.get("per_trial") or []:
        step = order.get(row["trial_id"])
        if step is None:
            continue
        values = {f"{HELD_OUT_PREFIX}{k}": float(v) for k, v in row.items()
                  if k not in ("trial_id", "variances") and _finite(v)}
        best = (block.get("best_params") or {}).get(row["trial_id"]) or {}
        values.update({f"{HELD_OUT_PREFIX}param_{k}": float(best[k]) for k in varying if _finite(best.get(k))})
        out.append((step, values))
    return out


def _varying_params(block: dict[str, Any]) -> set[str]:
    folds = [p or {} for p in (block.get("best_params") or {}).values()]
    keys = {k for p in folds for k in p}
    return {k for k in keys if len({json.dumps(p.get(k), default=str) for p in folds}) > 1}


def model_params(name: str, summary: dict[str, Any]) -> dict[str, str]:
    """The model's real hyper-parameters, no unset values: the config's params, overridden by the values every
    fold's tuning agreed on, overridden by the final model's tuned values; plus estimator, kind, imputer,
    tuning budget and ``held_out_trials`` (step -> trial id, comma-separated in step order)."""
    block = summary["models"][name]
    spec = next((m for m in (summary.get("config") or {}).get("models", []) if m.get("name") == name), {})
    hyper: dict[str, Any] = dict(spec.get("params") or {})
    folds = [p or {} for p in (block.get("best_params") or {}).values()]
    if folds:
        varying = _varying_params(block)
        hyper.update({k: v for k, v in folds[0].items() if k not in varying})
    hyper.update(block.get("final_model_params") or {})
    params = flat_params(hyper)
    meta = {"estimator": block.get("estimator") or spec.get("estimator"), "kind": spec.get("kind") or (
        "effect" if block.get("task") == "effect" else "prognostic"), "imputer": spec.get("imputer"),
        "tuning_n_trials": (spec.get("tuning") or {}).get("n_trials") or None,
        "n_features": len(block.get("features") or []) or None}
    params.update({f"mbi_predict.{k}" if k in params else k: str(v) for k, v in meta.items() if not _is_unset(v)})
    held_out = ",".join(summary["validation"]["held_out"])
    if held_out and len(held_out) <= _MAX_PARAM_LENGTH:
        params["held_out_trials"] = held_out
    return params


def run_facts(summary: dict[str, Any]) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """The parent run's (metrics, params, tags) from the summary."""
    data = summary["data"]
    analysed = data.get("analysed") or {}
    metrics = {"n_participants": data.get("n_participants"), "n_trials": data.get("n_trials"),
               "n_analysed": analysed.get("n_participants"), "n_trials_analysed": analysed.get("n_trials"),
               "n_held_out": len(summary["validation"]["held_out"])}
    heterogeneity = summary.get("heterogeneity") or {}
    if heterogeneity.get("verdict") in ("evidence", "no_evidence"):
        metrics["heterogeneity_evidence"] = float(heterogeneity["verdict"] == "evidence")
    params = flat_params({"run": {
        "outcome": summary.get("outcome"), "outcome_type": summary.get("outcome_type"),
        "control_type": summary.get("control_type"), "data_sha256": data.get("sha256"),
        "data_source": data.get("source"), "validation_scheme": summary["validation"].get("scheme"),
        "primary_metric": summary["validation"].get("primary_metric"),
        "heterogeneity_method": heterogeneity.get("method"), "heterogeneity_rule": heterogeneity.get("rule"),
        "heterogeneity_alpha": heterogeneity.get("alpha"),
        "heterogeneity_primary_model": heterogeneity.get("primary_model")}})
    tags = _clip_tags({"mbi_predict.outcome": summary.get("outcome"), "mbi_predict.data_sha256": data.get("sha256"),
                       "mbi_predict.validation": summary["validation"].get("scheme"),
                       "mbi_predict.models": ",".join(summary["models"]),
                       "mbi_predict.heterogeneity": heterogeneity.get("verdict"),
                       "mbi_predict.heterogeneity_reason": heterogeneity.get("reason")})
    return {k: float(v) for k, v in metrics.items() if _finite(v)}, params, tags


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
        self.client = client(self.uri)
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
        self._closing = False
        self._pending_sigterm = False

    # ---------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> ExperimentRun:
        from mbi_predict import __version__

        commit = git_commit()
        tags = {RUN_TYPE_TAG: "experiment", "mlflow.source.name": _source_name(), "mlflow.source.type": "LOCAL",
                "mlflow.source.git.commit": commit, "mbi_predict.git_commit": commit,
                "mbi_predict.version": __version__,
                "mbi_predict.config_sha256": config_sha256(self.config) if self.config else None,
                "mbi_predict.models": ",".join(s["name"] for s in self.specs), **self.extra_tags}
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=_clip_tags(tags))
        self.run_id = run.info.run_id
        self._install_sigterm()
        try:
            config_params = {k: v for k, v in flat_params(self.config).items()
                             if not k.startswith(("models.", "tracking.uri"))}
            self._log(self.run_id, params=config_params)
            for spec in self.specs:
                child = self.client.create_run(self.experiment_id, run_name=spec["name"], tags=_clip_tags({
                    "mlflow.parentRunId": self.run_id, RUN_TYPE_TAG: "model", KIND_TAG: spec["kind"],
                    ESTIMATOR_TAG: spec["estimator"], "mlflow.source.name": tags["mlflow.source.name"],
                    "mlflow.source.type": "LOCAL", "mlflow.source.git.commit": commit}))
                self.model_runs[spec["name"]] = child.info.run_id
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._closing = True
        try:
            if exc_type is None:
                status = "FINISHED"
            elif issubclass(exc_type, KeyboardInterrupt):
                status = "KILLED"
            else:
                status = "FAILED"
            ending = [run_id for name, run_id in self.model_runs.items()
                      if status != "FINISHED" or name not in self._done]
            failures = []
            for run_id in [*ending, *([self.run_id] if self.run_id is not None else [])]:
                try:
                    self.client.set_terminated(run_id, status=status)
                except Exception as error:  # best effort: the exception that ended the block matters more
                    failures.append(error)
            if failures and exc_type is None:
                raise failures[0]
        finally:
            self._restore_sigterm()
        return False

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_sigterm(signum, frame):
            if self._closing:  # ending the runs: finish that, then the previous handler gets the signal
                self._pending_sigterm = True
                return
            raise RunTerminated(f"signal {signum} (SIGTERM): the run is being ended as KILLED")

        self._old_handler = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._old_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
            if self._pending_sigterm:
                self._pending_sigterm = False
                signal.raise_signal(signal.SIGTERM)

    # ------------------------------------------------------------------------------------------ logging

    def _log(self, run_id: str, *, metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None,
             tags: Mapping[str, str] | None = None, step: int = 0, model_id: str | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = _now_ms()
        dataset = self._dataset
        metric_list = [Metric(k, float(v), now, step, model_id=model_id,
                              dataset_name=dataset.name if dataset is not None and model_id else None,
                              dataset_digest=dataset.digest if dataset is not None and model_id else None)
                       for k, v in (metrics or {}).items() if _finite(v)]
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
            with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
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
            self._log(run_id, metrics=pooled, params=params, tags=model_tags, model_id=model_id)
            for step, values in held_out_metrics(name, summary):
                self._log(run_id, metrics=values, step=step)
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


def log_artifacts_to(made, run_id: str, *, summary_path: str | Path | None = None,
                     cards: Mapping[str, Iterable[str | Path]] | None = None,
                     plots: Mapping[str, Iterable[str | Path]] | None = None,
                     harmonisation_report: Iterable[str | Path] | str | Path | None = None,
                     meta_analysis: Iterable[str | Path] | str | Path | None = None,
                     extra: Mapping[str, Iterable[str | Path]] | None = None) -> None:
    """`ExperimentRun.log_artifacts` for any run (``made``: an MlflowClient), all files checked before any is
    logged."""
    planned: list[tuple[Path, str | None]] = []
    if summary_path is not None:
        planned.append((Path(summary_path), None))
    for folder, mapping in (("cards", cards), ("plots", plots)):
        for model, paths in (mapping or {}).items():
            planned += [(Path(p), f"{folder}/{model}") for p in paths]
    for folder, paths in (("data", harmonisation_report), ("meta_analysis", meta_analysis)):
        if paths is None:
            continue
        paths = [paths] if isinstance(paths, (str, Path)) else paths
        planned += [(Path(p), folder) for p in paths]
    for folder, paths in (extra or {}).items():
        planned += [(Path(p), folder) for p in paths]
    for path, _ in planned:
        for inner in (path.rglob("*") if path.is_dir() else [path]):
            check_artifact(inner)
    for path, folder in planned:
        if path.is_dir():
            made.log_artifacts(run_id, str(path), artifact_path=f"{folder}/{path.name}" if folder else path.name)
        elif path.is_file():
            made.log_artifact(run_id, str(path), artifact_path=folder)


def log_cards(tracking_uri: str, run_id: str, cards: Mapping[str, Iterable[str | Path]]) -> None:
    """Add model cards written after the run (``mbi-predict card``) to its parent run as ``cards/<model>/...``."""
    log_artifacts_to(client(check_tracking_uri(tracking_uri)), run_id, cards=cards)


def _model_id(model_uri: str) -> str:
    """``models:/m-abc`` -> ``m-abc`` (MLflow 3 LoggedModel URIs)."""
    if model_uri.startswith("models:/"):
        return model_uri.removeprefix("models:/").split("/")[0]
    from mlflow.models import get_model_info

    return get_model_info(model_uri).model_id


def open_run(uri: str | None, experiment: str, **kwargs: Any) -> ExperimentRun:
    """``with open_run(uri, experiment, config=config) as run: ...`` (an alias of `ExperimentRun`)."""
    return ExperimentRun(uri, experiment, **kwargs)


__all__ = ["ExperimentRun", "RunTerminated", "open_run", "model_metrics", "model_params", "held_out_metrics",
           "run_facts", "config_sha256", "flat_params", "check_artifact", "log_artifacts_to", "log_cards"]
