"""Stage "final models": every model refitted (and re-tuned, with trial-grouped inner folds) on all analysed
trials, the model a user would deploy; its expected performance in a new trial is what the leave-one-trial-out
metrics estimate.

Contract: `jobs` declares one run-level job per model (`validate.loto.fit_final_model`, seeded by
`derive_seed(seed, model, "final")`) when final models are asked for (today: when the run is tracked with
``tracking.log_final_models``, the only sink that uses them); `build` returns ``{model: FittedModel}`` (in memory)
and `final_model_params` the tuned parameters the summary records beside each logged final model.
"""

from __future__ import annotations

from typing import Any

from mbi_predict.config import ExperimentConfig
from mbi_predict.pipeline.batch import BatchOutputs, Job
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import FittedModel, PreparedData, fit_final_model

STAGE = "final"


def _fit(config: ExperimentConfig, name: str, data: PreparedData) -> FittedModel:
    return fit_final_model(config, config.model(name), data)


def wanted(config: ExperimentConfig, tracked: bool) -> bool:
    """Whether the run fits final models: only a tracked run logs them (``tracking.log_final_models``)."""
    return bool(tracked and config.tracking.log_final_models)


def jobs(inputs: RunInputs, *, fit: bool) -> list[Job]:
    if not fit:
        return []
    return [Job(STAGE, spec.name, _fit, (inputs.config, spec.name, inputs.data)) for spec in inputs.config.models]


def build(outputs: BatchOutputs) -> dict[str, FittedModel] | None:
    """{model: FittedModel}, or None when no final model was fitted."""
    return dict(outputs.of(STAGE)) or None


def final_model_params(fitted: FittedModel) -> dict[str, Any]:
    """The hyper-parameters tuned on all trials (empty when the model was not tuned)."""
    return fitted.tuned
