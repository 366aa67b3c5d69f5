"""How close the run's time and memory estimate (`mbi_predict.validate.estimate`) comes to the run it estimates.

    python experiments/benchmarks/estimate_accuracy.py --case xgb_t80k   # xgboost + T-learner, verdict 19 draws
    python experiments/benchmarks/estimate_accuracy.py --case cf80k      # causal forest, no verdict draws
    python experiments/benchmarks/estimate_accuracy.py --case cf240k --estimate-only
    python experiments/benchmarks/estimate_accuracy.py --case cf240k_noverdict   # the whole run, no verdict draws
    python experiments/benchmarks/estimate_accuracy.py --case cf1m --estimate-only    # what a 1M run would take

A full case simulates the consortium, runs the pipeline (`run_experiment`, tracking off, 2 workers, bootstrap 200)
with the estimate, and times each stage of the run by wrapping the pipeline's stage functions, so the estimate's
parts (fold jobs, verdict calibration) are compared with the stages they estimate, and the stages it leaves out
(the run-level batch, writing and figures) are shown beside them. Peak memory is the whole process tree, sampled
every 0.2 s (psutil). ``--estimate-only``: the estimate alone, for a size whose full run is measured elsewhere
(the causal forest at 240k x 50: RESULTS section 15). One JSON row per case is appended to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GIB, TreeMemory, machine, provenance  # noqa: E402

CASES = {
    "xgb_t80k": dict(n=80_000, trials=20, null_B=19, models=[
        {"name": "xgboost", "estimator": "xgboost"},
        {"name": "t_learner_xgb", "kind": "effect", "estimator": "t_learner_xgb"}]),
    "cf80k": dict(n=80_000, trials=20, null_B=0, models=[
        {"name": "causal_forest", "kind": "effect", "estimator": "causal_forest"}]),
    "cf240k": dict(n=240_000, trials=50, null_B=19, models=[
        {"name": "causal_forest", "kind": "effect", "estimator": "causal_forest"}]),
    # the whole run at 240k without the verdict's null draws: run in full, it checks the estimate where the causal
    # forest's cost matters, and times the run itself (run-level jobs, writing; tracking off, so no final model)
    # beside section 15's fold jobs
    "cf240k_noverdict": dict(n=240_000, trials=50, null_B=0, models=[
        {"name": "causal_forest", "kind": "effect", "estimator": "causal_forest"}]),
    "cf1m": dict(n=1_000_000, trials=50, null_B=19, models=[
        {"name": "causal_forest", "kind": "effect", "estimator": "causal_forest"}]),
}


def _config(case: dict, seed: int, label: str) -> dict:
    return {"experiment": f"estimate_{label}", "outcome": "distress_fu1_6", "study_traits": ["setting"],
            "seed": seed, "models": case["models"], "validation": {"n_jobs": 2, "bootstrap": 200},
            "heterogeneity": {"null_B": case["null_B"]}, "tracking": {"enabled": False}}


def run_case(label: str, seed: int, out_dir: Path) -> dict:
    import mbi_predict.pipeline.run as pipeline
    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent

    case = CASES[label]
    ipd = check_ipd(simulate_latent("galante2023", seed=seed, n_trials=case["trials"], n=case["n"]).ipd)
    stages: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    for name in ("load_inputs", "estimate", "run_folds", "run_batch", "build_results", "_write"):
        setattr(pipeline, name, timed(name, getattr(pipeline, name)))
    pipeline.heterogeneity.calibration = timed("calibration", pipeline.heterogeneity.calibration)
    seen: dict = {}
    start = time.perf_counter()
    with TreeMemory() as memory:
        pipeline.run_experiment(_config(case, seed, label), data=ipd, out_dir=out_dir / f"run_{label}_{seed}",
                                progress=False,
                                on_estimate=lambda e: seen.update(estimate=e.to_dict(), line=e.line()))
    total = time.perf_counter() - start
    return {"case": label, "seed": seed, "wall_total": total, "stages": stages, "peak_tree_gib": memory.peak / GIB,
            **seen}


def estimate_only(label: str, seed: int) -> dict:
    from mbi_predict.config import parse_config
    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.explain.run import explain_fold
    from mbi_predict.validate import loto
    from mbi_predict.validate.estimate import estimate_run
    from mbi_predict.validate.verdict_null import null_refits
    from mbi_predict.workers import start_workers_without_ctrl_c

    case = CASES[label]
    config = parse_config({**_config(case, seed, label), "data": {"simulate": {}}})
    ipd = check_ipd(simulate_latent("galante2023", seed=seed, n_trials=case["trials"], n=case["n"]).ipd)
    data = loto.prepare_data(ipd, outcome="distress_fu1_6", study_traits=["setting"])
    plan = loto.plan_folds(data, min_per_arm=10)
    start_workers_without_ctrl_c()
    names, B = null_refits(config, data, plan)
    from mbi_predict.validate.estimate import available_memory

    # as a run calls it: with the memory limit, so a size that would not fit is not piloted on a whole fold. The
    # line's figures are the fitting still to do after the pilots, whose whole-fold jobs the run would keep
    found, _ = estimate_run(config, data, plan, workers=2, verdict_models=names, null_B=B, final_models=False,
                            explainer=explain_fold, memory_limit=available_memory())
    return {"case": label, "seed": seed, "estimate_only": True, "estimate": found.to_dict(), "line": found.line()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--estimate-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("estimate_accuracy.jsonl"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/mbi_estimate_accuracy"))
    args = parser.parse_args()
    started = provenance()
    row = estimate_only(args.case, args.seed) if args.estimate_only else run_case(args.case, args.seed, args.work)
    row["machine"] = machine()
    row["provenance"] = provenance(started)
    try:
        import subprocess

        row["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass
    print(row["line"])
    print(json.dumps(row))
    with open(args.out, "a") as handle:
        handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
