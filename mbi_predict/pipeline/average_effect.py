"""Stage "average effect": the doubly robust average effect over all analysed trials with trial-clustered
(CR1, t_{G-1}) inference, beside the naive independent-rows interval (`models.inference.trial_aware_ate`).

Contract: `jobs` declares one run-level job for runs with effect models; `build` returns the ``ate_clustered`` block
every effect model's summary block carries (a ``note`` instead of numbers when it cannot be estimated). Seeded by
`derive_seed(seed, "ate_clustered")`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig
from mbi_predict.errors import MBIError
from mbi_predict.models.inference import trial_aware_ate
from mbi_predict.models.preprocess import make_preprocessor
from mbi_predict.pipeline.batch import BatchOutputs, Job
from mbi_predict.pipeline.load import RunInputs
from mbi_predict.validate.loto import PreparedData, derive_seed

STAGE = "ate_clustered"


def ate_clustered(config: ExperimentConfig, data: PreparedData) -> dict[str, Any]:
    """The clustered average effect block (a plain function of its inputs, so it can run as a parallel job)."""
    observed = np.flatnonzero(np.isfinite(data.y))
    try:
        X = make_preprocessor(data.features, use_arm=False, seed=config.seed).fit_transform(data.X.iloc[observed])
        result = trial_aware_ate(data.y[observed], data.arm[observed], X, data.trial[observed],
                                 seed=derive_seed(config.seed, "ate_clustered"), alpha=1 - config.validation.level)
    except (MBIError, ValueError) as exc:
        return {"note": f"not estimated: {exc}"}
    return {"estimate": result["estimate"], "se": result["se"], "ci_low": result["ci_low"],
            "ci_high": result["ci_high"], "n_clusters": result["n_clusters"], "df": result["df"], "n": result["n"],
            "naive": {"se": result["naive_se"], "ci_low": result["naive_ci_low"], "ci_high": result["naive_ci_high"]},
            "note": "AIPW scores with the known randomisation ratio per trial, outcome models cross-fitted over "
                    "whole trials; SE cluster-robust by trial (naive: participants as independent)"}


def jobs(inputs: RunInputs) -> list[Job]:
    if not any(m.kind == "effect" for m in inputs.config.models):
        return []
    return [Job(STAGE, None, ate_clustered, (inputs.config, inputs.data))]


def build(outputs: BatchOutputs) -> dict[str, Any] | None:
    return outputs.one(STAGE)
