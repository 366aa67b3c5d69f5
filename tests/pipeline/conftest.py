"""The pinned run, run once per session for the tests that read it (same seed, same numbers; the schema)."""

from __future__ import annotations

import os

import pytest

from pinned_run import REGEN_ENV, regenerate, run_pinned


@pytest.fixture(scope="session")
def pinned_summary(tmp_path_factory):
    """A fresh run of the pinned config (``MBI_REGEN_PINNED=1`` first rewrites the pinned file)."""
    if os.environ.get(REGEN_ENV):
        regenerate(tmp_path_factory.mktemp("regen"))
    return run_pinned(tmp_path_factory.mktemp("pinned"))
