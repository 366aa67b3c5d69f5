"""Commands on data: simulate, harmonise, describe, meta."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mbi_predict.cli._common import app, boundary, console, emit, output_format, print_table
from mbi_predict.cli.printers import describe_views
from mbi_predict.errors import MBIError
from mbi_predict.io import check_outputs_apart as _outputs_apart

JSON_OPTION = typer.Option("--json", help="Print the table as JSON (one array of records) instead.")
CSV_OPTION = typer.Option("--csv", help="Print the table as CSV instead.")


@app.command()
@boundary
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Folder for consortium.yaml, raw trial files and truth.")],
    scenario: Annotated[str, typer.Option(
        help="galante2023 | null | modest | strong | harm | harm_subgroup | no_effect_subgroup")] = "galante2023",
    seed: Annotated[int, typer.Option(help="Random seed; the output is deterministic for a seed.")] = 2023,
    trials: Annotated[int, typer.Option(help="Number of trials.")] = 13,
    n: Annotated[int, typer.Option(help="Total number of participants.")] = 2371,
) -> None:
    """Write a simulated consortium of raw trial files, its consortium.yaml and the truth file."""
    from mbi_predict.data.rawsim import simulate_consortium_files

    _outputs_apart([out], [], folder=out)
    spec = simulate_consortium_files(out, scenario=scenario, seed=seed, n_trials=trials, n=n)
    console.print(f"simulated consortium written: {spec}")


@app.command()
@boundary
def harmonise(
    spec: Annotated[Path, typer.Argument(help="The consortium spec (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="The harmonised IPD table (.parquet).")] = Path("ipd.parquet"),
    report: Annotated[Path | None, typer.Option(help="Folder for the harmonisation report.")] = None,
    standardisation: Annotated[str | None, typer.Option(help="Override the spec: within_trial | norm.")] = None,
) -> None:
    """Harmonise raw trial files into one IPD table through the consortium spec."""
    from mbi_predict.data.harmonise import harmonise as run_harmonise
    from mbi_predict.data.publish import harmonised_paths, write_harmonised
    from mbi_predict.data.spec import input_paths, load_spec

    started = time.perf_counter()
    consortium = load_spec(spec)
    _outputs_apart(harmonised_paths(out, report), input_paths(consortium))
    result = run_harmonise(consortium, standardisation=standardisation)
    written = write_harmonised(result, out, report_dir=report)
    console.print(f"harmonised {len(result.ipd)} participants in {result.ipd['trial_id'].nunique()} trials "
                  f"in {time.perf_counter() - started:.1f} s")
    for path in written:
        console.print(f"  wrote {path}")


@app.command()
@boundary
def describe(ipd: Annotated[Path, typer.Argument(help="A harmonised IPD table (.parquet or .csv).")],
             as_json: Annotated[bool, JSON_OPTION] = False, as_csv: Annotated[bool, CSV_OPTION] = False) -> None:
    """Print tables per trial: N by arm, outcome coverage, baseline profile, study traits."""
    from mbi_predict.data.describe import describe_ipd
    from mbi_predict.data.readers import load_ipd

    fmt = output_format(as_json, as_csv)
    described = describe_ipd(load_ipd(ipd))
    if fmt:
        emit(described, fmt)
        return
    for title, frame in describe_views(described.drop(columns=["outcomes_measured"], errors="ignore")):
        print_table(frame, title=f"{ipd.name}: {title}", keys=["trial"])


@app.command()
@boundary
def meta(
    ipd: Annotated[Path, typer.Argument(help="A harmonised IPD table (.parquet or .csv).")],
    outcome: Annotated[str, typer.Option(help="Outcome column, e.g. distress_fu1_6 or deteriorated_distress_post.")],
    control: Annotated[str, typer.Option(help="Comparison: passive | active.")] = "passive",
    modifiers: Annotated[str | None, typer.Option(help="Comma-separated candidate effect modifiers.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the forest and funnel plots (and meta.json).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the per-trial table as CSV instead.")] = False,
    imputations: Annotated[int, typer.Option("--m", help="Number of within-trial multiple imputations.")] = 5,
    method: Annotated[str, typer.Option(help="tau² estimator: REML | ML | DL | PM | FE.")] = "REML",
    test: Annotated[str, typer.Option(help="z | knha (Hartung-Knapp-Sidik-Jonkman).")] = "z",
    seed: Annotated[int, typer.Option(help="Seed of the imputations.")] = 0,
    figure_format: Annotated[str | None, typer.Option(help="Figure format: png | svg | pdf (default png).")] = None,
    dpi: Annotated[int | None, typer.Option(help="Figure resolution in dots per inch (default 150).")] = None,
) -> None:
    """Two-stage random-effects IPD meta-analysis of one outcome, with within-trial effect modifiers."""
    from mbi_predict.data.readers import load_ipd
    from mbi_predict.io import to_json, write_json_atomic
    from mbi_predict.meta import run_meta
    from mbi_predict.meta.plots import write_meta_plots
    from mbi_predict import figstyle

    if control not in ("passive", "active"):
        raise MBIError(f"--control must be passive or active, not {control!r}")
    fmt = output_format(as_json, as_csv)
    chosen = figstyle.settings(figure_format, dpi)
    if out is not None:
        _outputs_apart([out, *(Path(out) / name for name in ("meta.json", f"forest.{chosen.format}",
                                                             f"funnel.{chosen.format}"))], [ipd], folder=Path(out))
    table = load_ipd(ipd)
    wanted = [m.strip() for m in modifiers.split(",") if m.strip()] if modifiers else None
    report = run_meta(table, outcome, control=control, modifiers=wanted, m=imputations, seed=seed, method=method,
                      test=test)
    result = report.to_dict()
    written = []
    if out is not None:
        written = write_meta_plots(report, out, format=chosen.format, dpi=chosen.dpi)
        written.append(write_json_atomic(Path(out) / "meta.json", result))
    if fmt == "json":
        typer.echo(to_json(result))
        return
    if fmt == "csv":
        emit(per_trial_frame(result["per_trial"]), "csv")
        return
    console.print(report.summary(), markup=False, highlight=False)
    print_table(per_trial_frame(result["per_trial"]), title="per trial", keys=["trial_id"])
    for path in written:
        console.print(f"wrote {path}")


def per_trial_frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    columns = ["trial_id", "n", "n_mbi", "n_control", "estimate", "ci_low", "ci_high", "weight"]
    return pd.DataFrame(rows).reindex(columns=columns)
