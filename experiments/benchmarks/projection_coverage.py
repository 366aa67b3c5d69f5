"""Coverage of the best linear projection's 95% intervals on the simulator, over many seeds (issue 11).

    .venv/bin/python experiments/benchmarks/projection_coverage.py [--seeds 200] [--out FILE]

The same computation as the slow test ``tests/validate/test_projection.py::test_coverage_on_the_simulator`` (its
``coverage_counts`` is imported from it, so the two cannot drift apart), on more seeds: for the 'strong'
scenario, does the interval of each projected coefficient (baseline distress, baseline mindfulness) cover the true
projection (the OLS projection of the simulator's true individual effects on the same rows); for 'null', does it
cover 0. 12 trials, 2,400 participants, MBI vs passive control. Prints the coverage with Wilson 95% intervals and
appends one raw row, with its provenance, to ``--out`` (default ``projection_coverage.jsonl`` here), which the
README's table is built from (``readme_table.py``). Target: >= 90% in every cell.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "validate"))
from _common import append_row, provenance, wilson  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "projection_coverage.jsonl")
    args = parser.parse_args()
    from test_projection import coverage_counts

    started, clock = provenance(), time.perf_counter()
    covered = {f"{scenario} {name}": k for (scenario, name), k in coverage_counts(args.seeds).items()}
    for key, k in covered.items():
        low, high = wilson(k, args.seeds)
        print(f"{key}: {k}/{args.seeds} = {k / args.seeds:.3f} (Wilson 95% {low:.3f}-{high:.3f})")
    append_row(args.out, {"benchmark": "projection_coverage", "seeds": args.seeds, "covered": covered,
                          "seconds": time.perf_counter() - clock, "provenance": provenance(started)})


if __name__ == "__main__":
    main()
