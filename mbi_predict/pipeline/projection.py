"""Stage "best linear projection": the effect projected on chosen covariates (`validate.projection`),
trial-clustered; for runs with effect models and a continuous outcome.

Contract: `jobs` declares one run-level job; `build` returns the summary's ``best_linear_projection`` block (None
when not run; a ``note`` when it cannot be estimated). Seeded by `derive_seed(seed, "blp")`.
"""

from __future__ import annotations

from typing import Any

from mbi_predict.config import ExperimentConfig
from mbi_predict.errors import MBIError
from mbi_predict.pipeline.batch import BatchOutputs, Job
from mbi_predict.pipeline.interactions import continuous_modifiers
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import PreparedData, derive_seed
from mbi_predict.validate.projection import best_linear_projection

STAGE = "projection"


def projection_covariates(config: ExperimentConfig, data: PreparedData) -> list[str]:
    """The covariates of the best linear projection: the config's ``who_benefits.projection``, else the continuous
    participant-level covariates (as for the classical interactions)."""
    return list(config.who_benefits.projection) if config.who_benefits.projection is not None else \
        continuous_modifiers(config, data)


def projection(config: ExperimentConfig, data: PreparedData) -> dict[str, Any]:
    """The best linear projection block (a plain function of its inputs, so it can run as a parallel job)."""
    covariates = projection_covariates(config, data)
    if not covariates:
        return {"note": "not estimated: no continuous participant-level covariate"}
    try:
        result = best_linear_projection(data.X[list(data.covariates)], data.y, data.arm, data.trial,
                                        covariates=covariates, level=config.validation.level,
                                        seed=derive_seed(config.seed, "blp"))
    except (MBIError, ValueError) as exc:
        return {"note": f"not estimated: {exc}"}
    return result.to_dict()


def jobs(inputs: RunInputs) -> list[Job]:
    if not any(m.kind == "effect" for m in inputs.config.models) or inputs.data.task != "continuous":
        return []
    return [Job(STAGE, None, projection, (inputs.config, inputs.data))]


def build(outputs: BatchOutputs) -> dict[str, Any] | None:
    return outputs.one(STAGE)
