"""How often the heterogeneity verdict says "evidence" without heterogeneity (null) and with it (modest, strong).

    .venv/bin/python experiments/benchmarks/heterogeneity_verdict_rates.py [--null-seeds 40] [--seeds 20]
        [--models t_learner_xgb x_learner] [--trials 10] [--n 2000] [--B 19] [--out results.jsonl] [--report]

For each scenario of the project's simulator ('null': every participant's effect equals the trial's; 'modest':
half the strong modifiers; 'strong': clear modifiers) and each seed, ``run_experiment`` runs the effect models
leave-one-trial-out (no tuning, tracking off, no SHAP, bootstrap 50) with the default heterogeneity rule: the
permutation-calibrated verdict (``validate.verdict_null``, ``null_B`` constant-effect draws) and, with two or more
models, the run-level verdict by Holm over the models. Every run appends one JSON line to ``--out`` (so an
interrupted benchmark resumes where it stopped); ``--report`` prints the tables from that file only.

Printed: per model and for the run, the share of seeds with "evidence" and its Wilson 95% interval; under 'null' the
Kolmogorov-Smirnov test of the calibrated one-sided p-values (RATE and calibration slope) against the uniform
distribution, beside the naive p-values' share below 0.05 (the held-out trials pooled as independent: the test
this calibration replaces). Targets (issue 14): null run-level <= 5%, every calibrated p uniform; modest found >= 80%;
strong >= 95%. The same runs measure harm detection (issue 17): flagged in <= 5% of null and
'no_effect_subgroup' seeds (the boundary: a subgroup with exactly no effect), >= 80% of 'harm' and 'harm_subgroup'
seeds by the flexible learners, and whether each model's treatment rule beats offering to all.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, provenance, wilson  # noqa: E402

MODELS = ("interaction_linear", "t_learner_xgb")
HERE = Path(__file__).resolve().parent


def config_for(scenario: str, seed: int, models: list[str], *, trials: int, n: int, B: int) -> dict:
    return {"experiment": f"verdict_{scenario}_{seed}",
            "data": {"simulate": {"scenario": scenario, "seed": seed, "n_trials": trials, "n": n}},
            "outcome": "distress_fu1_6", "covariates": "all", "study_traits": ["setting", "delivery"],
            "models": [{"name": m, "kind": "effect", "estimator": m} for m in models],
            "validation": {"n_jobs": 2, "bootstrap": 50, "min_trial_size": 20, "hksj": True},
            "heterogeneity": {"null_B": B, "run_rule": "holm" if len(models) > 1 else "primary"},
            "tracking": {"enabled": False}, "seed": seed}


def one_run(scenario: str, seed: int, models: list[str], *, trials: int, n: int, B: int) -> dict:
    from mbi_predict.runner import run_experiment

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(config_for(scenario, seed, models, trials=trials, n=n, B=B), out_dir=tmp,
                                progress=False)
    summary = result.summary
    row = {"scenario": scenario, "seed": seed, "models": models, "trials": trials, "n": n, "B": B,
           "seconds": time.perf_counter() - start, "run_verdict": summary["heterogeneity"]["verdict"],
           "per_model": {}}
    for name in models:
        h = summary["models"][name]["heterogeneity"]
        tests = (h.get("calibration") or {}).get("tests") or {}
        row["per_model"][name] = {
            "verdict": h["verdict"], "p_value": h.get("p_value"), "beats_constant": h.get("beats_constant"),
            "calibrated_p": {m: t.get("p_value") for m, t in tests.items()},
            "monte_carlo_p": {m: t.get("p_monte_carlo") for m, t in tests.items()},
            "naive_p": {m: t.get("naive_p") for m, t in tests.items()},
            "pehe": (summary["models"][name]["pooled"].get("pehe") or {}).get("estimate"),
        }
        block = summary["models"][name]
        if "harm" in block and "gates" in block:
            row["per_model"][name].update(
                harm_flagged=block["harm"]["flagged"], harm_p=block["harm"]["p_value"],
                harm_tests={k: {"p": t["p_value"], "estimate": t["effect"].get("estimate")}
                            for k, t in (block["harm"].get("tests") or {}).items()},
                harm_share=block["harm"]["group_share"].get("estimate"),
                gates_p=block["gates"]["top_minus_bottom"].get("p_value"),
                policy_rule=block["policy"]["rule"], policy_vs_all=block["policy"]["value_vs_all"])
    row["harm_flagged"] = (summary.get("harm_flagged") or {}).get("flagged")
    return row


def evidence_count(runs: list[dict], who: str) -> int:
    """Runs whose verdict was "evidence": a model's (``who`` a model name) or the run-level one (any other name)."""
    if runs and who in runs[0]["models"]:
        return sum(r["per_model"][who]["verdict"] == "evidence" for r in runs)
    return sum(r["run_verdict"] == "evidence" for r in runs)


def harm_count(runs: list[dict], who: str) -> int:
    """Runs that flagged harm: a model's flag (``who`` a model name) or the run-level one (any other name)."""
    if runs and who in runs[0]["models"]:
        return sum(bool(r["per_model"][who].get("harm_flagged")) for r in runs)
    return sum(bool(r["harm_flagged"]) for r in runs)


def rule_beats_all(runs: list[dict], model: str) -> int:
    """Runs where the model's treatment rule beats offering to all (the policy value's CI above 0)."""
    return sum(((r["per_model"][model].get("policy_vs_all") or {}).get("ci_low") or -1) > 0 for r in runs)


def calibrated_pvalues(runs: list[dict], model: str, metric: str) -> list[float]:
    """The finite calibrated one-sided p-values of one model's statistic over the runs."""
    values = [r["per_model"][model]["calibrated_p"].get(metric) for r in runs]
    return [p for p in values if p is not None and math.isfinite(p)]


def report(rows: list[dict]) -> str:
    from scipy import stats

    lines = []
    scenarios = [s for s in ("null", "modest", "strong", "harm", "no_effect_subgroup", "harm_subgroup")
                 if any(r["scenario"] == s for r in rows)]
    models = rows[0]["models"] if rows else []
    lines.append("| scenario | who | seeds | \"evidence\" | share | Wilson 95% |")
    lines.append("|---|---|---|---|---|---|")
    for scenario in scenarios:
        runs = [r for r in rows if r["scenario"] == scenario]
        for who in [*models, "run (Holm)" if len(models) > 1 else "run"]:
            hits = evidence_count(runs, who)
            low, high = wilson(hits, len(runs))
            lines.append(f"| {scenario} | {who} | {len(runs)} | {hits} | {hits / len(runs):.3f} | "
                         f"{low:.3f}-{high:.3f} |")
    lines += ["", "Harm (held-out effect below 0, one-sided, in the predicted-harm group and in the group predicted to "
              "benefit least, Simes combination of the two) and the treatment rule:", "",
              "| scenario | who | seeds | harm flagged | share | Wilson 95% | rule beats offer-to-all (CI > 0) |",
              "|---|---|---|---|---|---|---|"]
    for scenario in scenarios:
        runs = [r for r in rows if r["scenario"] == scenario and "harm_flagged" in r]
        if not runs:
            continue
        for who in [*models, "run (Holm)"]:
            hits = harm_count(runs, who)
            better = f"{rule_beats_all(runs, who)}/{len(runs)}" if who in models else ""
            low, high = wilson(hits, len(runs))
            lines.append(f"| {scenario} | {who} | {len(runs)} | {hits} | {hits / len(runs):.3f} | "
                         f"{low:.3f}-{high:.3f} | {better} |")
    tested = [r for r in rows if any("harm_tests" in v for v in r["per_model"].values())]
    if tested:
        lines += ["", "Harm, by candidate group (one-sided p < alpha / 2, i.e. the group alone would flag harm under "
                      "Bonferroni), and the share predicted harmed (median over seeds):", "",
                  "| scenario | model | seeds | predicted-harm group | lowest-benefit group | either (Simes) | "
                  "median share predicted harmed |", "|---|---|---|---|---|---|---|"]
        for scenario in scenarios:
            runs = [r for r in tested if r["scenario"] == scenario]
            for model in models if runs else []:
                cells = [r["per_model"][model] for r in runs]
                counts = [sum(((c.get("harm_tests") or {}).get(k) or {}).get("p") is not None and
                              c["harm_tests"][k]["p"] < 0.025 for c in cells)
                          for k in ("predicted_harm_group", "lowest_benefit_group")]
                either = sum(bool(c.get("harm_flagged")) for c in cells)
                shares = sorted(c["harm_share"] for c in cells if c.get("harm_share") is not None)
                median = f"{shares[len(shares) // 2]:.2f}" if shares else "-"
                lines.append(f"| {scenario} | {model} | {len(runs)} | {counts[0]} | {counts[1]} | {either} | "
                             f"{median} |")
    null_runs = [r for r in rows if r["scenario"] == "null"]
    if null_runs:
        lines += ["", "Null scenario, one-sided p-values (RATE AUTOC, benefit-calibration slope):", "",
                  "| model | metric | n | calibrated: KS p vs uniform | calibrated share < 0.05 | naive share < 0.05 "
                  "(Wilson 95%) |", "|---|---|---|---|---|---|"]
        for model in models:
            for metric in ("rate_autoc", "benefit_calibration_slope"):
                cal = calibrated_pvalues(null_runs, model, metric)
                naive = [r["per_model"][model]["naive_p"].get(metric) for r in null_runs]
                naive = [p for p in naive if p is not None and math.isfinite(p)]
                ks = stats.kstest(cal, "uniform").pvalue if len(cal) >= 5 else math.nan
                k_cal, k_naive = sum(p < 0.05 for p in cal), sum(p < 0.05 for p in naive)
                lo, hi = wilson(k_naive, len(naive))
                lines.append(f"| {model} | {metric} | {len(cal)} | {ks:.3f} | {k_cal}/{len(cal)} | "
                             f"{k_naive}/{len(naive)} ({lo:.3f}-{hi:.3f}) |")
    seconds = [r["seconds"] for r in rows]
    if seconds:
        lines += ["", f"{len(rows)} runs, {sum(seconds) / 60:.1f} min in all, median {sorted(seconds)[len(seconds) // 2]:.0f} s "
                      f"per run (B = {rows[0]['B']}, {rows[0]['trials']} trials, {rows[0]['n']} participants)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null-seeds", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=20, help="seeds of the modest and strong scenarios")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--B", type=int, default=19)
    parser.add_argument("--scenarios", nargs="+", default=["null", "strong", "modest", "harm_subgroup"])
    parser.add_argument("--out", type=Path, default=HERE / "heterogeneity_verdict_rates.jsonl")
    parser.add_argument("--report", action="store_true", help="only print the tables from --out")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out.exists() else []
    if not args.report:
        done = {(r["scenario"], r["seed"]) for r in rows}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip()
        print(f"# {machine()}, commit {commit}", flush=True)
        made = provenance()   # commit, time and load of this invocation, in every row it writes
        for scenario in args.scenarios:
            count = args.null_seeds if scenario == "null" else args.seeds
            for seed in range(1, count + 1):
                if (scenario, seed) in done:
                    continue
                row = one_run(scenario, seed, args.models, trials=args.trials, n=args.n, B=args.B)
                row["provenance"] = made
                rows.append(row)
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(f"{scenario} seed {seed}: run {row['run_verdict']}, "
                      + ", ".join(f"{m} {v['verdict']} p={v['p_value']:.3g}" for m, v in row["per_model"].items())
                      + f" ({row['seconds']:.0f} s)", flush=True)
    print(report(rows))


if __name__ == "__main__":
    main()
