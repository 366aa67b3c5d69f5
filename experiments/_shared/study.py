"""What every study's run.py shares: its config, its output folder, one runner call, and the printed figures.

Not part of the package (the package does not import experiments). Each study writes under
``experiments/<study>/runs/`` (git-ignored): ``data/`` (the loaded table as parquet, which the runner reads from a
path), ``mlflow.db`` (tracking) and one folder per runner call with ``summary.json``, plots and predictions.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]

#: the pooled effect-model metrics printed, in this order (RATE as the runner computes it, see `pooled_rows`)
BENEFIT_METRICS = ("benefit_calibration_slope", "c_for_benefit", "rate_autoc", "ate")


def study_config(study: str, *, models: list[str] | None = None, **validation: Any) -> dict:
    """``configs/studies/<study>.yaml`` as a dict, optionally restricted to some models and with validation
    overrides (e.g. ``bootstrap=20`` for --quick)."""
    config = yaml.safe_load((REPO / "configs" / "studies" / f"{study}.yaml").read_text(encoding="utf-8"))
    config = copy.deepcopy(config)
    if models is not None:
        unknown = set(models) - {m["name"] for m in config["models"]}
        if unknown:
            raise SystemExit(f"models not in the {study} config: {sorted(unknown)}")
        config["models"] = [m for m in config["models"] if m["name"] in models]
    config["validation"] = {**config.get("validation", {}), **validation}
    return config


def output_dir(study: str) -> Path:
    out = REPO / "experiments" / study / "runs"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_study(config: dict, dataset, *, study: str, label: str) -> tuple[Any, pd.DataFrame]:
    """Write the dataset's table, run the config through ``run_experiment`` with tracking to the study's sqlite
    store; return the RunResult and its out-of-fold predictions."""
    from mbi_predict.data.external import write_table
    from mbi_predict.runner import run_experiment

    out = output_dir(study)
    table = write_table(dataset, out / "data" / f"{label}.parquet")
    config = {**config, "data": {"path": str(table)}, "outcome": dataset.outcome}
    started = time.perf_counter()
    result = run_experiment(config, out_dir=out / label, tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                            save_predictions=True, progress=False)
    seconds = time.perf_counter() - started
    result.summary["wall_seconds"] = seconds
    print(f"  {label}: {len(config['models'])} models x {len(result.summary['validation']['held_out'])} folds "
          f"in {seconds:.0f} s; MLflow run {result.mlflow_run_id} -> {out / 'mlflow.db'}")
    return result, pd.read_parquet(result.predictions_path)


def pooled_rows(summary: dict) -> pd.DataFrame:
    """One row per model and pooled metric: estimate, CI, prediction interval, k.

    RATE note: the runner reads an outcome whose construct it does not know (all of these) as "higher is worse"
    and prioritises by -CATE. RATE is unchanged in sign by that (scores and priorities flip together: > 0 still
    means the ranking separates who benefits more from who benefits less), but the AUTOC weights the other end of
    the ranking (those predicted to gain least) most.
    """
    rows = []
    for name, block in summary["models"].items():
        wanted = BENEFIT_METRICS if block["task"] == "effect" else tuple(block["pooled"])
        for metric in wanted:
            pooled = block["pooled"].get(metric)
            if pooled is None:
                continue
            rows.append({"model": name, "metric": metric, **{key: pooled.get(key) for key in
                                                              ("estimate", "ci_low", "ci_high", "pi_low", "pi_high",
                                                               "tau2", "k")}})
    return pd.DataFrame(rows)


def effect_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """The effect models' out-of-fold rows with the CATE in ``cate`` (older runners called it predicted_effect)."""
    frame = predictions.rename(columns={"predicted_effect": "cate"})
    if "cate" not in frame:
        return frame.iloc[0:0].assign(cate=np.nan)
    return frame.loc[frame["cate"].notna()]


def show(frame: pd.DataFrame, title: str) -> None:
    print(f"\n== {title}")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format",
                           "{:.3f}".format):
        print(frame.to_string(index=False))


def save_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
