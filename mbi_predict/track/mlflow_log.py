"""MLflow tracking of experiment runs: one parent run per experiment run, one nested child run per (model, held-out
trial), pooled metrics on the parent with names that line up across runs in the MLflow UI.

Why the client API (``MlflowClient``) and not the fluent ``mlflow.start_run``: the fluent API keeps a global active
run and a global tracking URI; a library that logs from a notebook or a test suite must not change either.
The tracker only reads results (the summary dict); models know nothing of MLflow. Nothing participant-level is
logged: metrics, parameters, plots (smoothed curves and aggregates only) and summary.json.

Metric names: on the parent ``<model>.pooled.<metric>`` and ``<model>.pooled.<metric>.ci_low|ci_high|pi_low|pi_high|
tau2``; on each child ``<metric>`` (plus ``n``, ``n_missing_outcome`` and timings).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RUN_TYPE_TAG = "mbi_predict.run_type"
_MAX_PARAM_LENGTH = 6000   # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LENGTH = 5000
_BATCH = 100               # params/tags per log_batch (MAX_PARAMS_TAGS_PER_BATCH); metrics allow 1000


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


def check_tracking_uri(uri: str | None) -> str:
    """Fail fast, before any model is fitted, with one line if the tracking store cannot be reached."""
    uri = uri or DEFAULT_TRACKING_URI
    db = _sqlite_path(uri)
    if db is not None:
        folder = db.parent if str(db.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri} is unreachable: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking URI {uri} is unreachable: folder {folder} is not writable")
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:  # noqa: S310
                if response.status >= 400:
                    raise ConfigError(f"tracking URI {uri} is unreachable: HTTP {response.status}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"tracking URI {uri} is unreachable: {reason}") from None
    try:
        _client(uri).search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as exc:  # MLflow raises many types (MlflowException, OperationalError, ...)
        raise ConfigError(f"tracking URI {uri} is unusable: {' '.join(str(exc).split())[:300]}") from None
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str, uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    db = _sqlite_path(uri)
    # artifacts beside the database, never in whatever the working directory happens to be
    location = (db.resolve().parent / "mlartifacts" / name.replace("/", "_")).as_uri() if db is not None else None
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pooled_metric_names(summary: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics from the summary: ``<model>.pooled.<metric>[.<bound>]`` and comparison results."""
    metrics: dict[str, float] = {}
    for model, block in summary["models"].items():
        for metric, pooled in block["pooled"].items():
            if _finite(pooled.get("estimate")):
                metrics[f"{model}.pooled.{metric}"] = float(pooled["estimate"])
            for bound in ("ci_low", "ci_high", "pi_low", "pi_high", "tau2"):
                if _finite(pooled.get(bound)):
                    metrics[f"{model}.pooled.{metric}.{bound}"] = float(pooled[bound])
            if isinstance(pooled.get("k"), int):
                metrics[f"{model}.pooled.{metric}.k"] = float(pooled["k"])
        for key, value in block.get("timing", {}).items():
            if _finite(value):
                metrics[f"{model}.timing.{key}"] = float(value)
    comparison = summary.get("comparison_to_reference") or {}
    for model, block in (comparison.get("models") or {}).items():
        for key in ("difference", "ci_low", "ci_high"):
            if _finite(block.get(key)):
                metrics[f"{model}.vs_reference.{comparison['metric']}.{key}"] = float(block[key])
    return metrics


class Tracker:
    """Parent and child runs of one experiment run. Use as a context manager: the parent ends FINISHED, or FAILED
    if the block raises."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str], *,
                 checked: bool = False) -> None:
        self.uri = uri if checked else check_tracking_uri(uri)
        self.client = _client(self.uri)
        self.experiment_id = _experiment_id(self.client, experiment, self.uri)
        self.run_name, self.tags = run_name, tags
        self.run_id: str | None = None

    def __enter__(self) -> Tracker:
        run = self.client.create_run(self.experiment_id, run_name=self.run_name,
                                     tags={RUN_TYPE_TAG: "experiment", **_clip_tags(self.tags)})
        self.run_id = run.info.run_id
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.client.set_terminated(self.run_id, status="FAILED" if exc_type else "FINISHED")
        return False

    def _log(self, run_id: str, *, metrics: dict[str, float] | None = None, params: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_list = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if _finite(v)]
        param_list = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, v) for k, v in _clip_tags(tags or {}).items()]
        # one request per batch-sized chunk: MLflow allows 1000 metrics and 100 params/tags per log_batch
        chunks = max(math.ceil(len(metric_list) / 900), math.ceil(len(param_list) / _BATCH),
                     math.ceil(len(tag_list) / _BATCH))
        for i in range(chunks):
            self.client.log_batch(run_id, metrics=metric_list[i * 900:(i + 1) * 900],
                                  params=param_list[i * _BATCH:(i + 1) * _BATCH],
                                  tags=tag_list[i * _BATCH:(i + 1) * _BATCH])

    def log_parent(self, summary: dict[str, Any], params: dict[str, str]) -> None:
        tags = {f"mbi_predict.family.{name}": block.get("estimator", "") for name, block in summary["models"].items()}
        self._log(self.run_id, metrics=pooled_metric_names(summary), params=params, tags=tags)

    def log_children(self, summary: dict[str, Any]) -> list[str]:
        """One nested run per held-out trial, holding every model's metrics on that trial (``<model>.<metric>``,
        matching the parent's ``<model>.pooled.<metric>``) and each fold's tuned parameters (``<model>.best.<p>``).

        One run per trial rather than per (model, trial): the UI then shows the models side by side per trial,
        and logging to an sqlite store costs a tenth of the time (it dominated the demo's tracking step).
        """
        by_trial: dict[str, dict[str, dict[str, Any]]] = {}
        for model, block in summary["models"].items():
            for row in block["per_trial"]:
                trial = by_trial.setdefault(row["trial_id"], {"metrics": {}, "params": {}})
                trial["metrics"].update({f"{model}.{k}": v for k, v in row.items()
                                         if k not in ("trial_id", "variances")})
                best = (block.get("best_params") or {}).get(row["trial_id"]) or {}
                trial["params"].update({f"{model}.best.{k}": v for k, v in best.items()})
        child_ids = []
        for trial, logged in by_trial.items():
            tags = {"mlflow.parentRunId": self.run_id, RUN_TYPE_TAG: "fold", "mbi_predict.held_out_trial": trial,
                    "mbi_predict.outcome": summary["outcome"],
                    "mbi_predict.models": ",".join(summary["models"])}
            run = self.client.create_run(self.experiment_id, run_name=f"held-out:{trial}", tags=tags)
            self._log(run.info.run_id, metrics=logged["metrics"], params={"held_out_trial": trial, **logged["params"]})
            self.client.set_terminated(run.info.run_id, status="FINISHED")
            child_ids.append(run.info.run_id)
        return child_ids

    def log_artifacts(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            if path.name.endswith(".parquet"):  # participant-level rows never go to the tracking store
                raise ValueError(f"refusing to log participant-level file {path.name} to MLflow")
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=artifact_path or path.name)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)


def _clip_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: ("" if v is None else str(v))[:_MAX_TAG_LENGTH] for k, v in tags.items()}


def compare(experiment: str | None = None, tracking_uri: str | None = None) -> pd.DataFrame:
    """A leaderboard of pooled metrics with their CIs: one row per (experiment run, model), newest runs first.

    Columns: experiment, run_id, run_name, start_time, outcome, model, then ``<metric>``, ``<metric>.ci_low``,
    ``<metric>.ci_high`` (and pi/tau2/k when logged) for every pooled metric.
    """
    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():  # reading must not create an empty store as a side effect
        raise ConfigError(f"no tracking database at {db}: run an experiment first or pass --tracking-uri")
    uri = check_tracking_uri(uri)
    client = _client(uri)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment named {experiment!r} at {uri}")
        experiments = [found]
    else:
        experiments = client.search_experiments()
    names = {e.experiment_id: e.name for e in experiments}
    rows = []
    if names:
        runs = client.search_runs(list(names), filter_string=f"tags.`{RUN_TYPE_TAG}` = 'experiment'",
                                  order_by=["attributes.start_time DESC"], max_results=5000)
        for run in runs:
            per_model: dict[str, dict[str, float]] = {}
            for key, value in run.data.metrics.items():
                model, sep, rest = key.partition(".pooled.")
                if sep:
                    per_model.setdefault(model, {})[rest] = value
            for model, values in per_model.items():
                rows.append({"experiment": names[run.info.experiment_id], "run_id": run.info.run_id,
                             "run_name": run.info.run_name,
                             "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
                             "outcome": run.data.tags.get("mbi_predict.outcome"), "model": model, **values})
    base = ["experiment", "run_id", "run_name", "start_time", "outcome", "model"]
    frame = pd.DataFrame(rows, columns=None if rows else base)
    metric_columns = sorted(c for c in frame.columns if c not in base)
    return frame[base + metric_columns].reset_index(drop=True)


def ui_command(tracking_uri: str | None = None) -> list[str]:
    """argv for ``mlflow ui`` on the given store, bound to localhost (the UI has no authentication)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri or DEFAULT_TRACKING_URI,
            "--host", "127.0.0.1"]
