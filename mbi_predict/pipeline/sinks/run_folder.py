"""The run-folder sink: ``summary.json`` (+ plots, + held-out predictions on request) in the run folder.

Nothing is half-written: outputs are built in a hidden staging folder (``.staging-*``) inside the run folder and
moved into place by `publish`, plots first and ``summary.json`` last, so a reader who sees ``summary.json`` sees a
complete run; the staging folder is removed whatever happens. Held-out predictions are participant-level and are
written only with ``save_predictions``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict.config import ExperimentConfig
from mbi_predict.io import write_json_atomic, write_parquet_atomic
from mbi_predict.validate.loto import FoldResult

SUMMARY = "summary.json"
PREDICTIONS = "predictions.parquet"


def default_out_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment>/<UTC timestamp>``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / config.experiment / stamp


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden staging folder inside ``out_dir`` (created), removed when the block ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_summary(staging: Path, summary: dict[str, Any]) -> Path:
    return write_json_atomic(staging / SUMMARY, summary)


def predictions_frame(results: tuple[FoldResult, ...] | list[FoldResult]) -> pd.DataFrame:
    """Every held-out row's predictions, with ``scored`` marking the rows that entered the metrics."""
    frames = []
    for result in results:
        frame = result.predictions.copy()
        frame["scored"] = result.evaluated
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_predictions(staging: Path, results: tuple[FoldResult, ...] | list[FoldResult]) -> Path:
    path = staging / PREDICTIONS
    write_parquet_atomic(path, predictions_frame(results), index=False)
    return path


def publish(staging: Path, out_dir: Path) -> list[Path]:
    """Move staged outputs into ``out_dir`` (plots first, summary.json last); the published plot paths."""
    plots = []
    if (staging / "plots").is_dir():
        (out_dir / "plots").mkdir(exist_ok=True)
        for path in sorted((staging / "plots").iterdir()):
            target = out_dir / "plots" / path.name
            path.replace(target)
            plots.append(target)
    if (staging / PREDICTIONS).exists():
        (staging / PREDICTIONS).replace(out_dir / PREDICTIONS)
    (staging / SUMMARY).replace(out_dir / SUMMARY)
    return plots
