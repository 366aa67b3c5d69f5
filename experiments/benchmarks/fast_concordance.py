"""The O(n log n) Harrell's C of ``validate.benefit._concordance`` against the all-pairs count it replaced.

    .venv/bin/python experiments/benchmarks/fast_concordance.py [--quick]

Why: c-for-benefit bootstraps that concordance B = 200 times per held-out trial; at 4,800 participants per trial
the all-pairs version took ~20-40 s per fold and at 100k (1M participants in 10 folds) hours. The package now uses
the O(n log n) version (Kendall's S from scipy's merge-sort ``kendalltau`` plus tie counts); the all-pairs one is
kept as ``_concordance_pairwise``, the reference it is tested against. This script prints both on random cases
and times c-for-benefit with each.

``patch()`` and ``patched_run_fold`` remain for ``scaling.py --fast-concordance``: they are no-ops now that the
package itself is fast.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mbi_predict.validate.benefit import _concordance as fast_concordance
from mbi_predict.validate.benefit import _concordance_pairwise


def patch() -> None:
    """Kept for scaling.py: the package's concordance is already the O(n log n) one."""


def patched_run_fold(job, data):
    from mbi_predict.validate.loto import run_fold

    return run_fold(job, data)


def main() -> None:
    from mbi_predict.validate import benefit
    from mbi_predict.validate.benefit import c_for_benefit

    rng = np.random.default_rng(0)
    worst = 0.0
    for trial in range(200):
        n = int(rng.integers(2, 400))
        pred = rng.normal(size=n) if trial % 3 else rng.integers(0, 4, n).astype(float)
        obs = rng.normal(size=n) if trial % 2 else rng.integers(-1, 2, n).astype(float)
        a, b = _concordance_pairwise(pred, obs), fast_concordance(pred, obs)
        if not (np.isnan(a) and np.isnan(b)):
            worst = max(worst, abs(a - b))
    print(f"max |pairwise - fast| over 200 random cases (continuous, tied, 0/1-like): {worst:.2e}")
    sizes = (1_000, 4_800) if "--quick" in sys.argv else (1_000, 4_800, 20_000)
    for n in sizes:
        y, t, cate = rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=n)
        original = benefit._concordance
        benefit._concordance = _concordance_pairwise
        try:
            start = time.perf_counter()
            slow = c_for_benefit(y, t, cate, B=200, seed=1)
            slow_s = time.perf_counter() - start
        finally:
            benefit._concordance = original
        start = time.perf_counter()
        fast = c_for_benefit(y, t, cate, B=200, seed=1)
        fast_s = time.perf_counter() - start
        print(f"c_for_benefit n={n} B=200: pairwise {slow_s:.2f} s, fast {fast_s:.2f} s "
              f"({slow_s / fast_s:.0f}x); c {slow['c']:.6f} vs {fast['c']:.6f}, se {slow['se']:.6f} vs {fast['se']:.6f}")


if __name__ == "__main__":
    main()
