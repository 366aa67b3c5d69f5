"""Stage "explanations": SHAP rankings per model, across held-out trials, and for effect models the within-trial
permutation null that says which covariates really predict who benefits.

The per-fold SHAP runs inside the fold jobs (the folds stage gives them `explain.run.explain_fold`). This stage
declares the permutation-null refits as run-level jobs (`jobs`: B + 1 refits per explained effect model,
`explain.run.null_tasks`), collects them (`build`: ``({model: NullReference}, {model: seconds})``) and builds each
explained model's ``shap`` block (`shap_block`, aggregates only) and its stability table for the figures.
`explain_models` re-runs just this stage for ``mbi-predict explain --recompute`` (`cli.explain_run`), drawing the
SHAP figures in the config's ``figures:`` format and resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict import figstyle
from mbi_predict.config import ExperimentConfig, ModelConfig, parse_config
from mbi_predict.explain.run import (_run_null_task, explain_fold, null_reference_from_outputs, null_references,
                                     null_tasks, shap_plots)
from mbi_predict.explain.run import shap_block as _shap_block
from mbi_predict.pipeline.batch import BatchOutputs, Job, execution
from mbi_predict.pipeline.folds import group_by_model
from mbi_predict.pipeline.interactions import classical_interactions
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import FoldPlan, FoldResult, PreparedData, make_jobs, run_jobs

STAGE = "null"


def explained_effect_models(config: ExperimentConfig) -> list[ModelConfig]:
    return [m for m in config.models if m.kind == "effect" and config.explain_settings(m.name).enabled]


def jobs(inputs: RunInputs) -> list[Job]:
    """The permutation-null refits of the explained effect models (a UserWarning when null_B cannot reach 0.05)."""
    if not explained_effect_models(inputs.config):
        return []
    return [Job(STAGE, i, _run_null_task, (task,)) for i, task in enumerate(null_tasks(inputs.config, inputs.data))]


def build(outputs: BatchOutputs) -> tuple[dict[str, Any], dict[str, float]]:
    """({model: NullReference}, {model: seconds spent on its null refits})."""
    null_outputs = [output for _, output in outputs.of(STAGE)]
    return null_reference_from_outputs(null_outputs) if null_outputs else ({}, {})


def shap_block(config: ExperimentConfig, spec: ModelConfig, results: list[FoldResult], null_ref,
               interactions: dict | None) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One model's ``shap`` block (aggregates) and stability table (`explain.run.shap_block`)."""
    return _shap_block(spec.kind, results, settings=config.explain_settings(spec.name), null_ref=null_ref,
                       interactions=None if interactions is None else interactions["records"],
                       level=config.validation.level, method="REML")


def explain_config(config: ExperimentConfig) -> ExperimentConfig:
    """The config with SHAP switched on (its own settings kept) for recomputing a run's explain step."""
    dumped = config.model_dump(mode="json")
    dumped["explain"] = {**dumped["explain"], "enabled": True}
    for model in dumped["models"]:
        if model.get("explain"):
            model["explain"] = {**model["explain"], "enabled": True}
    return parse_config(dumped)


def _null_references(config: ExperimentConfig, data: PreparedData, n_jobs: int) -> tuple[dict, dict]:
    if not explained_effect_models(config):
        return {}, {}
    return null_references(config, data, n_jobs=n_jobs)


def explain_models(config: ExperimentConfig, frame: pd.DataFrame, data: PreparedData, plan: FoldPlan,
                   plots_dir: Path, style: figstyle.FigureSettings | None = None
                   ) -> tuple[dict[str, tuple[dict, float]], list[Path]]:
    """Refit every fold model with SHAP on (the run's seeds) and rebuild the shap blocks and SHAP plots only:
    ``({model: (shap block, shap seconds)}, plot paths)``; the plots in ``style`` (default: the config's
    ``figures:`` block)."""
    style = style or figstyle.from_config(config)
    fold_jobs = make_jobs(config, plan, explainer=explain_fold)
    with execution(config) as n_jobs:
        fold_results = run_jobs(fold_jobs, data, n_jobs=n_jobs)
        null_refs, null_seconds = _null_references(config, data, n_jobs)
    by_model = group_by_model(config, fold_results)
    interactions = classical_interactions(config, frame, data)
    blocks, tables = {}, {}
    for spec in config.models:
        shap, tables[spec.name] = shap_block(config, spec, by_model[spec.name], null_refs.get(spec.name),
                                             interactions)
        seconds = sum(r.timing.get("shap_seconds", 0.0) for r in by_model[spec.name]) + null_seconds.get(spec.name,
                                                                                                         0.0)
        blocks[spec.name] = (shap, float(seconds))
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in config.models:
        if spec.name in tables:
            written += shap_plots(plots_dir, spec.name, spec.kind, by_model[spec.name], tables[spec.name],
                                  settings=config.explain_settings(spec.name), null_ref=null_refs.get(spec.name),
                                  data=data, style=style)
    return blocks, written
