"""Within-trial multiple imputation: nothing dropped, observed values kept, reproducible, proper, within-trial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mbi_predict.data.impute import multiply_impute
from mbi_predict.errors import DataError


def make_frame(seed: int = 0, n_per_trial: tuple[int, ...] = (80, 40, 60)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for t, n in enumerate(n_per_trial):
        arm = np.repeat([1, 0], [n // 2, n - n // 2])
        base = rng.normal(size=n)
        y = 0.6 * base + 1.0 * arm + rng.normal(scale=0.8, size=n)
        parts.append(pd.DataFrame({
            "trial_id": f"T{t}", "arm": arm, "baseline_distress": base, "distress_post": y,
            "deteriorated": (y > 1.2).astype(float), "gender": rng.choice(["female", "male", "other"], n),
            "age": rng.normal(40, 10, n)}))
    frame = pd.concat(parts, ignore_index=True)
    for column, rate in (("distress_post", 0.3), ("baseline_distress", 0.1), ("deteriorated", 0.2),
                         ("gender", 0.15)):
        frame.loc[rng.random(len(frame)) < rate, column] = np.nan if column != "gender" else None
    return frame


COLUMNS = ["distress_post", "baseline_distress", "deteriorated", "gender"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def imputed(frame) -> list[pd.DataFrame]:
    return multiply_impute(frame, COLUMNS, m=3, seed=11)


def test_no_row_dropped_and_everything_filled(frame, imputed):
    assert len(imputed) == 3
    for out in imputed:
        assert out.index.equals(frame.index)
        assert list(out.columns) == list(frame.columns)
        assert out[COLUMNS].notna().all().all()


def test_observed_values_unchanged(frame, imputed):
    for out in imputed:
        for column in COLUMNS + ["age", "arm", "trial_id"]:
            seen = frame[column].notna()
            assert (out.loc[seen, column].to_numpy() == frame.loc[seen, column].to_numpy()).all(), column


def test_discrete_columns_get_valid_values(imputed):
    for out in imputed:
        assert set(out["deteriorated"].unique()) <= {0.0, 1.0}
        assert set(out["gender"].unique()) <= {"female", "male", "other"}


def test_reproducible_for_a_seed_and_different_across_imputations_and_seeds(frame, imputed):
    again = multiply_impute(frame, COLUMNS, m=3, seed=11)
    for a, b in zip(imputed, again):
        pd.testing.assert_frame_equal(a, b)
    missing = frame["distress_post"].isna()
    first, second = imputed[0].loc[missing, "distress_post"], imputed[1].loc[missing, "distress_post"]
    assert not np.allclose(first, second)
    other_seed = multiply_impute(frame, COLUMNS, m=1, seed=12)[0]
    assert not np.allclose(other_seed.loc[missing, "distress_post"], first)


def test_values_from_one_trial_never_inform_another(frame, imputed):
    # change trial T1's observed data drastically and drop T2: T0's imputations must not move at all
    altered = frame.copy()
    in_t1 = altered["trial_id"] == "T1"
    altered.loc[in_t1, "distress_post"] = altered.loc[in_t1, "distress_post"] * 50 + 100
    altered = altered[altered["trial_id"] != "T2"]
    redone = multiply_impute(altered, COLUMNS, m=3, seed=11)
    in_t0 = frame["trial_id"] == "T0"
    for before, after in zip(imputed, redone):
        pd.testing.assert_frame_equal(before[in_t0], after[after["trial_id"] == "T0"])
    # and T1's imputed outcomes follow T1's own (shifted) data, not the others'
    t1_missing = in_t1 & frame["distress_post"].isna()
    assert redone[0].loc[t1_missing, "distress_post"].mean() > 50


def test_imputation_is_arm_aware():
    # a large arm difference in the outcome must survive in the imputed values (an arm-blind model would halve it)
    rng = np.random.default_rng(5)
    n = 400
    arm = np.repeat([1, 0], n // 2)
    base = rng.normal(size=n)
    y = 0.5 * base + 2.0 * arm + rng.normal(scale=0.5, size=n)
    frame = pd.DataFrame({"trial_id": "A", "arm": arm, "baseline": base, "y": y})
    frame.loc[rng.random(n) < 0.4, "y"] = np.nan
    missing = frame["y"].isna()
    for strategy_arm_size in (30, 10_000):  # each arm separately, and arm as a predictor
        out = multiply_impute(frame, ["y", "baseline"], m=2, seed=1, min_arm_size=strategy_arm_size)
        expected = "each arm separately" if strategy_arm_size == 30 else "arm as predictor"
        assert out[0].attrs["imputation"]["strategy"]["A"] == expected
        imputed_y = out[0].loc[missing, "y"]
        gap = imputed_y[frame.loc[missing, "arm"] == 1].mean() - imputed_y[frame.loc[missing, "arm"] == 0].mean()
        assert gap == pytest.approx(2.0, abs=0.3)


def test_column_entirely_missing_in_a_trial_is_left_missing_and_reported(frame):
    data = frame.copy()
    data.loc[data["trial_id"] == "T1", "baseline_distress"] = np.nan
    out = multiply_impute(data, COLUMNS, m=2, seed=0)
    assert out[0].attrs["imputation"]["entirely_missing"] == {"T1": ["baseline_distress"]}
    assert out[0].loc[data["trial_id"] == "T1", "baseline_distress"].isna().all()
    assert out[0].loc[data["trial_id"] != "T1", "baseline_distress"].notna().all()


def test_nothing_to_impute_returns_copies(frame):
    complete = frame.dropna(subset=COLUMNS).reset_index(drop=True)
    out = multiply_impute(complete, COLUMNS, m=2)
    pd.testing.assert_frame_equal(out[0], complete, check_like=False)
    assert out[0] is not complete


@pytest.mark.parametrize("kwargs, message", [
    ({"columns": ["nope"]}, "nope"),
    ({"columns": COLUMNS, "m": 0}, "positive"),
])
def test_bad_calls(frame, kwargs, message):
    with pytest.raises(DataError, match=message):
        multiply_impute(frame, **kwargs)


def test_missing_arm_is_refused(frame):
    data = frame.copy()
    data["arm"] = data["arm"].astype(float)
    data.loc[0, "arm"] = np.nan
    with pytest.raises(DataError, match="arm"):
        multiply_impute(data, COLUMNS)


def test_logistic_engine_matches_reference_fits():
    # the discrete-imputation model: binary with sklearn's C=1 ridge, multinomial (unpenalised) with statsmodels
    import statsmodels.api as sm
    from sklearn.linear_model import LogisticRegression

    from mbi_predict.data.impute import _multinomial_logit

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    design = np.column_stack([np.ones(200), X])
    y = (X @ [1.0, -0.5, 0.2] + rng.logistic(size=200) > 0).astype(int)
    ours = _multinomial_logit(design, y, 2, l2=1.0).ravel()
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(ours, np.r_[ref.intercept_, ref.coef_.ravel()], atol=1e-6)
    y3 = rng.integers(0, 3, 200)
    ours3 = _multinomial_logit(design, y3, 3, l2=0.0)
    np.testing.assert_allclose(ours3, sm.MNLogit(y3, design).fit(disp=0).params, atol=1e-6)
