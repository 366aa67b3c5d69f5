"""The toolkit's CausalForest and TLearner against econml used by hand, side by side, leave-one-trial-out.

    .venv/bin/python experiments/benchmarks/causal_forest_vs_econml.py [--quick]

Data: ``simulate_latent(scenario, seed, n_trials=13, n=2371)`` for 'strong' and 'galante2023', outcome
distress_fu1_6, MBI vs passive control (the runner's comparison), every trial that can be held out. Per fold the
covariates go through the toolkit's fold-fitted transformer (``models.preprocess.make_preprocessor``, fitted on the
training rows), then four estimators are fitted on the training trials' observed outcomes and predict the CATE of
every held-out participant:

* ``ours_causal_forest``: ``make_effect_model('causal_forest')`` (known propensity, xgboost nuisance, 200 trees,
  one thread, trial-grouped cross-fitting);
* ``econml_causal_forest``: ``CausalForestDML(discrete_treatment=True)`` with econml's defaults (random_state set),
  ``fit(Y, T, X=X)`` as a user would write it (its defaults use every core: ``n_jobs=-1``);
* ``ours_t_learner``: ``make_effect_model('t_learner_xgb')`` (arm-balancing weights, hist xgboost, one thread);
* ``econml_t_learner``: ``econml.metalearners.TLearner(models=xgboost.XGBRegressor())`` (xgboost defaults, every
  core).

Reported per estimator, summed over folds: wall seconds (fit + effect) and CPU seconds of the process (so estimators
that use both cores are not flattered by wall time), and PEHE = sqrt(mean (tau - tau_hat)^2) against the simulator's
true individual effect over all held-out participants (and the mean of per-fold PEHE). Target: our causal forest
>= 2x faster than econml's defaults at equal or better PEHE.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

OUTCOME = "distress_fu1_6"
TRUTH = "true_effect_passive_distress_fu1_6"


def estimators(seed: int) -> dict:
    """Factories: name -> (build(), fit(model, y, t, X, groups))."""
    from econml.dml import CausalForestDML
    from econml.metalearners import TLearner as EconTLearner
    from xgboost import XGBRegressor

    from mbi_predict.models.effect import make_effect_model

    def ours(name):
        return (lambda: make_effect_model(name, random_state=seed),
                lambda m, y, t, X, g: m.fit(y, t, X=X, groups=g))

    return {
        "ours_causal_forest": ours("causal_forest"),
        "econml_causal_forest": (lambda: CausalForestDML(discrete_treatment=True, random_state=seed),
                                 lambda m, y, t, X, g: m.fit(y, t, X=X)),
        "ours_t_learner": ours("t_learner_xgb"),
        "econml_t_learner": (lambda: EconTLearner(models=XGBRegressor(random_state=seed)),
                             lambda m, y, t, X, g: m.fit(y, t, X=X)),
    }


def run_scenario(scenario: str, seed: int, max_folds: int | None) -> list[dict]:
    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.models.preprocess import make_preprocessor
    from mbi_predict.validate.benefit import pehe
    from mbi_predict.validate.loto import plan_folds, prepare_data

    consortium = simulate_latent(scenario, seed=seed, n_trials=13, n=2371)
    data = prepare_data(check_ipd(consortium.ipd), outcome=OUTCOME, covariates="all", control_type="passive")
    truth = consortium.truth.set_index("participant_id")[TRUTH].reindex(data.participant).to_numpy(dtype=float)
    plan = plan_folds(data, scheme="loto", min_trial_size=20, seed=seed)
    folds = plan.folds[:max_folds] if max_folds else plan.folds
    models = estimators(seed)
    per = {name: {"wall": 0.0, "cpu": 0.0, "sq": [], "fold_pehe": []} for name in models}
    for fold in folds:
        train = fold.train[np.isfinite(data.y[fold.train])]
        features = make_preprocessor(data.features, use_arm=False, seed=seed).fit(data.X.iloc[train])
        X_train, X_test = features.transform(data.X.iloc[train]), features.transform(data.X.iloc[fold.test])
        y, t, g = data.y[train], data.arm[train], data.trial[train]
        for name, (build, fit) in models.items():
            wall, cpu = time.perf_counter(), time.process_time()
            model = fit(build(), y, t, X_train, g)
            cate = np.asarray(model.effect(X_test), dtype=float).reshape(-1)
            per[name]["wall"] += time.perf_counter() - wall
            per[name]["cpu"] += time.process_time() - cpu
            per[name]["sq"].append((truth[fold.test] - cate) ** 2)
            per[name]["fold_pehe"].append(pehe(truth[fold.test], cate))
    rows = []
    for name, m in per.items():
        rows.append({"scenario": scenario, "estimator": name, "folds": len(folds), "wall_s": m["wall"],
                     "cpu_s": m["cpu"], "pehe": float(np.sqrt(np.mean(np.concatenate(m["sq"])))),
                     "mean_fold_pehe": float(np.mean(m["fold_pehe"]))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="'strong' only, first 4 folds")
    parser.add_argument("--seed", type=int, default=2023)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"machine: {machine()}")
    scenarios = ("strong",) if args.quick else ("strong", "galante2023")
    rows = []
    for scenario in scenarios:
        rows += run_scenario(scenario, args.seed, 4 if args.quick else None)
    print(table(rows))
    print(f"machine after: {machine()}")
    for scenario in scenarios:
        by = {r["estimator"]: r for r in rows if r["scenario"] == scenario}
        for kind in ("causal_forest", "t_learner"):
            ours, theirs = by[f"ours_{kind}"], by[f"econml_{kind}"]
            speed = theirs["wall_s"] / ours["wall_s"]
            cpu_speed = theirs["cpu_s"] / ours["cpu_s"]
            better = ours["pehe"] <= theirs["pehe"] * 1.001
            verdict = ("MET" if speed >= 2 and better else "MISSED") if kind == "causal_forest" else "(no target)"
            print(f"{scenario} {kind}: ours {speed:.1f}x faster wall ({cpu_speed:.1f}x CPU), PEHE {ours['pehe']:.3f} "
                  f"vs econml {theirs['pehe']:.3f}; target >= 2x at equal or better PEHE: {verdict}")


if __name__ == "__main__":
    main()
