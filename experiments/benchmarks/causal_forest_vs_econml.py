"""The toolkit's CausalForest and TLearner against econml used by hand, side by side, leave-one-trial-out (issue 18).

    .venv/bin/python experiments/benchmarks/causal_forest_vs_econml.py [--quick] [--seeds 11,12,13,14,15,16,17,18]
        [--t-learners] [--out FILE]

Data: ``simulate_latent(scenario, seed, n_trials=13, n=2371)`` for 'strong' (two true effect modifiers) and 'null'
(one effect for everyone), outcome distress_fu1_6, MBI vs passive control (the runner's comparison), every trial
that can be held out, for each seed. Per fold the covariates go through the toolkit's fold-fitted transformer
(``models.preprocess.make_preprocessor``, fitted on the training rows), then the estimators are fitted on the
training trials' observed outcomes and predict the CATE of every held-out participant:

* ``ours_causal_forest``: ``make_effect_model('causal_forest')`` with its defaults (known propensity, outcome
  nuisance chosen between ridge and xgboost by cross-fitted error over whole-trial folds, 100 honest trees,
  ``criterion='het'``, one thread);
* ``econml_causal_forest``: ``CausalForestDML(discrete_treatment=True)`` with econml's defaults (random_state set),
  ``fit(Y, T, X=X)`` as a user would write it (its defaults use every core: ``n_jobs=-1``);
* with ``--t-learners`` (first seed only; econml's is slow): ``ours_t_learner`` = ``make_effect_model('t_learner_xgb')``
  and ``econml_t_learner`` = ``econml.metalearners.TLearner(models=xgboost.XGBRegressor())``.

Reported per estimator and scenario, summed over seeds and folds: wall seconds (fit + effect; end to end per
fold) and CPU seconds of the process (econml's forest uses both cores, so its wall time is flattered, not ours),
and PEHE = sqrt(mean (tau - tau_hat)^2) against the simulator's true individual effect over all held-out
participants of all seeds, with the range of the per-seed PEHE ratio ours / econml. Target (issue 18): our causal
forest >= 5x faster end to end (wall) at PEHE <= econml's, on both scenarios.

A full run (not ``--quick``) appends one row per scenario to ``--out`` (default ``causal_forest_vs_econml.jsonl``
here): the totals, the per-seed PEHEs and the provenance (commit, time, load at start and end) that the README's
table is built from (``readme_table.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_row, machine, provenance, simulated_folds, table  # noqa: E402

def estimators(seed: int, t_learners: bool) -> dict:
    """Factories: name -> (build(), fit(model, y, t, X, groups))."""
    from econml.dml import CausalForestDML
    from econml.metalearners import TLearner as EconTLearner
    from xgboost import XGBRegressor

    from mbi_predict.models.effect import make_effect_model

    def ours(name):
        return (lambda: make_effect_model(name, random_state=seed),
                lambda m, y, t, X, g: m.fit(y, t, X=X, groups=g))

    chosen = {
        "ours_causal_forest": ours("causal_forest"),
        "econml_causal_forest": (lambda: CausalForestDML(discrete_treatment=True, random_state=seed),
                                 lambda m, y, t, X, g: m.fit(y, t, X=X)),
    }
    if t_learners:
        chosen["ours_t_learner"] = ours("t_learner_xgb")
        chosen["econml_t_learner"] = (lambda: EconTLearner(models=XGBRegressor(random_state=seed)),
                                      lambda m, y, t, X, g: m.fit(y, t, X=X))
    return chosen


def run_scenario(scenario: str, seed: int, max_folds: int | None, t_learners: bool) -> dict:
    """name -> {wall, cpu, sq: squared errors of every held-out participant, folds}."""
    models = estimators(seed, t_learners)
    per = {name: {"wall": 0.0, "cpu": 0.0, "sq": [], "folds": 0} for name in models}
    for X_train, X_test, y, t, g, truth in simulated_folds(scenario, seed, max_folds):
        for name, (build, fit) in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            model = fit(build(), y, t, X_train, g)
            cate = np.asarray(model.effect(X_test), dtype=float).reshape(-1)
            per[name]["wall"] += time.perf_counter() - wall
            per[name]["cpu"] += time.process_time() - cpu
            per[name]["sq"].append((truth - cate) ** 2)
            per[name]["folds"] += 1
    return per


def rmse(parts: list[np.ndarray]) -> float:
    return float(np.sqrt(np.mean(np.concatenate(parts))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="'strong' only, first seed, first 4 folds")
    # the defaults of the causal forest were chosen on seeds 2023 and 1-3 and checked on 4-7 (RESULTS 14): the
    # default seeds are ones they never saw
    parser.add_argument("--seeds", default="11,12,13,14,15,16,17,18",
                        help="comma-separated simulator seeds (default: 8 seeds not used to choose the defaults)")
    parser.add_argument("--t-learners", action="store_true", help="also the T-learners, on the first seed")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("causal_forest_vs_econml.jsonl"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}")
    started = provenance()
    records = []
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    scenarios = ("strong",) if args.quick else ("strong", "null")
    rows, verdicts = [], []
    for scenario in scenarios:
        total: dict[str, dict] = {}
        ratios, per_seed = [], {}
        for k, seed in enumerate(seeds):
            per = run_scenario(scenario, seed, 4 if args.quick else None, args.t_learners and k == 0)
            for name, m in per.items():
                into = total.setdefault(name, {"wall": 0.0, "cpu": 0.0, "sq": [], "folds": 0, "seeds": 0})
                into["wall"] += m["wall"]
                into["cpu"] += m["cpu"]
                into["sq"] += m["sq"]
                into["folds"] += m["folds"]
                into["seeds"] += 1
            ratios.append(rmse(per["ours_causal_forest"]["sq"]) / rmse(per["econml_causal_forest"]["sq"]))
            for name, m in per.items():
                per_seed.setdefault(name, []).append(rmse(m["sq"]))
            print(f"  {scenario} seed {seed}: PEHE ours {rmse(per['ours_causal_forest']['sq']):.3f}, econml "
                  f"{rmse(per['econml_causal_forest']['sq']):.3f}; wall {per['ours_causal_forest']['wall']:.1f} s "
                  f"vs {per['econml_causal_forest']['wall']:.1f} s", flush=True)
        for name, m in total.items():
            rows.append({"scenario": scenario, "estimator": name, "seeds": m["seeds"], "folds": m["folds"],
                         "wall_s": m["wall"], "cpu_s": m["cpu"], "pehe": rmse(m["sq"])})
        ours, theirs = total["ours_causal_forest"], total["econml_causal_forest"]
        speed, cpu_speed = theirs["wall"] / ours["wall"], theirs["cpu"] / ours["cpu"]
        ours_pehe, their_pehe = rmse(ours["sq"]), rmse(theirs["sq"])
        met = speed >= 5 and ours_pehe <= their_pehe
        records.append({"benchmark": "causal_forest_vs_econml", "scenario": scenario, "seeds": seeds,
                        "estimators": {name: {"wall_seconds": m["wall"], "cpu_seconds": m["cpu"], "folds": m["folds"],
                                              "pehe": rmse(m["sq"]), "pehe_per_seed": per_seed[name]}
                                       for name, m in total.items()}})
        verdicts.append(f"{scenario} causal forest: ours {speed:.1f}x faster wall ({cpu_speed:.1f}x CPU), PEHE "
                        f"{ours_pehe:.4f} vs econml {their_pehe:.4f} (per-seed ratio {min(ratios):.2f}-"
                        f"{max(ratios):.2f}, ours lower in {sum(r < 1 for r in ratios)}/{len(ratios)} seeds); "
                        f"target >= 5x at PEHE <= econml's: {'MET' if met else 'MISSED'}")
    print(table(rows))
    print(f"machine after: {machine()}")
    print("\n".join(verdicts))
    if not args.quick:
        ended = provenance(started)
        for record in records:
            append_row(args.out, {**record, "provenance": ended})


if __name__ == "__main__":
    main()
