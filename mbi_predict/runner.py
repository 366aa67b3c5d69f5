"""Compatibility: the run now lives in `mbi_predict.pipeline` (one module per stage, `pipeline.run` composes them).

This module re-exports what code written against the one-module runner imports: `run_experiment` and `RunResult`
(`pipeline.run`), the loading helpers (`pipeline.load`), the comparison to the reference model
(`pipeline.reference`), the explain step for ``mbi-predict explain --recompute`` (`pipeline.explanations`) and
`execution` (`pipeline.batch`: the fold jobs' backend, `mbi_predict.parallel.execution_backend`).
"""

from __future__ import annotations

from typing import Any

from mbi_predict.pipeline.batch import execution
from mbi_predict.pipeline.explanations import explain_config, explain_models
from mbi_predict.pipeline.load import (IN_MEMORY, canonical_sha256, harmonisation_facts, load_data,
                                       load_data_with_truth, load_prepared, missingness_facts, read_truth)
from mbi_predict.pipeline.projection import projection_covariates
from mbi_predict.pipeline.reference import comparison_to_reference, hash_seed
from mbi_predict.pipeline.run import RunResult, run_experiment
from mbi_predict.validate.loto import derive_seed

__all__ = ["IN_MEMORY", "RunResult", "canonical_sha256", "comparison_to_reference", "derive_seed_for", "execution",
           "explain_config", "explain_models", "harmonisation_facts", "hash_seed", "load_data", "load_data_with_truth",
           "load_prepared", "missingness_facts", "projection_covariates", "read_truth", "run_experiment"]


def derive_seed_for(seed: int, *parts: Any) -> int:
    """`validate.loto.derive_seed` (kept for older callers)."""
    return derive_seed(seed, *parts)
