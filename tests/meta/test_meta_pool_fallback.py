"""REML/ML tau² when Fisher scoring fails: the bracketing (Brent) fallback solves the same score equation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mbi_predict.meta.tau2 as tau2_module
from mbi_predict.meta import pool
from mbi_predict.meta.pool import estimate_tau2_solver, ml_score, reml_score

DATA = Path(__file__).parent / "data" / "dat_bcg.csv"


@pytest.fixture(scope="module")
def bcg() -> tuple[np.ndarray, np.ndarray]:
    """metafor's dat.bcg log risk ratios and variances (the csv's escalc columns, checked in test_meta_pool)."""
    d = pd.read_csv(DATA, comment="#")
    return d.yi.to_numpy(dtype=float), d.vi.to_numpy(dtype=float)


def r4(x: float) -> float:
    return round(x, 4)

# Found by a seeded search over extreme variance ratios (numpy default_rng(0), draw 161): the REML root is at
# tau² ~ 6.4e5, where the spacing of doubles (1.2e-10) exceeds Fisher scoring's absolute tolerance of 1e-10, so the
# iteration oscillates between neighbouring floats and never meets its stopping rule.
HARD_Y = np.array([-1460.9660017242716, 136.53149665922595, -764.1606840820119])
HARD_V = np.array([1.2877304451917665e-08, 0.0023981221640596373, 1.7244733394468757e-05])


def test_fisher_failure_falls_back_to_brent_and_solves_the_score_equation():
    X = np.ones((3, 1))
    with pytest.raises(tau2_module._FisherFailed, match="no convergence"):
        tau2_module._tau2_fisher(HARD_Y, HARD_V, X, "REML")
    res = pool(HARD_Y, HARD_V, method="REML", labels=["A", "B", "C"])
    assert res.tau2_solver == "brentq_fallback" and "Brent" in res.note and "\n" not in res.note
    assert res.tau2 > 0
    # the score equation y'PPy - tr(P) = 0, relative to its terms (tr(P) ~ 3e-6 here)
    _, P = tau2_module._projection(HARD_V + res.tau2, X)
    assert abs(reml_score(res.tau2, HARD_Y, HARD_V, X)) < 1e-9 * np.trace(P)
    # and it is the maximum: the score changes sign from + to - across the root
    assert reml_score(res.tau2 * (1 - 1e-6), HARD_Y, HARD_V, X) > 0 > reml_score(res.tau2 * (1 + 1e-6), HARD_Y,
                                                                                 HARD_V, X)


@pytest.mark.parametrize("method, metafor", [("REML", 0.3132), ("ML", 0.2800)])
def test_forced_fallback_matches_fisher_and_metafor_on_bcg(bcg, monkeypatch, method, metafor):
    yi, vi = bcg
    fisher = pool(yi, vi, method=method)
    assert fisher.tau2_solver == "fisher_scoring" and fisher.note == ""
    monkeypatch.setattr(tau2_module, "_MAX_ITER", 1)  # Fisher scoring cannot converge in one step
    forced = pool(yi, vi, method=method)
    assert forced.tau2_solver == "brentq_fallback"
    assert forced.tau2 == pytest.approx(fisher.tau2, abs=1e-9)
    assert r4(forced.tau2) == metafor
    assert forced.estimate == pytest.approx(fisher.estimate, abs=1e-9)
    score = reml_score if method == "REML" else ml_score
    assert abs(score(forced.tau2, yi, vi, np.ones((yi.size, 1)))) < 1e-9


def test_forced_fallback_matches_fisher_on_random_cases(monkeypatch):
    rng = np.random.default_rng(14)
    cases = []
    for _ in range(30):
        k = int(rng.integers(3, 15))
        v = rng.uniform(0.01, 0.3, k)
        y = rng.normal(0.3, rng.uniform(0, 0.6), k) + rng.normal(0, np.sqrt(v))
        cases.append((y, v))
    X_of = {}
    fisher = {}
    for i, (y, v) in enumerate(cases):
        X_of[i] = np.ones((y.size, 1))
        for method in ("REML", "ML"):
            fisher[i, method] = estimate_tau2_solver(y, v, X_of[i], method)
    monkeypatch.setattr(tau2_module, "_MAX_ITER", 1)
    boundary = 0
    for i, (y, v) in enumerate(cases):
        for method in ("REML", "ML"):
            tau2, solver, _ = estimate_tau2_solver(y, v, X_of[i], method)
            assert fisher[i, method][1] == "fisher_scoring"
            if solver == "fisher_scoring":  # converged in one step (e.g. DL start on the boundary)
                continue
            assert solver == "brentq_fallback"
            assert tau2 == pytest.approx(fisher[i, method][0], abs=1e-8)
            boundary += tau2 == 0.0
    assert boundary >= 1  # some cases have the maximum on the boundary: tau2 = 0 from the sign of the score


def test_fallback_gives_zero_on_the_boundary(monkeypatch):
    y = np.array([0.30, 0.31, 0.29, 0.30])
    v = np.array([0.04, 0.05, 0.03, 0.04])
    monkeypatch.setattr(tau2_module, "_MAX_ITER", 0)
    res = pool(y, v)
    assert res.tau2_solver == "brentq_fallback" and res.tau2 == 0.0
    assert reml_score(0.0, y, v, np.ones((4, 1))) <= 0


def test_solver_is_recorded_for_every_method(bcg):
    yi, vi = bcg
    assert {m: pool(yi, vi, method=m).tau2_solver for m in ("REML", "ML", "DL", "PM", "FE")} == {
        "REML": "fisher_scoring", "ML": "fisher_scoring", "DL": "closed_form", "PM": "brentq", "FE": "none"}
    assert pool([0.1], [0.1]).tau2_solver == "none"
    assert pool(yi, vi).to_dict()["tau2_solver"] == "fisher_scoring"
