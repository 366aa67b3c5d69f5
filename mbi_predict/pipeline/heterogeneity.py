"""Stage "heterogeneity": the pre-declared verdict on whether the effect models find who benefits.

Its jobs are the verdict's dependence-aware calibration (`validate.verdict_null.calibrate_run`): the whole
leave-one-trial-out validation repeated on ``heterogeneity.null_B`` constant-effect draws, as one parallel batch of
light fold jobs. From the calibration and the pooled metrics it builds, as pure functions, each effect model's
``heterogeneity`` block (`model_verdict`: permutation-calibrated, else ``not_tested`` with the naive tests shown for
information) and the run's one verdict, the summary's ``heterogeneity`` block (`run_level_verdict`).
"""

from __future__ import annotations

from typing import Any

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.pipeline.interactions import interaction_pvalues
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.pipeline.progress import Progress
from mbi_predict.validate.heterogeneity import heterogeneity_verdict, run_verdict
from mbi_predict.validate.verdict_null import METHOD as VERDICT_NULL_METHOD
from mbi_predict.validate.verdict_null import (VerdictCalibration, calibrate, calibrate_run, null_refits,
                                               observed_statistic)


def calibration(inputs: RunInputs, n_jobs: int, progress: bool = False) -> VerdictCalibration | None:
    """The stage's jobs: the permutation calibration the config's rule asks for (None without effect models), with
    a progress bar over its refits (often the longest stage of a run)."""
    models, B = null_refits(inputs.config, inputs.data, inputs.plan)
    with Progress(progress and B > 0, B * len(models) * len(inputs.plan.folds),
                  label="verdict calibration: null refits") as bar:
        return calibrate_run(inputs.config, inputs.data, inputs.plan, n_jobs=n_jobs, on_result=bar.advance)


def verdict_inputs(pooled: dict, forest: dict) -> dict[str, dict]:
    """Pooled metrics with the pooled SE and degrees of freedom (HKSJ: k - 1) the verdict's tests need."""
    entries = {}
    for metric, entry in pooled.items():
        result = forest.get(metric, {}).get("pooled")
        extra = {}
        if result is not None and entry.get("scale") == "identity":
            extra = {"se": float(result.se), "df": float(result.df)}
        if entry.get("estimate") is not None:
            entries[metric] = {**entry, **extra}
    return entries


def model_verdict(config: ExperimentConfig, spec: ModelConfig, block: dict, forest: dict, interactions: dict | None,
                  calibration: VerdictCalibration | None) -> dict[str, Any]:
    """One effect model's verdict: permutation-calibrated when the run calibrated this model, else ``not_tested``
    with the naive (independent held-out trials) tests kept for information."""
    entries = verdict_inputs(block["pooled"], forest)
    rule = config.heterogeneity
    needed = [rule.rate_metric] + ([rule.slope_metric] if rule.require_calibration_slope else [])
    if not all(m in entries for m in needed):
        return {"verdict": "no_evidence", "tests": [], "rule": rule.model_dump(), "p_value": 1.0,
                "beats_constant": None, "method": "none", "calibration": None,
                "reason": f"not shown: pooled {', '.join(m for m in needed if m not in entries)} not estimable"}
    interaction_p = interaction_pvalues(interactions) or None
    null = calibration.null.get(spec.name) if calibration is not None else None
    calibrated = None
    if null is not None:
        naive = heterogeneity_verdict(entries, rule=rule, interaction_pvalues=interaction_p)
        naive_p = {t["metric"]: t["p_value"] for t in naive["tests"] if t.get("p_value") is not None}
        calibrated = {metric: calibrate(metric, observed_statistic(config, forest, metric), null[metric],
                                        naive_p.get(metric, float("nan"))).to_dict() for metric in needed}
    verdict = heterogeneity_verdict(entries, rule=rule, interaction_pvalues=interaction_p, calibrated=calibrated)
    verdict["calibration"] = None if calibrated is None else {"B": rule.null_B, "tests": calibrated,
                                                              "method": VERDICT_NULL_METHOD}
    if calibrated is None:
        verdict["naive_verdict"] = verdict["verdict"]
        verdict["verdict"] = "not_tested"
        verdict["reason"] = (calibration.not_calibrated_reason(spec.name) if calibration is not None else
                             "no effect models calibrated") + "; naive p-values shown for information only"
    return verdict


def run_level_verdict(config: ExperimentConfig, models: dict, calibration: VerdictCalibration) -> dict[str, Any]:
    """The run's one heterogeneity verdict (``validate.heterogeneity.run_verdict``) from the per-model blocks."""
    per_model = {name: block["heterogeneity"] for name, block in models.items() if block.get("heterogeneity")}
    return run_verdict(per_model, rule=config.heterogeneity, run_rule=calibration.run_rule,
                       primary=calibration.primary, method=calibration.method,
                       not_tested_reason=calibration.not_tested)
