"""How often the heterogeneity verdict says "evidence" when there is none (null) and when there is (strong).

    .venv/bin/python experiments/benchmarks/heterogeneity_verdict_rates.py [--quick] [--seeds N] [--models ...]

For each scenario ('null': every participant's effect equals the trial's; 'strong': clear modifiers) and each
seed, ``run_experiment`` runs a small config on ``simulate_latent(scenario, seed, 13 trials, 2371)``: the effect
model(s) leave-one-trial-out, no tuning, tracking off, no SHAP, ``validation.bootstrap`` 200. The verdict is read
from ``summary["models"][name]["heterogeneity"]["verdict"]`` when the runner writes it, else computed here with
``validate.heterogeneity.heterogeneity_verdict`` (default rule) on the pooled metrics of the summary.

Printed: the share of seeds with verdict "evidence" (false-positive rate under 'null', true-positive rate under
'strong') with a Wilson 95% interval, and the wall time. Targets: null -> no_evidence in >= 90% of seeds,
strong -> evidence in >= 90%. ``--quick``: 5 seeds per scenario (the default is 20).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

MODELS = ("t_learner_enet", "interaction_linear")


def config_for(scenario: str, seed: int, models: list[str], n_jobs: int) -> dict:
    return {"experiment": f"verdict_{scenario}_{seed}",
            "data": {"simulate": {"scenario": scenario, "seed": seed, "n_trials": 13, "n": 2371}},
            "outcome": "distress_fu1_6", "covariates": "all",
            "models": [{"name": m, "kind": "effect", "estimator": m} for m in models],
            "validation": {"n_jobs": n_jobs, "bootstrap": 200, "min_trial_size": 20},
            "tracking": {"enabled": False}, "seed": seed}


def verdict_of(block: dict) -> tuple[str, str]:
    """(verdict, where it came from)."""
    if block.get("heterogeneity"):
        return block["heterogeneity"]["verdict"], "runner"
    from mbi_predict.validate.heterogeneity import heterogeneity_verdict

    return heterogeneity_verdict(block["pooled"])["verdict"], "benchmark"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 seeds per scenario")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from mbi_predict.runner import run_experiment

    n_seeds = args.seeds or (5 if args.quick else 20)
    print(f"machine: {machine()}")
    counts: dict[tuple[str, str], list[str]] = {}
    sources = set()
    start_all = time.perf_counter()
    for scenario in ("null", "strong"):
        for seed in range(1, n_seeds + 1):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as out:
                result = run_experiment(config_for(scenario, seed, args.models, args.n_jobs), out_dir=out,
                                        progress=False)
            line = []
            for name in args.models:
                verdict, source = verdict_of(result.summary["models"][name])
                sources.add(source)
                counts.setdefault((scenario, name), []).append(verdict)
                line.append(f"{name}={verdict}")
            print(f"{scenario} seed {seed}: {', '.join(line)} ({time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    for (scenario, name), verdicts in counts.items():
        k, n = sum(v == "evidence" for v in verdicts), len(verdicts)
        low, high = wilson(k, n)
        wanted = "no_evidence" if scenario == "null" else "evidence"
        share_right = sum(v == wanted for v in verdicts) / n
        rows.append({"scenario": scenario, "model": name, "seeds": n, "evidence_share": k / n,
                     "wilson95": f"{low:.2f}-{high:.2f}", "correct_share": share_right,
                     "target": f"{wanted} >= 0.90", "met": "MET" if share_right >= 0.9 else "MISSED"})
    print(table(rows))
    print(f"verdict source: {', '.join(sorted(sources))}; total wall {time.perf_counter() - start_all:.0f} s")
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
