"""The run-level batch (`pipeline.batch`) and the fold jobs' explainer hook."""

from __future__ import annotations

import operator

import numpy as np
import pytest

from mbi_predict.errors import ConfigError
from mbi_predict.pipeline.batch import BatchOutputs, Job, run_batch


def _jobs() -> list[Job]:
    return [Job("final", "a", operator.add, (1, 2)), Job("null", 0, operator.mul, (2, 3)),
            Job("null", 1, operator.mul, (4, 5)), Job("interactions", None, operator.neg, (7,))]


def test_outputs_come_back_by_stage_in_declared_order_whatever_n_jobs():
    serial, parallel = run_batch(_jobs(), n_jobs=1), run_batch(_jobs(), n_jobs=2)
    assert serial == parallel
    assert serial.of("null") == [(0, 6), (1, 20)]
    assert serial.one("final") == 3 and serial.one("interactions") == -7
    assert serial.one("projection") is None and serial.of("projection") == []
    assert run_batch([], n_jobs=2) == BatchOutputs({})


def test_a_fold_job_asked_for_shap_without_an_explainer_is_a_config_error():
    from mbi_predict.config import ExplainConfig, ModelConfig
    from mbi_predict.validate.fold_fits import _fold_shap
    from mbi_predict.validate.loto import Fold, FoldJob

    job = FoldJob(ModelConfig(name="m", estimator="reference"), Fold("T1", np.arange(3), np.arange(3, 5)), 1,
                  explain=ExplainConfig(enabled=True))
    with pytest.raises(ConfigError, match="models.m.explain: SHAP in a fold job needs an explainer"):
        _fold_shap(job, None, None)
    assert _fold_shap(FoldJob(job.model, job.fold, 1), None, None) is None  # SHAP not asked for
