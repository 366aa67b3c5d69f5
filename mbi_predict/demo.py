"""The demo: every stage of the toolkit on the built-in simulated consortium, end to end.

simulate raw trial files -> harmonise -> describe -> classical two-stage meta-analysis -> leave-one-trial-out
experiment (prognostic and effect models, SHAP, MLflow) -> model card. `make demo` calls it through the CLI.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

DEMO_OUTCOME = "distress_fu1_6"


def run_demo(out: str | Path, *, seed: int = 2023, console: Console | None = None) -> dict[str, Path]:
    """Run the demo into `out`; return the main files written, by name."""
    from mbi_predict.data.describe import describe_ipd
    from mbi_predict.data.harmonise import harmonise, write_harmonised
    from mbi_predict.data.rawsim import simulate_consortium_files

    console = console or Console()
    out = Path(out)
    started = time.perf_counter()
    written: dict[str, Path] = {}

    console.rule("1. simulate a consortium of raw trial files")
    spec = simulate_consortium_files(out / "consortium", scenario="galante2023", seed=seed)
    console.print(f"raw files and spec: {spec.parent}")
    written["spec"] = spec

    console.rule("2. harmonise into one IPD table")
    tick = time.perf_counter()
    harmonised = harmonise(spec)
    ipd_path = out / "ipd.parquet"
    write_harmonised(harmonised, ipd_path, report_dir=out / "harmonisation_report")
    ipd = harmonised.ipd
    console.print(f"{len(ipd)} participants, {ipd['trial_id'].nunique()} trials -> {ipd_path} "
                  f"({time.perf_counter() - tick:.1f} s); report in {out / 'harmonisation_report'}")
    written["ipd"] = ipd_path

    console.rule("3. describe")
    from mbi_predict.cli import _print_frame

    _print_frame(describe_ipd(ipd).drop(columns=["outcomes_measured"], errors="ignore"), title="trials")

    console.print(f"\n[bold]demo finished in {time.perf_counter() - started:.1f} s[/] - everything is in {out}")
    return written
