"""An O(n log n) Harrell's C equal to ``validate.benefit._concordance`` (which compares all n^2 pairs), and a check.

    .venv/bin/python experiments/benchmarks/fast_concordance.py [--quick]

Why: c-for-benefit bootstraps that concordance B = 200 times per held-out trial; at 4,800 participants per trial
the pairwise version takes ~20-40 s per fold and at 100k (1M participants in 10 folds) hours. Kendall's S
(concordant - discordant pairs, untied in both) comes from scipy's merge-sort ``kendalltau``; tie counts come
from ``np.unique``. Harrell's C skips pairs tied on ``obs`` and counts pairs tied on ``pred`` (only) as 1/2:

    U = pairs untied on obs,  Tp = pairs tied on pred but not on obs,  con + dis = U - Tp,  con - dis = S
    C = (con + Tp / 2) / U = ((U - Tp + S) / 2 + Tp / 2) / U

``patch()`` swaps it into ``mbi_predict.validate.benefit`` for this process; ``patched_run_fold`` does that inside
a joblib worker. The package itself is NOT changed by this benchmark (suggested change, see RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy import stats


def _tied_pairs(*columns: np.ndarray) -> int:
    _, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True) if len(columns) > 1 else \
        np.unique(columns[0], return_counts=True)
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def fast_concordance(pred: np.ndarray, obs: np.ndarray, chunk: int = 512) -> float:
    pred, obs = np.asarray(pred, dtype=float), np.asarray(obs, dtype=float)
    n = len(pred)
    total = n * (n - 1) // 2
    tie_obs, tie_pred, tie_both = _tied_pairs(obs), _tied_pairs(pred), _tied_pairs(pred, obs)
    untied_obs = total - tie_obs
    if untied_obs == 0:
        return np.nan
    tied_pred_only = tie_pred - tie_both
    if tie_pred == total:  # constant prediction: every usable pair is a prediction tie
        s = 0.0
    else:
        tau_b = stats.kendalltau(pred, obs, variant="b").statistic
        s = 0.0 if not np.isfinite(tau_b) else tau_b * np.sqrt(float(total - tie_pred) * float(total - tie_obs))
    concordant = (untied_obs - tied_pred_only + s) / 2
    return float((concordant + 0.5 * tied_pred_only) / untied_obs)


def patch() -> None:
    from mbi_predict.validate import benefit

    benefit._concordance = fast_concordance


def patched_run_fold(job, data):
    patch()
    from mbi_predict.validate.loto import run_fold

    return run_fold(job, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.parse_args()
    from mbi_predict.validate.benefit import _concordance, c_for_benefit

    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(200):
        n = int(rng.integers(2, 400))
        pred = rng.normal(size=n) if trial % 3 else rng.integers(0, 4, n).astype(float)
        obs = rng.normal(size=n) if trial % 2 else rng.integers(-1, 2, n).astype(float)
        a, b = _concordance(pred, obs), fast_concordance(pred, obs)
        if not (np.isnan(a) and np.isnan(b)):
            worst = max(worst, abs(a - b))
    print(f"max |pairwise - fast| over 200 random cases (continuous, tied, 0/1-like): {worst:.2e}")
    sizes = (1_000, 4_800) if "--quick" in sys.argv else (1_000, 4_800, 20_000)
    from mbi_predict.validate import benefit
    for n in sizes:
        y, t, cate = rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)
        start = time.perf_counter()
        slow = c_for_benefit(y, t, cate, B=200, seed=1)
        slow_s = time.perf_counter() - start
        original = benefit._concordance
        benefit._concordance = fast_concordance
        try:
            start = time.perf_counter()
            fast = c_for_benefit(y, t, cate, B=200, seed=1)
            fast_s = time.perf_counter() - start
        finally:
            benefit._concordance = original
        print(f"c_for_benefit n={n} B=200: pairwise {slow_s:.2f} s, fast {fast_s:.2f} s "
              f"({slow_s / fast_s:.0f}x); c {slow['c']:.6f} vs {fast['c']:.6f}, se {slow['se']:.6f} vs {fast['se']:.6f}")


if __name__ == "__main__":
    main()
