"""The prognostic model zoo: every family builds, fits and predicts for both tasks, with the features it should see."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError
from mbi_predict.models.prognostic import FAMILIES, infer_task, make_prognostic_model, predict_outcome
from mbi_predict.validate.loto import prepare_data


@pytest.fixture(scope="module")
def frames():
    ipd = check_ipd(simulate_latent("galante2023", seed=4, n_trials=4, n=500).ipd)
    ipd["deteriorated_distress_fu1_6"] = np.where(
        ipd["distress_fu1_6"].isna(), np.nan, (ipd["distress_fu1_6"] - ipd["baseline_distress"] > 0.3).astype(float))
    return {task: prepare_data(ipd, outcome=outcome, study_traits=["setting"])
            for task, outcome in (("continuous", "distress_fu1_6"), ("binary", "deteriorated_distress_fu1_6"))}


@pytest.mark.parametrize("task", ["continuous", "binary"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_fits_and_predicts(frames, name, task):
    data = frames[task]
    assert data.task == task
    rows = np.isfinite(data.y)
    params = {"n_estimators": 20} if name in ("random_forest", "xgboost") else None
    model = make_prognostic_model(name, task, params, 0, features=data.features)
    fitted = clone(model).fit(data.X[rows], data.y[rows])
    assert fitted is not model
    prediction = predict_outcome(fitted, data.X, task)
    assert prediction.shape == (data.n,) and np.all(np.isfinite(prediction))
    if task == "binary":
        assert prediction.min() >= 0 and prediction.max() <= 1
    names = list(fitted.named_steps["features"].get_feature_names_out())
    assert ("arm__arm" in names) == FAMILIES[name].uses_arm
    if name == "reference":
        assert sorted(n for n in names if not n.startswith("num__missingindicator")) == \
            ["arm__arm", "num__baseline_distress"]
    else:
        assert any(n.startswith("cat__setting_") for n in names)  # categorical covariates are one-hot encoded


def test_reference_beats_nothing_but_is_a_real_regression(frames):
    data = frames["continuous"]
    rows = np.isfinite(data.y)
    model = make_prognostic_model("reference", "continuous", None, 0, features=data.features).fit(
        data.X[rows], data.y[rows])
    coef = dict(zip(model.named_steps["features"].get_feature_names_out(), model.named_steps["model"].coef_))
    # the simulator's outcome is 0.6 x baseline + noise (standardised), and the MBI lowers distress
    assert 0.4 < coef["num__baseline_distress"] < 0.8
    assert coef["arm__arm"] < 0


def test_infer_task_and_bad_inputs(frames):
    frame = pd.DataFrame({"y": [0, 1, np.nan, 1], "z": [0.1, 2, 3, 4]})
    assert infer_task(frame, "y") == "binary" and infer_task(frame, "z") == "continuous"
    data = frames["continuous"]
    with pytest.raises(ConfigError, match="unknown prognostic estimator"):
        make_prognostic_model("svm", "continuous", None, 0, features=data.features)
    with pytest.raises(ConfigError, match="reference model takes no params"):
        make_prognostic_model("reference", "continuous", {"alpha": 1}, 0, features=data.features)
    with pytest.raises(ConfigError, match="elastic_net"):
        make_prognostic_model("elastic_net", "continuous", {"not_a_param": 1}, 0, features=data.features)
    without_baseline = data.features.restricted_to(["age", "gender"])
    with pytest.raises(ConfigError, match="baseline_distress"):
        make_prognostic_model("reference", "continuous", None, 0, features=without_baseline)


def test_seeded_models_are_reproducible(frames):
    data = frames["continuous"]
    rows = np.isfinite(data.y)
    preds = [predict_outcome(make_prognostic_model("xgboost", "continuous", {"n_estimators": 30}, 3,
                                                   features=data.features).fit(data.X[rows], data.y[rows]),
                             data.X, "continuous") for _ in range(2)]
    assert np.array_equal(*preds)


def test_iterative_imputer_fills_from_the_other_covariates(frames):
    data = frames["continuous"]
    rows = np.isfinite(data.y)
    model = make_prognostic_model("elastic_net", "continuous", None, 0, features=data.features,
                                  imputer="iterative").fit(data.X[rows], data.y[rows])
    transformed = model.named_steps["features"].transform(data.X)
    assert np.all(np.isfinite(transformed))
    names = list(model.named_steps["features"].get_feature_names_out())
    assert any("missingindicator_baseline_mindfulness" in n for n in names)
