"""How often the SHAP permutation null declares a covariate without heterogeneity (null) and finds the true
modifiers with it (strong): the family-wise test of ``mbi_predict.explain.null`` (issue 11).

    .venv/bin/python experiments/benchmarks/shap_null_rates.py [--seeds 50] [--first-seed 0]
        [--learners t_learner_enet interaction_linear] [--scenarios null strong] [--trials 12] [--n 2400]
        [--B 19] [--n-jobs 2] [--out experiments/benchmarks/shap_null_rates.jsonl] [--report]

For each scenario of the project's simulator ('null': every participant's effect equals the trial's; 'strong': the
effect changes with ``baseline_distress`` and ``baseline_mindfulness``), each learner and each seed, the package's
own path runs: an experiment config with SHAP on and ``explain.null_B = B`` is parsed, the data loaded and prepared
(``runner.load_prepared``), and ``explain.run.null_tasks`` builds the B + 1 refits (the encoded X through
``make_preprocessor`` / ``encoded_frame``, the within-trial permutations with the constant-effect outcome), which are
collected by ``null_reference_from_outputs``: exactly what a run does, minus the leave-one-trial-out folds.

Recorded per (scenario, learner, seed): the features declared (family-wise adjusted p <= 0.05). Printed: under
'null' the share of seeds with ANY feature declared (target <= 5%), under 'strong' the share with BOTH true
modifiers declared (target >= 95%), with Wilson 95% intervals. One JSON line per cell is appended to ``--out`` (an
interrupted benchmark resumes where it stopped); ``--report`` prints the table from that file only. Cells run in
parallel (joblib, ``--n-jobs``, at most 2 on a shared machine), each cell's refits serially.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, wilson  # noqa: E402

HERE = Path(__file__).resolve().parent
TRUE_MODIFIERS = ("baseline_distress", "baseline_mindfulness")


def config_for(scenario: str, seed: int, learner: str, *, trials: int, n: int, B: int) -> dict:
    return {"experiment": f"shap_null_{scenario}_{seed}",
            "data": {"simulate": {"scenario": scenario, "seed": seed, "n_trials": trials, "n": n}},
            "outcome": "distress_fu1_6", "covariates": "all",
            "models": [{"name": learner, "kind": "effect", "estimator": learner}],
            "explain": {"enabled": True, "null_B": B},
            "tracking": {"enabled": False}, "seed": seed}


def one_cell(scenario: str, seed: int, learner: str, *, trials: int, n: int, B: int) -> dict:
    from mbi_predict.config import parse_config
    from mbi_predict.explain.run import _run_null_task, null_reference_from_outputs, null_tasks
    from mbi_predict.runner import load_prepared

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = parse_config(config_for(scenario, seed, learner, trials=trials, n=n, B=B))
        _, data, _, _ = load_prepared(config)
        outputs = [_run_null_task(task) for task in null_tasks(config, data)]
        references, _ = null_reference_from_outputs(outputs)
    ref = references[learner]
    features = list(ref.observed)
    matrix = [[ref.observed[f] for f in features]] + ref.null[features].to_numpy().tolist()
    return {"scenario": scenario, "seed": seed, "learner": learner, "trials": trials, "n": n, "B": B,
            "seconds": time.perf_counter() - start, "status": ref.test_status,
            "declared": sorted(f for f, b in ref.beats_null.items() if b),
            "adjusted_p": ref.pvalue_familywise, "pvalue": ref.pvalue, "features": features, "importance": matrix}


def rescore(row: dict) -> dict:
    """The row's decisions recomputed from its stored (B + 1) x features importance matrix."""
    from mbi_predict.explain import null_reference

    observed, *null = [dict(zip(row["features"], values)) for values in row["importance"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = null_reference(observed, null)
    return {**row, "declared": sorted(f for f, b in ref.beats_null.items() if b),
            "adjusted_p": ref.pvalue_familywise, "pvalue": ref.pvalue}


def _ratio_statistic(matrix):
    """The earlier statistic (before issue 11): each fit's importance / the feature's mean over the other fits."""
    import numpy as np

    n = matrix.shape[0]
    others = (matrix.sum(axis=0, keepdims=True) - matrix) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(others > 0, matrix / np.where(others > 0, others, 1.0), np.inf)
    return np.where(matrix > 0, ratio, 0.0)


def compare_statistics(rows: list[dict]) -> str:
    """The same stored fits decided by other statistics in the same step-down max-T at alpha 0.05."""
    import numpy as np

    from mbi_predict.explain.null import S0_QUANTILE, step_down_maxt, studentised

    variants = {f"studentised, s0 = max SD (package, q{S0_QUANTILE:g})": lambda m: studentised(m, S0_QUANTILE),
                "studentised, s0 = median SD (SAM)": lambda m: studentised(m, 50.0),
                "ratio to the other fits' mean (before issue 11)": _ratio_statistic}
    lines = ["| learner | statistic | null: any declared | strong: both | strong: distress | strong: mindfulness |",
             "|---|---|---|---|---|---|"]
    for learner in sorted({r["learner"] for r in rows}):
        for name, statistic in variants.items():
            counts = {"null": [0, 0], "both": [0, 0], "baseline_distress": [0, 0], "baseline_mindfulness": [0, 0]}
            for r in (r for r in rows if r["learner"] == learner):
                z = statistic(np.array(r["importance"], dtype=float))
                adjusted = step_down_maxt(z[0], z[1:])
                declared = {f for f, p in zip(r["features"], adjusted) if p <= 0.05 * (1 + 1e-12)}
                if r["scenario"] == "null":
                    counts["null"][0] += bool(declared)
                    counts["null"][1] += 1
                else:
                    counts["both"][0] += set(TRUE_MODIFIERS) <= declared
                    counts["both"][1] += 1
                    for modifier in TRUE_MODIFIERS:
                        counts[modifier][0] += modifier in declared
                        counts[modifier][1] += 1
            lines.append(f"| {learner} | {name} | " + " | ".join(f"{k}/{n}" for k, n in counts.values()) + " |")
    return "\n".join(lines)


def report(rows: list[dict]) -> str:
    lines = ["| scenario | learner | seeds | criterion | hits | rate | Wilson 95% | target | median s/cell |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["scenario"], r["learner"]) for r in rows}, key=lambda k: (k[0] != "null", k[1]))
    for scenario, learner in keys:
        cell = [r for r in rows if r["scenario"] == scenario and r["learner"] == learner]
        if scenario == "null":
            hits, criterion, target = sum(bool(r["declared"]) for r in cell), "any feature declared", "<= 5%"
        else:
            hits = sum(set(TRUE_MODIFIERS) <= set(r["declared"]) for r in cell)
            criterion, target = "both true modifiers declared", ">= 95%"
        low, high = wilson(hits, len(cell))
        seconds = sorted(r["seconds"] for r in cell)[len(cell) // 2]
        lines.append(f"| {scenario} | {learner} | {len(cell)} | {criterion} | {hits} | {hits / len(cell):.3f} | "
                     f"{low:.3f}-{high:.3f} | {target} | {seconds:.1f} |")
        if scenario == "strong":
            for modifier in TRUE_MODIFIERS:
                k = sum(modifier in r["declared"] for r in cell)
                low, high = wilson(k, len(cell))
                lines.append(f"| {scenario} | {learner} | {len(cell)} | {modifier} declared | {k} | "
                             f"{k / len(cell):.3f} | {low:.3f}-{high:.3f} | | |")
    strong = [r for r in rows if r["scenario"] == "strong"]
    wrong = sum(bool(set(r["declared"]) - set(TRUE_MODIFIERS)) for r in strong)
    if strong:
        lines += ["", f"strong: {wrong}/{len(strong)} cells also declared a covariate that is not a true modifier "
                      "(family-wise error under a partial null)."]
    null_declared = sorted({f for r in rows if r["scenario"] == "null" for f in r["declared"]})
    if null_declared:
        lines += [f"null: features declared at least once: {', '.join(null_declared)}."]
    if rows:
        r0 = rows[0]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip()
        lines += ["", f"{len(rows)} cells, {sum(r['seconds'] for r in rows) / 60:.1f} CPU-min in all; B = {r0['B']}, "
                      f"{r0['trials']} trials, n = {r0['n']}; alpha 0.05 family-wise; {time.strftime('%Y-%m-%d %H:%M')}"
                      f" UTC; git {commit} (+ uncommitted edits); load average "
                      + " ".join(f"{x:.1f}" for x in os.getloadavg())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--learners", nargs="+", default=["t_learner_enet", "interaction_linear"])
    parser.add_argument("--scenarios", nargs="+", default=["null", "strong"])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--n", type=int, default=2400)
    parser.add_argument("--B", type=int, default=19)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "shap_null_rates.jsonl")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--rescore", action="store_true",
                        help="with --report: decide again from the stored importance matrices with the package's "
                             "current null_reference (the fits do not depend on the test statistic)")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    if args.rescore:
        rows = [rescore(r) for r in rows]
    if not args.report:
        done = {(r["scenario"], r["learner"], r["seed"]) for r in rows
                if (r["B"], r["trials"], r["n"]) == (args.B, args.trials, args.n)}
        # seed-major order: an interrupted run has every cell at about the same number of seeds
        todo = [(s, seed, learner) for seed in range(args.first_seed, args.first_seed + args.seeds)
                for s in args.scenarios for learner in args.learners if (s, learner, seed) not in done]
        from joblib import Parallel, delayed

        jobs = Parallel(n_jobs=min(2, args.n_jobs), return_as="generator")(
            delayed(one_cell)(s, seed, learner, trials=args.trials, n=args.n, B=args.B) for s, seed, learner in todo)
        made = provenance()   # commit, time and load of this invocation, in every row it writes
        with args.out.open("a") as sink:
            for row in jobs:
                row["provenance"] = made
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                rows.append(row)
    rows = [r for r in rows if (r["B"], r["trials"], r["n"]) == (args.B, args.trials, args.n)
            and r["learner"] in args.learners and r["scenario"] in args.scenarios]
    print(f"# SHAP permutation-null rates (explain.null, studentised step-down max-T)\n\n{report(rows)}")
    if rows:
        print(f"\n## The same fits under other statistics (step-down max-T, alpha 0.05)\n\n{compare_statistics(rows)}")


if __name__ == "__main__":
    sys.exit(main())
