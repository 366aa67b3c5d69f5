"""The demo: every stage of the toolkit on the built-in simulated consortium, end to end.

simulate raw trial files -> harmonise -> describe -> classical two-stage meta-analysis -> leave-one-trial-out
experiment (prognostic and effect models, SHAP, MLflow) -> model cards -> the study report (one HTML page that
reads the whole analysis, logged to the run's MLflow parent run). `make demo` calls it through the CLI.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

DEMO_OUTCOME = "distress_fu1_6"
# what the demo prints of the experiment; summary.json and MLflow hold every metric
HEADLINE_METRICS = {"rmse", "r2", "calibration_slope", "benefit_calibration_slope", "rate_autoc",
                    "dr_loss_vs_constant", "c_for_benefit", "pehe", "cate_truth_corr"}


def run_demo(out: str | Path, *, seed: int = 2023, console: Console | None = None,
             tracking_uri: str | None = None) -> dict[str, Path]:
    """Run the demo into `out`; return the main files written, by name.

    The experiment is tracked in `tracking_uri` (default: MLflow's own default, `sqlite:///mlflow.db` in the working
    directory, so `mbi-predict ui` finds it).
    """
    from mbi_predict.data.describe import describe_ipd
    from mbi_predict.data.harmonise import harmonise
    from mbi_predict.data.publish import write_harmonised
    from mbi_predict.data.rawsim import simulate_consortium_files

    console = console or Console()
    out = Path(out)
    started = time.perf_counter()
    written: dict[str, Path] = {}
    timings: dict[str, float] = {}
    last = [None, time.perf_counter()]

    def stage(title: str) -> None:
        """Start a stage: print its rule, and record how long the previous one took."""
        now = time.perf_counter()
        if last[0] is not None:
            timings[last[0]] = now - last[1]
        last[0], last[1] = title, now
        console.rule(title)

    stage("1. simulate a consortium of raw trial files")
    spec = simulate_consortium_files(out / "consortium", scenario="galante2023", seed=seed)
    console.print(f"raw files and spec: {spec.parent}")
    written["spec"] = spec

    stage("2. harmonise into one IPD table")
    tick = time.perf_counter()
    harmonised = harmonise(spec)
    ipd_path = out / "ipd.parquet"
    write_harmonised(harmonised, ipd_path, report_dir=out / "harmonisation_report")
    ipd = harmonised.ipd
    console.print(f"{len(ipd)} participants, {ipd['trial_id'].nunique()} trials -> {ipd_path} "
                  f"({time.perf_counter() - tick:.1f} s); report in {out / 'harmonisation_report'}")
    written["ipd"] = ipd_path

    stage("3. describe")
    from mbi_predict.cli._common import print_table
    from mbi_predict.cli.printers import describe_views

    for title, frame in describe_views(describe_ipd(ipd).drop(columns=["outcomes_measured"], errors="ignore")):
        print_table(frame, title=f"trials: {title}", keys=["trial"])

    stage("4. classical two-stage IPD meta-analysis")
    from mbi_predict.io import sigterm_interrupts

    with sigterm_interrupts():  # its jobs run in the worker pool: SIGTERM unwinds like Ctrl-C and stops the pool
        written.update(_meta_stage(ipd, out / "meta", console))

    stage("5. leave-one-trial-out experiment: prognostic and effect models, SHAP, MLflow")
    written.update(_experiment_stage(ipd_path, spec.parent / "truth.parquet", out / "run", console,
                                     tracking_uri=tracking_uri))

    stage("6. model cards (best prognostic model, primary effect model), logged to MLflow with the reports")
    written.update(_card_stage(out, console, tracking_uri=tracking_uri))

    stage("7. the study report: the whole analysis on one page, logged to MLflow")
    written.update(_report_stage(out, console, tracking_uri=tracking_uri))

    stage("done")
    console.print("seconds per stage: " + ", ".join(f"{title.split('. ')[0]}. {seconds:.1f}"
                                                   for title, seconds in timings.items()), markup=False)
    console.print(f"\n[bold]demo finished in {time.perf_counter() - started:.1f} s[/] - everything is in {out}")
    return written


def _meta_stage(ipd, out: Path, console: Console) -> dict[str, Path]:
    """Pooled effect of the MBI on distress at 1-6 months against each kind of control, with forest plots."""
    import pandas as pd

    from mbi_predict.io import write_json_atomic
    from mbi_predict.meta.plots import write_meta_plots
    from mbi_predict.parallel import execution_backend, run_in_order

    rows, written = [], {}
    analyses = [(DEMO_OUTCOME, "passive", ["baseline_distress", "baseline_mindfulness", "age"]),
                (DEMO_OUTCOME, "active", None),
                ("deteriorated_distress_fu1_6", "passive", None)]
    analyses = [(outcome, control, modifiers) for outcome, control, modifiers in analyses if outcome in ipd.columns]
    # the three analyses are computed in the experiment's worker processes, which also load what stage 5's fold
    # jobs need (each worker that gets one; with 3 jobs on 2 workers usually both): this stage and the start of the
    # experiment otherwise run on one core while the other waits (RESULTS 26). The workers only compute and this
    # process writes, so a worker outliving a killed demo writes nothing.
    with execution_backend("local", n_jobs=_demo_workers()) as n_jobs:
        reports = run_in_order([(_meta_analysis, (ipd, *analysis)) for analysis in analyses], n_jobs)
    for (outcome, control, _), report in zip(analyses, reports):
        folder = out / f"{outcome}_vs_{control}"
        plots = write_meta_plots(report, folder)
        write_json_atomic(folder / "meta.json", report.to_dict())
        written[f"forest_{outcome}_{control}"] = plots[0] if plots else folder
        pooled = report.two_stage.pooled
        rows.append({"outcome": outcome, "vs": control, "measure": "log RR" if report.two_stage.outcome_type == "binary"
                     else "g", "k": pooled.k if pooled else 0,
                     "estimate": pooled.estimate if pooled else float("nan"),
                     "95% CI": f"{pooled.ci_low:.2f} to {pooled.ci_high:.2f}" if pooled else "",
                     "95% PI": f"{pooled.pi_low:.2f} to {pooled.pi_high:.2f}" if pooled else "",
                     "tau2": pooled.tau2 if pooled else float("nan"),
                     "I2 %": pooled.i2 if pooled else float("nan")})
        for item in report.interactions:
            console.print(f"  within-trial interaction arm x {item['modifier']}: {item['estimate']:.3f} "
                          f"({item['ci_low']:.3f} to {item['ci_high']:.3f}), p = {item['pvalue']:.3f}; "
                          f"across-trial (ecological) {item['across_trial_estimate']:.3f}", markup=False)
    from mbi_predict.cli._common import print_table

    print_table(pd.DataFrame(rows), title="pooled effect of the MBI (random effects, REML)",
                keys=["outcome", "vs"])
    console.print(f"forest and funnel plots in {out}")
    return written


def _meta_analysis(ipd, outcome: str, control: str, modifiers: list[str] | None):
    """One meta-analysis of the demo (a worker's job): its report, nothing written. The worker then loads the
    modules of the experiment's fold jobs, so that stage 5 starts on warm workers."""
    from mbi_predict.meta import run_meta

    report = run_meta(ipd, outcome, control=control, modifiers=modifiers, m=5, seed=0)
    import mbi_predict.pipeline.sinks.figures  # noqa: F401  (stage 5: fold jobs, SHAP, figures, verdict refits)
    import mbi_predict.validate.fold_fits  # noqa: F401
    import mbi_predict.validate.verdict_null  # noqa: F401
    return report


def _demo_workers() -> int:
    """The worker processes of the demo's experiment (demo.yaml's ``validation``), so that the meta stage starts
    the very pool the experiment then reuses; 1 (this process) when the experiment runs elsewhere (dask)."""
    from mbi_predict.config import load_config

    validation = load_config(demo_config_path()).validation
    return validation.n_jobs if validation.backend == "local" else 1


def demo_config_path() -> Path:
    """The demo experiment's config, ``mbi_predict/resources/demo.yaml``: package data, so an installed wheel runs
    the demo as a source checkout does (``mbi-predict run`` takes the same file)."""
    from importlib.resources import files

    from mbi_predict.errors import ConfigError

    path = Path(str(files("mbi_predict.resources").joinpath("demo.yaml")))
    if not path.is_file():
        raise ConfigError(f"the demo config {path} is missing: the installed package is incomplete, reinstall it")
    return path


def _experiment_stage(ipd_path: Path, truth_path: Path, out: Path, console: Console, *,
                      tracking_uri: str | None) -> dict[str, Path]:
    """The demo experiment on the table harmonised from the raw files in stage 2 (not harmonised again), scored
    against the simulator's truth file for PEHE."""
    from mbi_predict.cli.printers import print_run, print_verdict
    from mbi_predict.runner import run_experiment

    import yaml

    config = yaml.safe_load(demo_config_path().read_text(encoding="utf-8"))
    config["data"] = {"path": str(ipd_path), "truth": str(truth_path)}
    result = run_experiment(config, out_dir=out, tracking_uri=tracking_uri)
    print_verdict(result.summary)
    print_run(result.summary, metrics=HEADLINE_METRICS)
    console.print(f"(all metrics, per trial and pooled: {result.summary_path})")
    comparison = result.summary.get("comparison_to_reference") or {}
    for name, row in (comparison.get("models") or {}).items():
        console.print(f"  {name} {'beats' if row.get('beats_reference') else 'does not beat'} the reference model "
                      f"on pooled {comparison.get('metric')}", markup=False)
    uri = tracking_uri or "sqlite:///mlflow.db"
    console.print(f"summary: {result.summary_path}")
    # the command as it can be pasted from any folder (the store is relative to this one)
    command = Path(sys.executable).parent / "mbi-predict"
    command = command if command.exists() else Path("mbi-predict")
    console.print(f"MLflow run {result.mlflow_run_id} in {uri}; open the UI from {Path.cwd()} with:", markup=False)
    console.print(f"  {command} ui{'' if tracking_uri is None else ' --tracking-uri ' + uri}", markup=False,
                  soft_wrap=True)
    return {"summary": result.summary_path}


def _card_stage(out: Path, console: Console, *, tracking_uri: str | None) -> dict[str, Path]:
    """Cards of the best prognostic model and of the run's primary effect model; they, the harmonisation report and
    the meta-analysis outputs go to the run's MLflow parent run, so the UI holds everything a reader needs."""
    import json

    from mbi_predict.report.card import build_card, write_card
    from mbi_predict.track.run import log_artifacts_to
    from mbi_predict.track.store import client

    run_dir = out / "run"
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    paths: dict[str, Path] = {}
    cards: dict[str, list[Path]] = {}
    primary = (summary.get("heterogeneity") or {}).get("primary_model")
    for label, model in (("", None), ("effect_", primary)):
        if label and not model:
            continue
        card = build_card(run_dir, model=model)
        name = card["model_details"]["name"]
        base = f"model_card_{name}" if label else "model_card"
        cards[name] = [write_card(card, run_dir / f"{base}.{fmt}", fmt=fmt) for fmt in ("md", "html", "json")]
        paths.update({f"card_{label}{p.suffix[1:]}": p for p in cards[name]})
        console.print(f"model card of {name}: {cards[name][0]} (also .html and .json)")
    if summary.get("mlflow_run_id"):
        log_artifacts_to(client(tracking_uri or "sqlite:///mlflow.db"), summary["mlflow_run_id"], cards=cards,
                         harmonisation_report=[out / "harmonisation_report"], meta_analysis=[out / "meta"])
        console.print("cards, harmonisation report and meta-analysis logged to the MLflow run")
    return paths


def _report_stage(out: Path, console: Console, *, tracking_uri: str | None) -> dict[str, Path]:
    """The study report of the demo run (``out/study_report.html`` and ``.md``), built from the run folder, the
    meta-analyses, the harmonisation report and the cards, and logged to the run's MLflow parent run."""
    import json

    from mbi_predict.report.study import log_report, write_study_report

    html_path, md_path = write_study_report(out / "run", out / "study_report", tracking_uri=tracking_uri)
    console.print(f"study report: {html_path} (self-contained; Markdown: {md_path.name})", markup=False)
    summary = json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))
    note = log_report([html_path, md_path], summary, tracking_uri=tracking_uri)
    if note is not None:
        console.print(f"note: the study report was not logged to MLflow ({note})", markup=False)
    return {"study_report": html_path, "study_report_md": md_path}
