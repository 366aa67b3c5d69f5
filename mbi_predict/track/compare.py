"""Reading the store: the leaderboard of models across experiment runs, and the command that opens the MLflow UI."""

from __future__ import annotations

import sys

import pandas as pd

from mbi_predict.errors import ConfigError
from mbi_predict.track.liveness import reap_dead_runs
from mbi_predict.track.mapping import BOUNDS, ESTIMATOR_TAG, HELD_OUT_PREFIX, KIND_TAG, RUN_TYPE_TAG
from mbi_predict.track.store import DEFAULT_TRACKING_URI, check_tracking_uri, client, sqlite_path

#: pooled metrics where a larger value is better (all others sort ascending by default)
HIGHER_IS_BETTER = {"r2", "c_statistic", "c_for_benefit", "rate_autoc", "rate_qini", "cate_truth_corr",
                    "policy_value_vs_all", "policy_value_vs_none", "gates_top_minus_bottom"}
BASE_COLUMNS = ["experiment", "run_id", "run_name", "start_time", "status", "outcome", "model", "kind", "estimator",
                "model_run_id"]


def compare(experiment: str | None = None, tracking_uri: str | None = None, *, metric: str | None = None,
            ascending: bool | None = None) -> pd.DataFrame:
    """A leaderboard: one row per (experiment run, model), read from the model runs (children of each experiment
    run), newest experiment runs first or, with ``metric``, best first (ascending unless a higher value is better,
    e.g. r2, c_statistic, rate_autoc; ``ascending`` overrides).

    Columns: experiment, run_id (the experiment run), run_name, start_time, status, outcome, model, kind,
    estimator, model_run_id, then every pooled metric with its bounds (``rmse``, ``rmse_ci_low``, ...). A run left
    RUNNING by a process of this host that no longer exists (SIGKILL) is ended KILLED first
    (`mbi_predict.track.liveness`), so status says what happened to it.
    An unknown ``metric`` -> ConfigError naming the known ones.
    """
    uri = tracking_uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # reading must not create an empty store as a side effect
        raise ConfigError(f"no tracking database at {db}: run an experiment first or pass --tracking-uri")
    uri = check_tracking_uri(uri)
    made = client(uri)
    if experiment is not None:
        found = made.get_experiment_by_name(experiment)
        if found is None:
            raise ConfigError(f"no MLflow experiment named {experiment!r} at {uri}")
        experiments = [found]
    else:
        experiments = made.search_experiments()
    names = {e.experiment_id: e.name for e in experiments}
    if names:  # runs whose process died without ending them (SIGKILL) show as what they are: KILLED
        try:
            reap_dead_runs(made, list(names), by="mbi-predict compare")
        except Exception:  # noqa: BLE001 - a read-only store still has a leaderboard
            pass
    rows = []
    if names:
        parents = {run.info.run_id: run for run in _search_all(
            made, list(names), f"tags.`{RUN_TYPE_TAG}` = 'experiment'")}
        for child in _search_all(made, list(names), f"tags.`{RUN_TYPE_TAG}` = 'model'"):
            parent = parents.get(child.data.tags.get("mlflow.parentRunId"))
            if parent is None:
                continue
            pooled = {k: v for k, v in child.data.metrics.items() if not k.startswith(HELD_OUT_PREFIX)}
            rows.append({"experiment": names[parent.info.experiment_id], "run_id": parent.info.run_id,
                         "run_name": parent.info.run_name,
                         "start_time": pd.Timestamp(parent.info.start_time, unit="ms"),
                         "status": parent.info.status, "outcome": parent.data.tags.get("mbi_predict.outcome"),
                         "model": child.info.run_name, "kind": child.data.tags.get(KIND_TAG),
                         "estimator": child.data.tags.get(ESTIMATOR_TAG), "model_run_id": child.info.run_id,
                         **pooled})
    frame = pd.DataFrame(rows, columns=None if rows else BASE_COLUMNS)
    metric_columns = sorted(c for c in frame.columns if c not in BASE_COLUMNS)
    frame = frame[BASE_COLUMNS + metric_columns]
    if metric is None:
        return frame.sort_values(["start_time", "model"], ascending=[False, True], kind="stable").reset_index(drop=True)
    if metric not in metric_columns:
        known = sorted(c for c in metric_columns if not c.endswith(tuple(f"_{b}" for b in (*BOUNDS, "k"))))
        raise ConfigError(f"unknown metric {metric!r}: the logged metrics are {', '.join(known) or 'none'}")
    order = (metric not in HIGHER_IS_BETTER) if ascending is None else ascending
    return frame.sort_values(metric, ascending=order, na_position="last", kind="stable").reset_index(drop=True)


def _search_all(made, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = made.search_runs(experiment_ids, filter_string=filter_string, max_results=5000, page_token=token,
                                order_by=["attributes.start_time DESC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def ui_command(tracking_uri: str | None = None, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """argv for ``mlflow ui`` on the given store; bound to localhost by default (the UI has no authentication:
    another host exposes every run to the network)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri or DEFAULT_TRACKING_URI,
            "--host", str(host), "--port", str(int(port))]


def pooled_metric_columns(frame: pd.DataFrame) -> list[str]:
    """The leaderboard's pooled metrics (columns with a ``_ci_low`` partner), without their bounds."""
    return sorted(c for c in frame.columns if c not in BASE_COLUMNS and f"{c}_ci_low" in frame.columns)


def format_leaderboard(frame: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """`compare`'s frame as text for a terminal: one row per (run, model) with its run's status (FINISHED, or
    KILLED / FAILED for a run that has no or partial metrics), each pooled metric as ``estimate (ci_low to ci_high)``;
    ``metric`` keeps only that metric."""
    metrics = pooled_metric_columns(frame)
    if metric is not None:
        metrics = [m for m in metrics if m == metric]
    rows = frame[["experiment", "run_id", "run_name", "status", "model", "kind", "outcome"]].copy()
    rows["run_id"] = rows["run_id"].str[:8]

    def cell(value: float, low: float, high: float) -> str:
        if value != value:
            return ""
        if low != low or high != high:
            return f"{value:.3g}"
        return f"{value:.3g} ({low:.3g} to {high:.3g})"

    for name in metrics:
        rows[name] = [cell(v, lo, hi) for v, lo, hi in zip(frame[name], frame[f"{name}_ci_low"],
                                                            frame[f"{name}_ci_high"])]
    return rows.reset_index(drop=True)
