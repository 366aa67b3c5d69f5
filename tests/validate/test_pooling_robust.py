"""pool_metric: a failure inside pooling names model, metric and trials in one line; fallbacks are reported."""

from __future__ import annotations

import numpy as np
import pytest

import mbi_predict.meta.tau2 as tau2_module
import mbi_predict.validate.pooling as pooling
from mbi_predict.errors import MBIError
from mbi_predict.validate.pooling import pool_metric


def test_failure_names_model_metric_and_trials():
    with pytest.raises(MBIError) as info:
        pool_metric("rate_autoc", [0.1, 0.2, 0.15], [0.01, 0.02, 0.01], ["T01", "T02", "T03"], method="BOGUS",
                    model="x_learner")
    message = str(info.value)
    assert message.startswith("pooling rate_autoc of model x_learner over trials T01, T02, T03: ")
    assert "unknown pooling method" in message and "\n" not in message


def test_any_exception_inside_pooling_is_wrapped(monkeypatch):
    def broken(*args, **kwargs):
        raise np.linalg.LinAlgError("Singular matrix\nsecond line")

    monkeypatch.setattr(pooling, "_pool_function", lambda: broken)
    with pytest.raises(MBIError, match=r"^pooling rmse over trials A, B: Singular matrix second line$") as info:
        pool_metric("rmse", [1.0, 1.2], [0.1, 0.1], ["A", "B"])
    assert isinstance(info.value.__cause__, np.linalg.LinAlgError)


def test_non_finite_rows_are_still_excluded_not_errors():
    out, result = pool_metric("c_statistic", [0.6, 0.7, np.nan, 0.65], [0.02, np.inf, 0.03, 0.0],
                              ["A", "B", "C", "D"], model="m")
    assert out["k"] == 1 and out["excluded"] == ["B", "C", "D"] and result.k == 1
    empty, none = pool_metric("rmse", [np.nan], [np.nan], ["A"], model="m")
    assert none is None and empty["k"] == 0


def test_fisher_failure_is_not_fatal_and_is_said_in_the_note(monkeypatch):
    monkeypatch.setattr(tau2_module, "_MAX_ITER", 1)
    values = [0.10, 0.45, -0.20, 0.30, 0.05]
    variances = [0.01, 0.02, 0.015, 0.01, 0.03]
    out, result = pool_metric("rmse", values, variances, list("ABCDE"), model="m")
    assert result.tau2_solver == "brentq_fallback" and "Brent" in out["note"]
    monkeypatch.setattr(tau2_module, "_MAX_ITER", 1000)
    _, reference = pool_metric("rmse", values, variances, list("ABCDE"))
    assert result.tau2 == pytest.approx(reference.tau2, abs=1e-9) and reference.tau2_solver == "fisher_scoring"
