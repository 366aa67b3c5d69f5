"""SHAP of prognostic pipelines: additivity per engine, exact linear values, mapping back to covariates, caps."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from explain_data import COVARIATES, NUMERIC, OUTCOME
from mbi_predict.errors import ConfigError, MBIError
from mbi_predict.explain import column_transformer_map, encoded_to_original, explain_pipeline


def _preprocess():
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), NUMERIC),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["gender", "education"])])


def _fit(estimator, ipd, binary=False):
    y = ipd[OUTCOME].to_numpy()
    target = (y > np.median(y)).astype(int) if binary else y
    return Pipeline([("preprocess", _preprocess()), ("model", estimator)]).fit(ipd[COVARIATES], target)


@pytest.mark.parametrize("estimator, binary, kind", [
    (LinearRegression(), False, "linear"),
    (LogisticRegression(max_iter=2000), True, "linear"),
    (XGBRegressor(n_estimators=60, max_depth=3, n_jobs=1), False, "tree"),
    (XGBClassifier(n_estimators=60, max_depth=3, n_jobs=1), True, "tree"),
    (RandomForestRegressor(n_estimators=20, min_samples_leaf=30, random_state=0), False, "tree"),
])
def test_attributions_add_up_to_the_raw_output(strong, estimator, binary, kind):
    ipd = strong[0]
    pipeline = _fit(estimator, ipd, binary)
    explanation = explain_pipeline(pipeline, ipd[COVARIATES], max_rows=200)
    assert explanation.kind == kind
    assert explanation.feature_names == tuple(COVARIATES)
    # float32 trees in xgboost; float64 elsewhere
    assert explanation.additivity_error < (1e-4 if "XGB" in type(estimator).__name__ else 1e-8)
    if binary:
        assert explanation.output.startswith("margin")
        margin = pipeline.decision_function(ipd[COVARIATES].iloc[explanation.row_index]) if kind == "linear" else \
            pipeline[-1].predict(pipeline[:-1].transform(ipd[COVARIATES].iloc[explanation.row_index]),
                                 output_margin=True)
        reconstructed = explanation.values.sum(axis=1) + explanation.base_value
        np.testing.assert_allclose(reconstructed, margin, atol=1e-4)
    assert explanation.seconds > 0


def test_linear_shap_is_coef_times_deviation_from_background_mean(strong):
    ipd = strong[0]
    pipeline = _fit(LinearRegression(), ipd)
    background = ipd[COVARIATES].iloc[:80]
    explanation = explain_pipeline(pipeline, ipd[COVARIATES], background=background, max_rows=50)
    Z = pipeline[:-1].transform(ipd[COVARIATES].iloc[explanation.row_index])
    Zb = pipeline[:-1].transform(background)
    encoded = pipeline[-1].coef_ * (Z - Zb.mean(axis=0))
    names = pipeline[:-1].get_feature_names_out()
    for feature in ("baseline_distress", "gender"):
        columns = [k for k, n in enumerate(names) if n.split("__")[1] in (feature, f"missingindicator_{feature}")
                   or n.startswith(f"cat__{feature}_")]
        np.testing.assert_allclose(explanation.values[:, COVARIATES.index(feature)], encoded[:, columns].sum(axis=1),
                                   atol=1e-12)
    # baseline_mindfulness owns its scaled column and its missing indicator
    owned = [k for k, n in enumerate(names) if "baseline_mindfulness" in n]
    assert len(owned) == 2
    np.testing.assert_allclose(explanation.values[:, COVARIATES.index("baseline_mindfulness")],
                               encoded[:, owned].sum(axis=1), atol=1e-12)
    assert explanation.base_value == pytest.approx(pipeline[-1].intercept_ + pipeline[-1].coef_ @ Zb.mean(axis=0))


def test_encoded_names_map_to_the_longest_matching_covariate():
    names = ["num__age", "num__age_group_young", "num__missingindicator_age", "cat__gender_male", "gender[other]",
             "remainder__baseline_distress"]
    assert encoded_to_original(names, ["age", "age_group", "gender", "baseline_distress"]) == [
        "age", "age_group", "age", "gender", "gender", "baseline_distress"]
    with pytest.raises(MBIError, match="weight_kg"):
        encoded_to_original(["num__weight_kg"], ["age"])


def test_column_transformer_map_uses_block_structure():
    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": ["x", "y", "x", "z"], "c": [1, 2, 3, 4]})
    ct = ColumnTransformer([("num", SimpleImputer(add_indicator=True), ["a"]), ("cat", OneHotEncoder(), ["b"])],
                           remainder="passthrough").fit(frame)
    assert column_transformer_map(ct, list(frame.columns)) == ["a", "a", "b", "b", "b", "c"]


def test_one_hot_columns_sum_exactly_when_mapped_back():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"level": rng.choice(["low", "mid", "high"], 300), "x": rng.normal(size=300)})
    y = frame["x"] * 2 + frame["level"].map({"low": 0.0, "mid": 1.0, "high": 3.0}) + rng.normal(size=300)
    ct = ColumnTransformer([("cat", OneHotEncoder(), ["level"]), ("num", StandardScaler(), ["x"])])
    pipeline = Pipeline([("preprocess", ct), ("model", LinearRegression())]).fit(frame, y)
    explanation = explain_pipeline(pipeline, frame, max_rows=300)
    Z = ct.transform(frame)
    encoded = pipeline[-1].coef_ * (Z - ct.transform(frame.iloc[np.sort(
        np.random.default_rng(np.random.SeedSequence(0).spawn(3)[1]).choice(300, 100, replace=False))]).mean(0))
    np.testing.assert_allclose(explanation.values[:, 0], encoded[:, :3].sum(axis=1), atol=1e-10)
    np.testing.assert_allclose(explanation.values.sum(axis=1) + explanation.base_value, pipeline.predict(frame),
                               atol=1e-10)


def test_caps_and_seed(strong):
    ipd = strong[0]
    pipeline = _fit(LinearRegression(), ipd)
    first = explain_pipeline(pipeline, ipd[COVARIATES], max_rows=40, max_background=30, seed=5)
    again = explain_pipeline(pipeline, ipd[COVARIATES], max_rows=40, max_background=30, seed=5)
    other = explain_pipeline(pipeline, ipd[COVARIATES], max_rows=40, max_background=30, seed=6)
    assert first.n_rows == 40 and first.n_background == 30
    np.testing.assert_array_equal(first.row_index, again.row_index)
    assert not np.array_equal(first.row_index, other.row_index)
    assert "values" not in first.to_dict() and "data" not in first.to_dict()


def test_unknown_feature_is_a_config_error(strong):
    pipeline = _fit(LinearRegression(), strong[0])
    with pytest.raises(ConfigError, match="shoe_size"):
        explain_pipeline(pipeline, strong[0][COVARIATES], max_rows=10, features=["baseline_distress", "shoe_size"])


def test_model_without_exact_path_falls_back_with_a_warning(strong):
    ipd = strong[0].iloc[:300]
    pipeline = _fit(KNeighborsRegressor(n_neighbors=15), ipd)
    with pytest.warns(UserWarning, match="permutation explainer"):
        explanation = explain_pipeline(pipeline, ipd[COVARIATES], max_rows=15, max_background=10)
    assert explanation.kind == "permutation"
    assert explanation.additivity_error < 1e-8
