"""Learning Mindsets: the heterogeneity verdict under the two validation schemes (issue 14).

    .venv/bin/python experiments/learning_mindsets/verdict.py [--B 19]

The same primary effect model (the penalised interaction model, propensity estimated) on the NSLM table twice:

1. participant-level K-fold (5 folds over students of all 76 schools): held-out students share schools with the
   training students, so their metrics inherit the school-level noise the models learnt; the runner gives no verdict
   (``not_tested``) unless ``heterogeneity.internal_validation`` is set;
2. leave-one-block-out over 10 blocks of whole schools (as ``run.py``): the verdict with its permutation
   calibration (``null_B`` constant-effect draws).

Group effects and treatment rules are switched off here (they are not what this script measures). The data are
observational: the calibration's draws permute the arm within each school block, which makes the draws randomised;
the verdict is then calibrated for the dependence between held-out blocks, not for confounding (the held-out
yardstick uses each block's share treated as its propensity, as ``run.py`` explains).
Output: experiments/learning_mindsets/runs/verdict.json (git-ignored) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shared.study import output_dir  # noqa: E402

from mbi_predict.data.external import load_nslm  # noqa: E402
from mbi_predict.runner import run_experiment  # noqa: E402

SEED = 2018


def config(dataset, scheme: str, B: int) -> dict:
    return {"experiment": f"learning_mindsets_verdict_{scheme}", "outcome": dataset.outcome,
            "covariates": list(dataset.covariates),
            "models": [{"name": "interaction_linear", "kind": "effect", "estimator": "interaction_linear",
                        "params": {"propensity": "estimated"}}],
            "validation": {"scheme": scheme, "folds": 5, "bootstrap": 50, "n_jobs": 2, "hksj": True},
            "heterogeneity": {"null_B": B}, "who_benefits": {"enabled": False},
            "tracking": {"enabled": False}, "seed": SEED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=19)
    args = parser.parse_args()
    dataset = load_nslm(school_blocks=10)
    out = output_dir("learning_mindsets")
    rows = {}
    for scheme in ("kfold", "loto"):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = run_experiment(config(dataset, scheme, args.B), data=dataset.ipd, out_dir=out / f"verdict_{scheme}",
                                     progress=False).summary
        run = summary["heterogeneity"]
        model = summary["models"]["interaction_linear"]["heterogeneity"]
        tests = (model.get("calibration") or {}).get("tests") or {}
        rows[scheme] = {"verdict": run["verdict"], "reason": run["reason"], "method": run["method"],
                        "naive_verdict": model.get("naive_verdict"),  # present only when not calibrated
                        "naive_p": {t["metric"]: t.get("naive_p") for t in model["tests"] if t.get("naive_p")},
                        "calibrated_p": {m: t["p_value"] for m, t in tests.items()},
                        "seconds": round(time.perf_counter() - start, 1)}
        print(f"{scheme}: {run['verdict']} - {run['reason']} ({rows[scheme]['seconds']} s)", flush=True)
    (out / "verdict.json").write_text(json.dumps(rows, indent=1, default=str))
    print(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
