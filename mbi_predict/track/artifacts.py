"""Artifacts of a run: every file is checked before any is logged, and files that hold participant-level rows
(tabular data formats; a CSV with a participant_id column) are refused, so nothing participant-level reaches the
tracking store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from mbi_predict.track.store import check_tracking_uri, client

#: files that hold (or typically hold) participant-level rows never go to the tracking store
_REFUSED_SUFFIXES = {".parquet", ".feather", ".arrow", ".sav", ".zsav", ".dta", ".sas7bdat", ".xpt", ".xlsx", ".xls",
                     ".rds", ".rdata", ".pkl", ".pickle"}


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


__all__ = ["check_artifact", "log_artifacts_to", "log_cards"]
