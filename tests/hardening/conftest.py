"""Fixtures of the hardening tests (issue #13): a small simulated consortium of raw files to mutate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def consortium_template(tmp_path_factory) -> Path:
    """`mbi-predict simulate --trials 3 --n 200`: T01.csv, T02.sav, T03.dta and consortium.yaml (made once)."""
    from mbi_predict.data.rawsim import simulate_consortium_files

    folder = tmp_path_factory.mktemp("template") / "consortium"
    simulate_consortium_files(folder, seed=5, n_trials=3, n=200)
    return folder


@pytest.fixture
def consortium(consortium_template, tmp_path) -> Path:
    """A fresh copy of the template consortium folder for one test to mutate."""
    folder = tmp_path / "consortium"
    shutil.copytree(consortium_template, folder)
    return folder
