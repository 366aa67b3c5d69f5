"""`explain_run`: the SHAP rankings and figures of a finished run, as ``mbi-predict explain`` shows them, stored or
recomputed.

Why here, in the CLI layer, and not in `mbi_predict.explain`: this reads a finished run (a run folder or an MLflow
run, through `report.card_source`) and, with ``recompute=True``, re-runs the pipeline's explanations stage
(`pipeline.explanations.explain_models`) from the run's own config. Both sit above the explain layer, which only
computes SHAP and draws it (`explain.run`). Recomputed figures follow the run's ``figures:`` block.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from mbi_predict.errors import ConfigError


def _select(summary: dict, model: str | None, features: list[str] | None) -> dict[str, Any]:
    from mbi_predict.explain.explanation import check_features

    models = summary["models"]
    if model is not None and model not in models:
        raise ConfigError(f"model {model!r} is not in this run; it has {sorted(models)}")
    chosen = [model] if model is not None else list(models)
    out = {}
    for name in chosen:
        shap = models[name].get("shap")
        if shap is None:
            out[name] = {"ranking": [], "note": "no SHAP in this run (explain.enabled was false); use recompute"}
            continue
        ranking = shap.get("ranking", [])
        if features is not None:
            check_features(list(features), [r["feature"] for r in ranking] or models[name].get("features", []))
            ranking = [r for r in ranking if r["feature"] in set(features)]
        out[name] = {**shap, "ranking": ranking}
    return out


def explain_run(run: str | Path, *, tracking_uri: str | None = None, recompute: bool = False,
                out_dir: str | Path | None = None, model: str | None = None,
                features: list[str] | None = None) -> dict[str, Any]:
    """The stored SHAP rankings (and plot paths) of a finished run: a run folder holding summary.json, or an MLflow
    run id. ``recompute=True`` re-runs the explain step from the run's own config (data re-loaded, fold models
    refitted with the run's seeds) and replaces the run's ``shap`` blocks and SHAP plots atomically (in the run folder,
    or for an MLflow run in ``out_dir``, default ``runs/<experiment>/explain-<run id>``). ``model``/``features``
    restrict what is returned (ConfigError when the run or the model does not have them).
    """
    from mbi_predict.report.card_source import load_summary

    loaded = load_summary(run, tracking_uri=tracking_uri, with_plots=not recompute)
    summary = loaded.summary
    folder = Path(str(run)) if Path(str(run)).is_dir() else None
    if recompute:
        target = folder if folder is not None and out_dir is None else Path(
            out_dir or Path("runs") / summary.get("experiment", "run") / f"explain-{run}")
        from mbi_predict.io import sigterm_interrupts

        with sigterm_interrupts():  # SIGTERM, like Ctrl-C, unwinds: the staging folder is removed on the way out
            summary, plot_paths = _recompute(summary, target)
    else:
        target = folder
        plot_paths = [Path(p) for p in loaded.plots]
        if folder is None and out_dir is not None and loaded.plots:
            target = Path(out_dir)
            (target / "plots").mkdir(parents=True, exist_ok=True)
            for rel, content in loaded.plots.items():
                (target / rel).write_bytes(content)
    shap_plots_by_model = {}
    for name in summary["models"]:
        own = [str((target / p) if target is not None and not Path(p).is_absolute() else p) for p in plot_paths
               if Path(p).name.startswith("shap_") and f"_{name}_" in f"_{Path(p).stem}_"]
        shap_plots_by_model[name] = sorted(own)
    selected = _select(summary, model, features)
    for name, block in selected.items():
        block["plots"] = shap_plots_by_model.get(name, [])
    return {"run": str(run), "mlflow_run_id": summary.get("mlflow_run_id"), "recomputed": bool(recompute),
            "summary_path": None if target is None else str(target / "summary.json"), "models": selected,
            "shap_seconds": {name: (summary["models"][name].get("timing") or {}).get("shap_seconds")
                             for name in selected}}


def _recompute(summary: dict, target: Path) -> tuple[dict, list[Path]]:
    """Refit the fold models of the run's config with SHAP on; replace shap blocks, SHAP plots and timings."""
    from mbi_predict.config import parse_config
    from mbi_predict.io import deferred_interrupts, remove_stale_staging, staging_prefix, write_json_atomic
    from mbi_predict.pipeline.explanations import explain_config, explain_models
    from mbi_predict.pipeline.load import load_prepared

    config = explain_config(parse_config(summary["config"]))
    frame, prepared, plan, _ = load_prepared(config)
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)  # what a SIGKILLed recompute left
    staging: Path | None = None
    try:
        with deferred_interrupts():  # created and bound as one step, so the finally below always removes it
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=target))
        blocks, plot_paths = explain_models(config, frame, prepared, plan, staging / "plots")
        for name, (shap, seconds) in blocks.items():
            if name in summary["models"]:
                summary["models"][name]["shap"] = shap
                summary["models"][name].setdefault("timing", {})["shap_seconds"] = seconds
        (target / "plots").mkdir(exist_ok=True)
        final = []
        for path in plot_paths:  # plots first, summary last: a reader never sees a summary without its plots
            destination = target / "plots" / path.name
            path.replace(destination)
            final.append(destination)
        write_json_atomic(target / "summary.json", summary)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return summary, final
