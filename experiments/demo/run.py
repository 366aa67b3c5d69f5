"""The demo study: mbi_predict/resources/demo.yaml (prognostic models on the built-in simulated consortium) validated
leave-one-trial-out, tracked to experiments/demo/runs/mlflow.db.

    .venv/bin/python experiments/demo/run.py [--quick]

Same as ``mbi-predict run mbi_predict/resources/demo.yaml`` with the output kept in this folder. ``--quick``: no
tuning, 20 bootstrap draws. The other half of the demo (simulate raw files -> harmonise -> describe -> two-stage
meta-analysis) is ``mbi-predict demo --out experiments/demo/runs/demo`` (what ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _shared.study import output_dir, pooled_rows, show  # noqa: E402

from mbi_predict.demo import demo_config_path  # noqa: E402
from mbi_predict.runner import run_experiment  # noqa: E402

STUDY = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no tuning, 20 bootstrap draws")
    args = parser.parse_args(argv)
    config = yaml.safe_load(demo_config_path().read_text(encoding="utf-8"))
    if args.quick:
        for model in config["models"]:
            model.pop("tuning", None)
        config["validation"] = {**config.get("validation", {}), "bootstrap": 20}
    out = output_dir(STUDY)
    started = time.perf_counter()
    result = run_experiment(config, out_dir=out / "demo_prognostic", tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
                            progress=False)
    show(pooled_rows(result.summary), f"{config['experiment']}: leave-one-trial-out, pooled")
    comparison = result.summary.get("comparison_to_reference") or {}
    for name, row in (comparison.get("models") or {}).items():
        print(f"  {name}: {comparison['metric']} {row['pooled']:.3f} vs reference {row['reference_pooled']:.3f}, "
              f"difference {row['difference']:+.3f} (CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f})")
    print(f"\n{time.perf_counter() - started:.0f} s; summary {result.summary_path}; MLflow run {result.mlflow_run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
