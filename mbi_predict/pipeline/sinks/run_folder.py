"""The run-folder sink: ``summary.json`` (+ plots, + held-out predictions on request) in the run folder.

Nothing is half-written: outputs are built in a hidden staging folder (``.mbi-staging.<host>.<pid>.*``, see
`io.staging_prefix`) inside the run folder and moved into place by `publish`, plots first and ``summary.json`` last,
in one step for Ctrl-C and SIGTERM, so a reader who sees ``summary.json`` sees a complete run. The staging folder is
removed whatever happens, and so are the folders this run created for --out when nothing was published (an
interrupted or failed run leaves no empty run folder); one left by a SIGKILLed process is removed by the next run
into the same folder. Held-out predictions are participant-level and are
written only with ``save_predictions``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict.config import ExperimentConfig
from mbi_predict.io import (deferred_interrupts, remove_stale_staging, staging_prefix, write_json_atomic,
                             write_parquet_atomic)
from mbi_predict.validate.loto import FoldResult

SUMMARY = "summary.json"
PREDICTIONS = "predictions.parquet"


def default_out_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment>/<UTC timestamp>``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / config.experiment / stamp


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden staging folder inside ``out_dir`` (created), removed when the block ends; the folders created for
    ``out_dir`` are removed too when the block did not end normally (nothing was published)."""
    created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
    finished = False
    staging: Path | None = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out_dir)
        # created and named as one step for Ctrl-C and SIGTERM: an interrupt that lands between the folder's
        # creation and `staging` being bound would leave a folder nobody removes (seen in CI, where the kill test
        # signals the moment the folder appears)
        with deferred_interrupts():
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=out_dir))
        yield staging
        finished = True
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not finished:
            for folder in created:  # deepest first; a folder that is not empty stays
                with suppress(OSError):
                    folder.rmdir()


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
    """Move staged outputs into ``out_dir`` (plots, predictions, summary.json last); the published plot paths.

    The run folder then holds this run's outputs only: a previous run's ``plots/`` folder is replaced as a whole
    (one rename; its figures of models this run does not have must not sit beside the new summary, where a card
    would show them), and its participant-level ``predictions.parquet`` is removed when this run did not ask for
    predictions. Its ``summary.json`` goes first, so a kill between two moves never pairs the old summary with new
    figures; the moves are one step for Ctrl-C and SIGTERM."""
    retired = staging / ".previous"
    retired.mkdir()
    with deferred_interrupts():
        for name in (SUMMARY, "plots", PREDICTIONS):
            if (out_dir / name).exists():
                (out_dir / name).replace(retired / name)
        plots = []
        if (staging / "plots").is_dir():
            (staging / "plots").replace(out_dir / "plots")
            plots = sorted((out_dir / "plots").iterdir())
        if (staging / PREDICTIONS).exists():
            (staging / PREDICTIONS).replace(out_dir / PREDICTIONS)
        (staging / SUMMARY).replace(out_dir / SUMMARY)
    return plots
