"""Stage "interactions": the classical within-trial arm x covariate interactions (`meta.interactions`) on the
analysis data, for the heterogeneity verdict (role per ``heterogeneity.interaction_role``) and beside the SHAP
rankings. Only for runs with effect models.

Contract: `jobs` declares one run-level job (`classical_interactions`, a plain function of the config, the analysed
trials' table and the prepared data); `build` returns its output, the summary's ``classical_interactions`` block
(None without effect models). `interaction_pvalues` reads the block for the verdict.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.config import ExperimentConfig
from mbi_predict.errors import MBIError
from mbi_predict.meta import interactions
from mbi_predict.pipeline.batch import BatchOutputs, Job
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import PreparedData

STAGE = "interactions"


def continuous_modifiers(config: ExperimentConfig, data: PreparedData) -> list[str]:
    """The model's continuous participant-level covariates (study-level traits do not vary within a trial, so no
    within-trial interaction can be estimated for them)."""
    traits = set(config.study_traits)
    return [c for c in data.covariates if c not in traits and pd.api.types.is_numeric_dtype(data.X[c])
            and data.X[c].nunique() > 2]


def analysed_frame(inputs: RunInputs) -> pd.DataFrame:
    """The IPD rows of the analysed trials (every arm: the interaction models pick the comparison's own rows)."""
    frame = inputs.frame
    return frame[frame["trial_id"].astype(str).isin(set(inputs.data.trial))]


def classical_interactions(config: ExperimentConfig, frame: pd.DataFrame, data: PreparedData) -> dict | None:
    """Within-trial arm x covariate interactions on the analysis data, each pooled by REML."""
    if not any(m.kind == "effect" for m in config.models):
        return None
    modifiers = continuous_modifiers(config, data)
    out: dict[str, Any] = {"modifiers": modifiers, "control": data.control_type, "records": [], "note": None,
                           "method": ("within-trial interactions, all modifiers in one model per trial, each pooled "
                                      "by REML (Riley et al. 2020, Stat Med)"
                                      if config.heterogeneity.interaction_model == "joint" else
                                      "within-trial interaction, one modifier at a time, pooled by REML "
                                      "(Riley et al. 2020, Stat Med)")}
    if not modifiers:
        out["note"] = "no continuous participant-level covariate"
        return out
    try:
        analysed = frame[frame["trial_id"].astype(str).isin(set(data.trial))]
        records = interactions(analysed, config.outcome, modifiers, control=data.control_type, seed=config.seed,
                               joint=config.heterogeneity.interaction_model == "joint")
    except (MBIError, ValueError) as exc:
        out["note"] = f"not estimated: {exc}"
        return out
    out["records"] = json.loads(json.dumps(records, default=_json_default))
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def jobs(inputs: RunInputs) -> list[Job]:
    if not any(m.kind == "effect" for m in inputs.config.models):
        return []
    return [Job(STAGE, None, classical_interactions, (inputs.config, analysed_frame(inputs), inputs.data))]


def build(outputs: BatchOutputs) -> dict | None:
    return outputs.one(STAGE)


def interaction_pvalues(block: dict | None) -> dict[str, float]:
    """{modifier: p-value} of the estimated interactions (finite p-values only)."""
    if not block:
        return {}
    return {str(r["modifier"]): float(r["pvalue"]) for r in block["records"]
            if r.get("pvalue") is not None and np.isfinite(float(r["pvalue"]))}
