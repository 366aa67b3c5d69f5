"""Fixtures of the explain tests; the data builders live in explain_data.py."""

from __future__ import annotations

import numpy as np
import pytest

from explain_data import numeric_design, passive_analysis_rows


@pytest.fixture(scope="session")
def strong():
    ipd, truth = passive_analysis_rows("strong", seed=11)
    return ipd, truth, numeric_design(ipd)


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)
