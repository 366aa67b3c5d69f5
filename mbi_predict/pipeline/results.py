"""The finished results of a run, built as a pure function of the stages' outputs (`build_results`).

Each stage owns its block of the summary:

=======================  ==========================================================================================
stage (module)           block(s)
=======================  ==========================================================================================
load                     ``data`` (provenance), ``validation`` (the fold plan), ``config``, ``covariates`` ...
folds                    ``models.<m>``: task, estimator, features, per_trial, pooled, timing, best_params, tuning;
                         prognostic models: ``subgroups``
reference                ``comparison_to_reference``
interactions             ``classical_interactions``; ``models.<m>.heterogeneity.interactions``
projection               ``best_linear_projection``
average_effect           ``models.<m>.ate_clustered`` (effect models)
heterogeneity            ``models.<m>.heterogeneity`` (effect models); ``heterogeneity`` (the run's verdict)
subgroups                ``models.<m>.gates / harm / policy / calibration_for_benefit``; ``harm_flagged``
explanations             ``models.<m>.shap`` (+ the permutation null's seconds in ``timing.shap_seconds``)
final_models             the fitted final models (in memory; their URIs and params are added by the tracker)
=======================  ==========================================================================================

`FinishedRun` holds the summary and what the sinks need in memory (fold results, forest-plot inputs, SHAP tables,
null references, final models). Sinks read it and never write into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.pipeline import average_effect, explanations, final_models, heterogeneity, interactions, projection
from mbi_predict.pipeline import folds as fold_stage
from mbi_predict.pipeline import subgroups
from mbi_predict.pipeline.batch import BatchOutputs
from mbi_predict.pipeline.folds import FoldOutputs
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.pipeline.reference import comparison_to_reference
from mbi_predict.pipeline.summary import CodeProvenance, summary_header
from mbi_predict.validate.loto import FittedModel, FoldResult, PreparedData
from mbi_predict.validate.verdict_null import VerdictCalibration


@dataclass(frozen=True)
class FinishedRun:
    """A finished run: the summary (what summary.json holds, before tracking) and the in-memory inputs of the
    sinks."""

    summary: dict[str, Any]
    inputs: RunInputs
    folds: FoldOutputs
    forests: dict[str, dict]                      # model -> metric -> forest-plot inputs
    shap_tables: dict[str, pd.DataFrame | None]   # explained models' stability tables
    null_refs: dict[str, Any]                     # effect model -> permutation-null reference
    final_models: dict[str, FittedModel] | None


def effect_blocks(config: ExperimentConfig, spec: ModelConfig, block: dict, forest: dict, results: list[FoldResult],
                  interactions_block: dict | None, ate_clustered: dict | None,
                  calibration: VerdictCalibration | None, data: PreparedData) -> dict[str, Any]:
    """ate_clustered, gates/harm/policy, the heterogeneity verdict, risk harm and the pooled calibration-for-benefit
    table of one effect model."""
    out: dict[str, Any] = {"ate_clustered": ate_clustered}
    verdict = heterogeneity.model_verdict(config, spec, block, forest, interactions_block, calibration)
    if subgroups.has_groups(results):
        out.update(subgroups.groups_block(config, spec, block, forest, results, calibration, data))
    verdict["interactions"] = None if interactions_block is None else interactions_block["records"]
    out["heterogeneity"] = verdict
    harm = subgroups.risk_harm_block(block, results)
    if harm is not None:
        out["harm"] = harm
    table = subgroups.calibration_for_benefit(results)
    if table is not None:
        out["calibration_for_benefit"] = table
    return out


def build_results(inputs: RunInputs, folds: FoldOutputs, batch: BatchOutputs,
                  calibration: VerdictCalibration | None, code: CodeProvenance) -> FinishedRun:
    """Every stage's block from the fold results, the run-level batch and the verdict's calibration."""
    config, data = inputs.config, inputs.data
    null_refs, null_seconds = explanations.build(batch)
    interactions_block, ate = interactions.build(batch), average_effect.build(batch)
    models: dict[str, dict] = {}
    forests: dict[str, dict] = {}
    shap_tables: dict[str, pd.DataFrame | None] = {}
    for spec in config.models:
        results = folds.by_model[spec.name]
        block, forests[spec.name] = fold_stage.model_block(spec, results, config, data)
        if spec.kind == "prognostic":
            block["subgroups"] = fold_stage.subgroups(results, data)
        else:
            block["higher_is_better"] = not data.outcome_higher_is_worse
            block.update(effect_blocks(config, spec, block, forests[spec.name], results, interactions_block, ate,
                                       calibration, data))
        if config.explain_settings(spec.name).enabled:
            block["shap"], shap_tables[spec.name] = explanations.shap_block(config, spec, results,
                                                                            null_refs.get(spec.name),
                                                                            interactions_block)
            block["timing"]["shap_seconds"] += null_seconds.get(spec.name, 0.0)
        models[spec.name] = block
    summary = summary_header(inputs, models, code)
    summary["comparison_to_reference"] = comparison_to_reference(config, folds.by_model, data, models)
    if interactions_block is not None:
        summary["classical_interactions"] = interactions_block
    blp = projection.build(batch)
    if blp is not None:
        summary["best_linear_projection"] = blp
    if calibration is not None:
        summary["heterogeneity"] = heterogeneity.run_level_verdict(config, models, calibration)
    flagged = subgroups.harm_flagged(config, models)
    if flagged is not None:
        summary["harm_flagged"] = flagged
    return FinishedRun(summary, inputs, folds, forests, shap_tables, null_refs, final_models.build(batch))
