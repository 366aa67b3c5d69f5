"""Stage "subgroups": who benefits and who may be harmed, per effect model, from the held-out trials' fold results.

Pure functions of the fold results (no jobs of their own: the group effects, harm and treatment rules are computed
inside the fold jobs by `validate.groups` and summarised here):
* `groups_block` - ``gates``, ``harm`` and ``policy`` (`validate.groups_summary.groups_block`: group effects by
  predicted benefit, the predicted-harm group, the readable treatment rule), for a continuous outcome;
* `risk_harm_block` - ``harm`` for a 0/1 worsening outcome from predicted risks under each arm;
* `calibration_for_benefit` - the pooled calibration-for-benefit table;
* `harm_flagged` - the run-level flag (Holm over the effect models' harm p-values).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig, ModelConfig
from mbi_predict.validate.benefit import calibration_for_benefit_table
from mbi_predict.validate.groups import rule_frame
from mbi_predict.validate.groups_summary import groups_block as _groups_summary
from mbi_predict.validate.groups_summary import harm_flagged as _harm_flagged
from mbi_predict.validate.loto import FoldResult, PreparedData
from mbi_predict.validate.verdict_null import VerdictCalibration

#: pooled metrics of the predicted-harm block (0/1 worsening outcomes)
RISK_HARM_METRICS = ("share_predicted_harmed", "mean_predicted_risk_difference", "observed_effect_predicted_harmed",
                     "observed_effect_predicted_not_harmed")


def has_groups(results: list[FoldResult]) -> bool:
    return any("harmed" in r.extras for r in results)


def groups_block(config: ExperimentConfig, spec: ModelConfig, block: dict, forest: dict, results: list[FoldResult],
                 calibration: VerdictCalibration | None, data: PreparedData) -> dict[str, Any]:
    """gates, harm and policy of one effect model (`validate.groups_summary.groups_block`)."""
    rows = np.concatenate([r.test_rows for r in results if "harmed" in r.extras])
    traits, _ = rule_frame(data.X.iloc[rows], list(data.covariates))
    null = calibration.null.get(spec.name) if calibration is not None else None
    return _groups_summary(config, spec.name, block["pooled"], forest, null, results, traits)


def risk_harm_block(block: dict, results: list[FoldResult]) -> dict[str, Any] | None:
    """Predicted harm from predicted risks (0/1 worsening outcomes and models with ``predict_risk``), else None."""
    harms = {r.held_out: r.extras["harm"] for r in results if "harm" in r.extras}
    if not harms:
        return None
    return {
        "per_trial": [{"trial_id": k, **v} for k, v in harms.items()],
        "pooled_share_predicted_harmed": block["pooled"].get("share_predicted_harmed"),
        "pooled": {m: block["pooled"][m] for m in RISK_HARM_METRICS if m in block["pooled"]},
        "note": "predicted harmed: predicted risk under MBI above the risk under control; observed effects are "
                "each held-out trial's doubly robust risk differences within the predicted groups",
    }


def benefit_inputs(results: list[FoldResult]) -> dict[str, Any]:
    """The held-out DR pseudo-outcomes, predicted effects and trials of the scored rows (in memory only)."""
    pseudo = [r.extras["pseudo"] for r in results if "pseudo" in r.extras]
    cate = [r.extras["cate_scored"] for r in results if "pseudo" in r.extras]
    trial = [np.full(len(r.extras["pseudo"]), r.held_out) for r in results if "pseudo" in r.extras]
    cat = (lambda parts: np.concatenate(parts) if parts else np.array([]))
    return {"pseudo": cat(pseudo), "cate": cat(cate), "trial": cat(trial)}


def calibration_for_benefit(results: list[FoldResult]) -> list[dict] | None:
    """The pooled calibration-for-benefit table (None with fewer than 10 scored participants)."""
    benefit = benefit_inputs(results)
    if len(benefit["pseudo"]) < 10:
        return None
    table = calibration_for_benefit_table(benefit["pseudo"], benefit["cate"])
    return json.loads(table.to_json(orient="records"))


def harm_flagged(config: ExperimentConfig, models: dict[str, dict]) -> dict[str, Any] | None:
    """The run-level harm flag, when some effect model has a predicted-harm group effect (else None)."""
    if not any(block.get("harm", {}).get("group_effect") is not None for block in models.values()):
        return None
    return _harm_flagged({n: b for n, b in models.items() if "gates" in b}, config.heterogeneity.alpha)
