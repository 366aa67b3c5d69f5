"""Where a model card's numbers come from: a run's summary.json and plots, from its folder or its MLflow artifacts.

A card never recomputes a metric: it reads the run's own record. The plots are read into memory here (and any
temporary download removed) so the card can embed them without depending on a folder that may vanish.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbi_predict.deploy import ModelLookupError

PLOT_SUFFIXES = (".png",)


@dataclass(frozen=True)
class LoadedRun:
    summary: dict[str, Any]
    source: str                                   # the folder or "mlflow run <id>" the summary came from
    plots: dict[str, bytes] = field(default_factory=dict)   # "plots/<file>.png" -> bytes


def _read_plots(folder: Path) -> dict[str, bytes]:
    plots_dir = folder / "plots"
    if not plots_dir.is_dir():
        return {}
    return {f"plots/{path.name}": path.read_bytes() for path in sorted(plots_dir.iterdir())
            if path.suffix.lower() in PLOT_SUFFIXES and path.is_file()}


def _read_summary(path: Path, source: str) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLookupError(f"{source}: summary.json is unreadable ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict) or not summary["models"]:
        raise ModelLookupError(f"{source}: summary.json records no models")
    return summary


def load_summary(run: str | Path, *, tracking_uri: str | None = None, with_plots: bool = False) -> LoadedRun:
    """A run folder (holding summary.json) or an MLflow run id -> its summary (and, if asked, its plots)."""
    path = Path(str(run))
    if path.is_dir():
        if not (path / "summary.json").is_file():
            raise ModelLookupError(f"{path} is not a run folder: it has no summary.json")
        return LoadedRun(_read_summary(path / "summary.json", str(path)), str(path),
                         _read_plots(path) if with_plots else {})
    return _load_from_mlflow(str(run), tracking_uri=tracking_uri, with_plots=with_plots)


def _load_from_mlflow(run_id: str, *, tracking_uri: str | None, with_plots: bool) -> LoadedRun:
    import mlflow
    from mlflow.exceptions import MlflowException

    store = tracking_uri or mlflow.get_tracking_uri()
    database = Path(store.removeprefix("sqlite:///")) if store.startswith("sqlite:///") else None
    if database is not None and not database.is_file():
        # reading must not create an empty tracking database as a side effect
        raise ModelLookupError(f"run {run_id} is neither a run folder nor a run in the tracking store {store} "
                               "(no such database)")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ModelLookupError(f"run {run_id} is neither a run folder nor a run in the tracking store {store}") \
            from None
    scratch = Path(tempfile.mkdtemp(prefix="mbi-card-"))
    try:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="summary.json",
                                                        dst_path=str(scratch), tracking_uri=tracking_uri)
        except (MlflowException, OSError):
            raise ModelLookupError(f"run {run_id} has no summary.json artifact (was it made by mbi-predict run?)") \
                from None
        summary = _read_summary(Path(local), f"run {run_id}")
        plots: dict[str, bytes] = {}
        if with_plots:
            try:
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots", dst_path=str(scratch),
                                                    tracking_uri=tracking_uri)
                plots = _read_plots(scratch)
            except (MlflowException, OSError):
                plots = {}  # a run without plots still gets a card, which says so
        return LoadedRun(summary, f"MLflow run {run_id}", plots)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def outcome_task(summary: dict[str, Any], model: str | None = None) -> str:
    """continuous | binary: recorded by the run, else read off the metric names (rmse only exists for continuous)."""
    models = [summary["models"][model]] if model else list(summary["models"].values())
    for recorded in [summary.get("outcome_type")] + [entry.get("outcome_type") for entry in models]:
        if recorded in ("continuous", "binary"):
            return recorded
    for entry in models:
        pooled = entry.get("pooled") or {}
        if "rmse" in pooled or "r2" in pooled:
            return "continuous"
        if "brier" in pooled or "c_statistic" in pooled:
            return "binary"
    return "unknown"


def primary_metric(summary: dict[str, Any]) -> tuple[str, bool]:
    """The metric models are ranked by, and whether lower is better.

    The run's own choice (``validation.primary_metric``) wins; otherwise the package's ``PRIMARY_METRIC``:
    RMSE for a continuous outcome and the Brier score for a binary one (a proper score that rewards calibration as
    well as discrimination; the c-statistic alone would prefer a badly calibrated model that ranks well).
    """
    from mbi_predict.validate.metrics import LOWER_IS_BETTER, PRIMARY_METRIC

    recorded = (summary.get("validation") or {}).get("primary_metric")
    metric = recorded or PRIMARY_METRIC.get(outcome_task(summary), "rmse")
    return metric, LOWER_IS_BETTER.get(metric, True)


def select_model(summary: dict[str, Any], name: str | None = None) -> str:
    """The named model (checked to exist), or the best prognostic model by its pooled primary metric."""
    models = summary["models"]
    if name is not None:
        if name not in models:
            raise ModelLookupError(f"the run has no model {name!r} (it has {', '.join(models)})")
        return name
    metric, lower = primary_metric(summary)
    scored = []
    for model_name, entry in models.items():
        if entry.get("task", "prognostic") != "prognostic":
            continue
        estimate = ((entry.get("pooled") or {}).get(metric) or {}).get("estimate")
        if isinstance(estimate, (int, float)):
            scored.append((estimate if lower else -estimate, model_name))
    if not scored:
        raise ModelLookupError(f"the run has no prognostic model with a pooled {metric}; name a model "
                               f"(it has {', '.join(models)})")
    return min(scored)[1]
