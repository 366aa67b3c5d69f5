"""Helpers of the card tests: a summary written as a run folder, its card built, checked and rendered."""

from __future__ import annotations

import json

from mbi_predict.report.card import build_card, validate_card
from mbi_predict.report.card_render import to_markdown


def card_and_markdown(tmp_path, summary, name="cf"):
    """(card dict, Markdown) of model ``name`` of ``summary`` (written to ``tmp_path/run``); the card validated."""
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    card = build_card(folder, model=name)
    validate_card(card)
    return card, to_markdown(card, {})
