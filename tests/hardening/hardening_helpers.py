"""Helpers of the hardening tests: the CLI in-process and the checks every hostile input must pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

from typer.testing import CliRunner

from mbi_predict.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *needles: str) -> str:
    """Exit 2, exactly one non-empty output line, no traceback; the line contains every needle."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (symlinks not followed), keyed by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}
