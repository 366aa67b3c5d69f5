"""Tennessee STAR, kindergarten: small vs regular class, schools as trials, leave-one-school-out.

    .venv/bin/python experiments/star/run.py [--quick] [--outcome math|reading]

Class type was randomised within school, so each school is a trial with its own randomisation ratio (known
propensity, computed per school by the effect models). Runs configs/studies/star.yaml through ``run_experiment``:
every school with >= 30 tested pupils held out in turn (74 of 78), per-school benefit and prognostic metrics pooled
by random effects. Also the average small-class effect with school-clustered inference. Output:
experiments/star/runs/ (git-ignored).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shared.study import (effect_predictions, output_dir, pooled_rows, run_study, save_json, show,  # noqa: E402
                           study_config)

from mbi_predict.data.external import load_star  # noqa: E402
from mbi_predict.models.inference import trial_aware_ate  # noqa: E402

STUDY = "star"
QUICK_MODELS = ["t_learner_xgb", "interaction_linear", "elastic_net"]


def average_effect(dataset) -> dict:
    ipd = dataset.ipd
    rows = ipd[dataset.outcome].notna() & ((ipd["arm"] == 1) | (ipd["control_type"] == "passive"))
    ipd = ipd.loc[rows]
    ipd = ipd.loc[ipd.groupby("trial_id")["arm"].transform("nunique") == 2]
    y, t = ipd[dataset.outcome].to_numpy(float), ipd["arm"].to_numpy(int)
    fit = trial_aware_ate(y, t, None, ipd["trial_id"].to_numpy(), n_folds=5, seed=1985)
    fit["difference_in_means"] = float(y[t == 1].mean() - y[t == 0].mean())
    fit["outcome_sd"] = float(y.std(ddof=1))
    return fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 models, 20 bootstrap draws")
    parser.add_argument("--outcome", choices=["math", "reading"], default="math")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    config = study_config(STUDY, models=QUICK_MODELS if args.quick else None, bootstrap=20 if args.quick else 50)
    dataset = load_star(args.outcome)
    ate = average_effect(dataset)
    print(f"small-class effect on {dataset.outcome}: {ate['estimate']:.1f} scale points "
          f"({ate['estimate'] / ate['outcome_sd']:.2f} SD; 95% CI {ate['ci_low']:.1f} to {ate['ci_high']:.1f}, "
          f"school-clustered, {ate['n_clusters']} schools; iid CI {ate['naive_ci_low']:.1f} to "
          f"{ate['naive_ci_high']:.1f}); difference in means {ate['difference_in_means']:.1f}")

    label = f"star_{args.outcome}"
    result, predictions = run_study(config, dataset, study=STUDY, label=label)
    skipped = result.summary["validation"]["skipped"]
    print(f"  held out {len(result.summary['validation']['held_out'])} schools; not held out: "
          + "; ".join(f"{s['trial_id']} ({s['reason'][:60]})" for s in skipped))
    rows = pooled_rows(result.summary)
    show(rows, "leave-one-school-out, pooled over held-out schools")
    spread = effect_predictions(predictions).groupby("model")["cate"].describe()[["mean", "std", "min", "max"]]
    show(spread.reset_index(), "predicted CATE across pupils (out-of-school)")
    rates = rows.loc[rows["metric"] == "rate_autoc"]
    found = rates.loc[rates["ci_low"].fillna(-np.inf) > 0, "model"].tolist()
    print(f"\nverdict: heterogeneity that transports to an unseen school (pooled RATE CI above 0): "
          f"{', '.join(found) if found else 'none'}. Total {time.perf_counter() - started:.0f} s.")
    save_json(output_dir(STUDY) / f"results_{args.outcome}.json",
              {"quick": args.quick, "ate": ate, "pooled": rows.to_dict("records"),
               "skipped": skipped, "cate_spread": spread.reset_index().to_dict("records"),
               "mlflow_run_id": result.mlflow_run_id})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
