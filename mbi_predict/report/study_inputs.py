"""What a study report is built from: `collect` reads a finished run (read only) into `StudyInputs`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbi_predict.report.card_source import load_summary


@dataclass(frozen=True)
class StudyInputs:
    summary: dict[str, Any]
    source: str                                            # the run folder or "MLflow run <id>"
    folder: Path | None                                    # the run folder, when the run is a folder
    plots: dict[str, bytes] = field(default_factory=dict)  # "plots/<file>" -> bytes (png, svg)
    linked_plots: list[Path] = field(default_factory=list)  # figures a browser cannot embed (pdf)
    metas: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    harmonisation: Path | None = None
    cards: dict[str, list[Path]] = field(default_factory=dict)


def _meta_files(folders: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    found, seen = [], set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("meta.json")):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue  # an unreadable meta-analysis is reported as missing, not a failure
            if isinstance(record, dict) and isinstance(record.get("per_trial"), list):
                found.append((path, record))
    return found


def _cards(folder: Path, models: list[str]) -> dict[str, list[Path]]:
    """Card files in the run folder: ``model_card_<model>.*`` and the default ``model_card.*`` (its model is read
    from its JSON twin when present)."""
    cards: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("model_card*.*")):
        if path.suffix not in (".html", ".md", ".json") or not path.is_file():
            continue
        stem = path.stem.removeprefix("model_card")
        model = stem.removeprefix("_") if stem else None
        if model is None:
            twin = path.with_suffix(".json")
            try:
                model = json.loads(twin.read_text(encoding="utf-8"))["model_details"]["name"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if model in models:
            cards.setdefault(model, []).append(path)
    return cards


def collect(run: str | Path, *, meta: list[str | Path] | None = None, tracking_uri: str | None = None) -> StudyInputs:
    """What the report is built from. ``run``: a run folder or an MLflow run id; ``meta``: extra folders holding
    meta.json files (default: ``RUN/meta`` and the ``meta`` folder beside the run, as the demo lays them out)."""
    loaded = load_summary(run, tracking_uri=tracking_uri, with_plots=True)
    path = Path(str(run))
    folder = path if path.is_dir() else None
    folders = [Path(m) for m in meta or []]
    linked: list[Path] = []
    harmonisation = None
    cards: dict[str, list[Path]] = {}
    if folder is not None:
        folders += [folder / "meta", folder.parent / "meta"]
        linked = sorted((folder / "plots").glob("*.pdf")) if (folder / "plots").is_dir() else []
        for candidate in (folder / "harmonisation_report", folder.parent / "harmonisation_report"):
            page = candidate / "harmonisation_report.html"
            if page.is_file():
                harmonisation = page
                break
        cards = _cards(folder, list(loaded.summary["models"]))
    return StudyInputs(loaded.summary, loaded.source, folder, loaded.plots, linked, _meta_files(folders),
                       harmonisation, cards)


def relative_link(target: Path, page: Path) -> str:
    """A link from the report page to ``target`` (relative when on the same drive, else absolute)."""
    try:
        return Path(os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)).as_posix()
    except ValueError:
        return Path(target).resolve().as_uri()
