"""The family-wise permutation test of SHAP importances (explain.null): error rate, uniformity, sparse and unused
features, B too small to test, power, the constant-effect null outcome, and shap's own plots on an Explanation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from mbi_predict.explain import null_reference, permutation_null, ranking_records, stability
from mbi_predict.explain.null import constant_effect_outcome, null_draws, studentised

B = 19
ALPHA = 0.05


def wilson(k: int, n: int, z: float = 2.576) -> tuple[float, float]:
    """Wilson interval (99% by default: these tests should fail only for a real error)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _rows(matrix: np.ndarray, names: list[str]) -> tuple[dict, list[dict]]:
    observed = dict(zip(names, matrix[0].tolist()))
    return observed, [dict(zip(names, row.tolist())) for row in matrix[1:]]


def _null_matrix(rng, m: int = 8) -> np.ndarray:
    """B + 1 exchangeable rows: features on different scales, a skewed one, a sparse one, one never used."""
    scales = np.linspace(0.2, 3.0, m)
    matrix = rng.gamma(2.0, 1.0, size=(B + 1, m)) * scales
    matrix[:, 1] = rng.lognormal(0, 1.0, B + 1)               # heavy tail
    matrix[:, m - 2] *= rng.random(B + 1) < 0.15               # used by a sparse learner in ~15% of fits
    matrix[:, m - 1] = 0.0                                     # never used
    return matrix


def _test(matrix: np.ndarray, **kwargs):
    names = [f"x{j}" for j in range(matrix.shape[1])]
    return null_reference(*_rows(matrix, names), **kwargs)


def test_familywise_error_is_at_most_alpha_and_per_feature_p_are_uniform():
    rng = np.random.default_rng(2024)
    reps, any_declared, p_first = 1200, 0, []
    for _ in range(reps):
        ref = _test(_null_matrix(rng))
        any_declared += any(ref.beats_null.values())
        p_first.append(ref.pvalue["x0"])
        assert all(0 < p <= 1 for p in ref.pvalue_familywise.values())
        assert all(ref.pvalue_familywise[f] >= ref.pvalue[f] for f in ref.pvalue)
    low, _ = wilson(any_declared, reps)
    assert low <= ALPHA, f"family-wise error {any_declared / reps:.3f} exceeds {ALPHA}"
    # the per-feature p of a continuous feature is discrete uniform on {1, ..., B + 1} / (B + 1)
    counts = np.bincount(np.rint(np.array(p_first) * (B + 1)).astype(int) - 1, minlength=B + 1)
    assert stats.chisquare(counts).pvalue > 0.001
    low, high = wilson(int(np.sum(np.array(p_first) <= ALPHA + 1e-12)), reps)
    assert low <= ALPHA <= high


def test_unused_and_sparse_features_give_finite_statistics_and_no_false_declaration():
    zeros = np.zeros((B + 1, 3))
    zeros[0, 1] = 0.4                           # used in the observed fit only: strong, finite
    zeros[[3, 7], 2] = [0.5, 0.2]               # used in two null fits only
    ref = _test(zeros)
    assert all(math.isfinite(v) for v in ref.statistic.values())
    assert ref.pvalue["x0"] == 1.0 and ref.pvalue_familywise["x0"] == 1.0 and ref.beats_null["x0"] is False
    assert ref.pvalue["x1"] == pytest.approx(1 / (B + 1)) and ref.beats_null["x1"] is True
    assert ref.pvalue["x2"] == 1.0 and ref.beats_null["x2"] is False
    json.dumps(ref.to_dict(), allow_nan=False)   # JSON-safe: no inf, no NaN
    nothing = _test(np.zeros((B + 1, 2)))         # a model that uses nothing anywhere
    assert nothing.beats_null == {"x0": False, "x1": False} and set(nothing.pvalue_familywise.values()) == {1.0}
    # a sparse feature whose rare null use is large does not swamp a true signal on a dense feature
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(100):
        m = rng.gamma(4.0, 0.25, size=(B + 1, 6))
        m[:, 5] = np.where(rng.random(B + 1) < 0.1, rng.gamma(4.0, 0.25, B + 1), 0.0)  # rare, typical size
        m[0, 0] += 4.0
        hits += _test(m).beats_null["x0"]
    assert hits >= 90
    with pytest.raises(Exception, match="not finite"):
        _test(np.vstack([[np.nan, 1.0], np.ones((B, 2))]))


@pytest.mark.parametrize("b", [1, 3, 5, 18])
def test_too_few_permutations_are_not_tested_and_never_true(b):
    matrix = np.ones((b + 1, 3))
    matrix[0] = [100.0, 50.0, 1.0]
    with pytest.warns(UserWarning, match=f"B = {b} cannot reach alpha 0.05 family-wise \\(needs B >= 19\\): SHAP "
                                         "rankings reported as not tested"):
        ref = _test(matrix)
    assert ref.test_status == "not_tested" and all(v is None for v in ref.beats_null.values())
    summary = ref.to_dict()
    assert summary["test_status"] == "not_tested" and "needs B >= 19" in summary["reason"]
    assert all(r["beats_null"] is None for r in summary["features"])
    table = stability({"T1": ref.observed, "T2": ref.observed})
    records = ranking_records(table, ref)
    assert all(r["beats_null"] is None and r["null_status"] == "not_tested" for r in records)
    json.dumps(summary, allow_nan=False)


def test_alpha_decides_the_needed_B():
    matrix = np.vstack([[10.0, 1.0], np.random.default_rng(0).gamma(2, 0.5, (9, 2))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = _test(matrix, alpha=0.1)  # B = 9 reaches 0.1: no warning
    assert ref.test_status == "tested" and ref.beats_null["x0"] is True


def test_power_a_clear_shift_is_declared_with_B_19():
    rng = np.random.default_rng(11)
    declared, false = 0, 0
    for _ in range(200):
        matrix = rng.gamma(4.0, 0.25, size=(B + 1, 8)) * np.linspace(0.5, 2.0, 8)  # dense, scales differ 4-fold
        matrix[:, 7] *= rng.random(B + 1) < 0.2                                   # and one sparse feature
        matrix[0, 2] += 10 * 0.5 * np.linspace(0.5, 2.0, 8)[2]                    # a clear modifier: +10 null SD
        ref = _test(matrix)
        declared += ref.beats_null["x2"]
        false += any(v for f, v in ref.beats_null.items() if f != "x2")
    assert declared >= 190
    assert false / 200 <= 0.1   # the other features are still true nulls (partial null)


def test_studentisation_is_permutation_equivariant():
    rng = np.random.default_rng(3)
    matrix = _null_matrix(rng)
    order = rng.permutation(B + 1)
    np.testing.assert_allclose(studentised(matrix)[order], studentised(matrix[order]))


def test_constant_effect_null_keeps_each_trials_average_effect():
    rng = np.random.default_rng(8)
    groups = np.repeat(["A", "B"], [60, 40])
    T = np.r_[np.tile([0, 1], 30), np.tile([0, 1], 20)]
    Y = rng.normal(size=100) + np.where(groups == "A", 2.0, -1.0) * T
    draws = null_draws(T, groups, B=3, seed=4, Y=Y)
    tau = {g: Y[(groups == g) & (T == 1)].mean() - Y[(groups == g) & (T == 0)].mean() for g in ("A", "B")}
    tau_row = np.array([tau[g] for g in groups])
    for arm, y in draws:
        # the imputed no-MBI outcome Y0 = Y - tau_k T is the same in every draw; only the arm moves
        np.testing.assert_allclose(y - tau_row * arm, Y - tau_row * T)
        assert not np.array_equal(arm, T)
    np.testing.assert_allclose(constant_effect_outcome(Y, T, T, groups), Y)
    # binary outcomes are permuted plainly; the same seed gives the same draws
    assert all(y is None for _, y in null_draws(T, groups, B=2, seed=4, Y=(Y > 0).astype(float)))
    again = null_draws(T, groups, B=3, seed=4, Y=Y)
    assert all(np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1]) for a, b in zip(draws, again))
    calls = []

    def fit_and_explain(t, y=None):
        calls.append(y)
        return {"x": float(np.mean(t[:10])) if y is None else float(np.mean(y[:10]))}

    permutation_null(fit_and_explain, T, groups, B=B, seed=4, Y=Y)
    assert calls[0] is None and all(c is not None for c in calls[1:]) and len(calls) == B + 1


def test_explanation_to_shap_works_with_shaps_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import shap

    from mbi_predict.explain import Explanation, as_shap_explanation

    rng = np.random.default_rng(0)
    data = pd.DataFrame({"age": rng.normal(40, 10, 50), "gender": rng.choice(["f", "m"], 50),
                         "distress": rng.normal(size=50)})
    expl = Explanation(values=rng.normal(size=(50, 3)), base_value=0.5, feature_names=("age", "gender", "distress"),
                       data=data, kind="linear", additivity_error=0.0, output="CATE", seconds=0.0,
                       row_index=np.arange(50), n_background=10)
    sv = expl.to_shap()
    assert isinstance(sv, shap.Explanation) and sv.values.shape == (50, 3)
    assert list(sv.feature_names) == ["age", "gender", "distress"]
    np.testing.assert_allclose(sv.base_values, 0.5)
    assert as_shap_explanation(expl).values.shape == (50, 3)
    shap.plots.bar(sv, show=False)
    plt.close("all")
    shap.plots.beeswarm(sv, show=False)
    plt.close("all")
