"""What a run and a harmonised table look like on the terminal: the verdict line, the run's leaderboard, the
per-trial description.

Shared by the commands (``run``, ``describe``) and the demo, which prints the same tables: kept out of the command
modules so the demo (app layer, imported by the ``demo`` command) need not import the CLI package that imports it.
"""

from __future__ import annotations

from typing import Any

from mbi_predict.cli._common import console, print_table


def print_verdict(summary: dict[str, Any]) -> None:
    """The run's one heterogeneity verdict first, then each effect model's in a line."""
    from mbi_predict.numbers import p_text

    run = summary.get("heterogeneity")
    if not run:
        return
    console.print(f"heterogeneity of the effect: {run['verdict'].replace('_', ' ').upper()} - {run['reason']}",
                  markup=False)
    for name, model in (run.get("models") or {}).items():
        p = model.get("p_holm", model.get("p_value"))
        beats = model.get("beats_constant")
        console.print(f"  {name}: {str(model.get('verdict')).replace('_', ' ')}"
                      + (f", {p_text(p)}" if isinstance(p, float) and model.get("calibrated") else "")
                      + ("" if beats is None else ("; beats" if beats else "; does not beat")
                         + " one average effect for everyone"), markup=False)


def run_rows(summary: dict[str, Any], metrics: set[str] | None = None) -> list[dict[str, Any]]:
    """One record per (model, pooled metric) of a run: estimate, CI, PI, tau², k."""
    rows = []
    for name, block in summary.get("models", {}).items():
        for metric, value in (block.get("pooled") or {}).items():
            if not isinstance(value, dict) or (metrics is not None and metric not in metrics):
                continue
            rows.append({"model": name, "task": block.get("task"), "metric": metric,
                         **{key: value.get(key) for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high",
                                                            "tau2", "k")}})
    return rows


def print_run(summary: dict[str, Any], *, metrics: set[str] | None = None) -> None:
    """The run's leaderboard to fit the terminal: per kind of model, one row per model and one "estimate (95% CI)"
    column per pooled metric (prediction intervals and every other number: ``--json``, summary.json)."""
    import pandas as pd

    from mbi_predict.numbers import estimate_ci, label

    records = run_rows(summary, metrics)
    for kind in ("prognostic", "effect"):
        chosen = [r for r in records if (r["task"] or "prognostic") == kind]
        if not chosen:
            continue
        table = pd.DataFrame({"model": list(dict.fromkeys(r["model"] for r in chosen))})
        for metric in dict.fromkeys(r["metric"] for r in chosen):
            cells = {r["model"]: estimate_ci(r["estimate"], r["ci_low"], r["ci_high"]) for r in chosen
                     if r["metric"] == metric}
            table[label(metric)] = [cells.get(model, "") for model in table["model"]]
        print_table(table, title=f"{summary.get('experiment')}: {summary.get('outcome')}, {kind} models pooled over "
                                 "held-out trials (95% CI)", keys=["model"])


def describe_views(described: Any) -> list[tuple[str, Any]]:
    """The per-trial description as narrow tables: participants, baseline profile, study traits.

    Baseline means that are 0 with SD 1 in every trial (scores standardised within trial) say nothing and are
    left out, with a note pointing at the harmonisation report's raw-scale table."""
    import pandas as pd

    from mbi_predict.data.schema import STUDY_TRAITS

    d = described
    people = pd.DataFrame({"trial": d["trial_id"], "n": d["n"], "MBI": d["n_mbi"], "passive": d["n_passive"],
                           "active": d["n_active"],
                           "outcome %": (100 * d["outcome_coverage"]).round(0) if "outcome_coverage" in d else None})
    profile = pd.DataFrame({"trial": d["trial_id"]})
    mean, sd = d.get("mean_baseline_distress"), d.get("sd_baseline_distress")
    standardised = mean is not None and sd is not None and bool(
        ((mean.abs() < 1e-6) | mean.isna()).all() and (((sd - 1).abs() < 1e-6) | sd.isna()).all())
    if mean is not None and not standardised:
        profile["distress mean"], profile["SD"] = mean.round(2), sd.round(2)
    for source, name in (("pct_female", "female %"), ("median_age", "median age"), ("pct_tertiary", "tertiary %")):
        if source in d:
            profile[name] = d[source].round(0)
    traits = [t for t in STUDY_TRAITS if t in d.columns]
    views = [("participants (outcome %: with the 1-6 month distress outcome)", people),
             ("baseline profile" + (" (baseline scores are standardised within trial: raw-scale means are in "
                                    "the harmonisation report)" if standardised else ""), profile)]
    if traits:
        study = d[["trial_id", *traits]].rename(columns={"trial_id": "trial"})
        views.append(("study traits", study.rename(columns={t: t.replace("_", " ") for t in traits})))
    return views
