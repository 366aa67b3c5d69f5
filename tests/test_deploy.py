import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from mbi_predict.deploy import (ModelLookupError, envelope_from_training, log_final_model, out_of_distribution,
                                predict_file, synthetic_example)
from mbi_predict.errors import DataError

pytest_plugins = ["tests.report.conftest"]
FEATURES = ["age", "gender", "education", "baseline_distress", "baseline_wellbeing", "arm"]


@pytest.fixture(scope="module")
def logged(fitted_pipeline, model_frame, tracking_uri, tmp_path_factory):
    """The elastic-net pipeline logged as a final model in a run of the session's sqlite store."""
    import os

    frame, X, _ = model_frame
    envelope = envelope_from_training(X[FEATURES])
    mlflow.set_tracking_uri(tracking_uri)
    artifacts = tmp_path_factory.mktemp("artifacts")
    experiment = mlflow.create_experiment("deploy_test", artifact_location=artifacts.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = log_final_model(fitted_pipeline, kind="prognostic", features=FEATURES, task="continuous",
                              envelope=envelope, name="elastic_net")
    assert not os.path.exists("mlruns")
    return {"uri": uri, "run_id": run.info.run_id, "envelope": envelope}


def _new_participants(frame, n=30):
    rows = frame.iloc[:n][FEATURES].copy()
    rows.insert(0, "participant_id", [f"new-{i}" for i in range(n)])
    rows["arm"] = rows["arm"].astype(int)  # as a user's csv would give it
    return rows


def test_loaded_model_predicts_what_the_pipeline_predicts(logged, fitted_pipeline, model_frame, tracking_uri):
    frame, X, _ = model_frame
    model = mlflow.pyfunc.load_model(logged["uri"])
    out = model.predict(X[FEATURES].iloc[:50].astype({"arm": float}))
    np.testing.assert_allclose(out["prediction"], fitted_pipeline.predict(X.iloc[:50]), rtol=1e-12)
    assert list(out.columns) == ["prediction", "out_of_distribution", "ood_reasons"]


def test_signature_example_is_synthetic_and_servable(logged, model_frame):
    from mlflow.models import Model, validate_serving_input

    frame, X, _ = model_frame
    meta = Model.load(logged["uri"])
    example = meta.load_input_example(mlflow.artifacts.download_artifacts(logged["uri"]))
    real_rows = {tuple(map(str, row)) for row in X[FEATURES].to_numpy().tolist()}
    assert tuple(map(str, example.iloc[0].tolist())) not in real_rows
    serving = json.dumps({"dataframe_split": {"columns": list(example.columns),
                                              "data": example.to_numpy().tolist()}})
    result = validate_serving_input(logged["uri"], serving)
    assert len(result) == 1 and not bool(result["out_of_distribution"].iloc[0])


def test_out_of_distribution_names_column_value_and_range():
    train = pd.DataFrame({"age": [18.0, 80.0, 40.0], "gender": ["female", "male", None]})
    envelope = envelope_from_training(train)
    new = pd.DataFrame({"age": [95.0, 30.0, np.nan], "gender": ["x", "female", None]})
    flags, reasons = out_of_distribution(new, envelope)
    assert flags.tolist() == [True, False, False]
    assert reasons[0] == "age 95 outside 15-85 seen in training; gender 'x' unseen in training"
    example = synthetic_example(envelope, ["age", "gender"])
    assert example.iloc[0].tolist() == [50.0, "female"]


def test_predict_file_round_trip_with_ood(logged, fitted_pipeline, model_frame, tmp_path):
    frame, X, _ = model_frame
    new = _new_participants(frame)
    new.loc[0, "age"] = 95.0
    new.loc[1, "gender"] = "x"
    new.to_csv(tmp_path / "new.csv", index=False)
    out = pd.read_csv(predict_file(logged["uri"], tmp_path / "new.csv", tmp_path / "pred.csv"))
    expected = fitted_pipeline.predict(X.iloc[:30].assign(age=new["age"].to_numpy(),
                                                         gender=new["gender"].to_numpy()))
    assert out["participant_id"].tolist() == new["participant_id"].tolist()
    np.testing.assert_allclose(out["prediction"], expected, rtol=1e-10)
    assert out["out_of_distribution"].tolist()[:3] == [True, True, False]
    assert "age 95 outside" in out["ood_reasons"][0] and "gender 'x' unseen" in out["ood_reasons"][1]


def test_predict_file_from_a_run_folder(logged, fitted_pipeline, model_frame, tmp_path, run_summary):
    frame, X, _ = model_frame
    summary = {**run_summary, "mlflow_run_id": logged["run_id"]}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(summary, default=float))
    _new_participants(frame).to_parquet(tmp_path / "new.parquet")
    out = pd.read_parquet(predict_file(tmp_path / "run", tmp_path / "new.parquet", tmp_path / "p.parquet",
                                       model_name="elastic_net"))
    np.testing.assert_allclose(out["prediction"], fitted_pipeline.predict(X.iloc[:30]), rtol=1e-10)
    with pytest.raises(ModelLookupError, match="no model 'xgb'"):
        predict_file(tmp_path / "run", tmp_path / "new.parquet", tmp_path / "q.csv", model_name="xgb")
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["age"]), "missing age"),
    (lambda d: d.assign(distress_post=1.0), "unexpected distress_post"),
    (lambda d: d.assign(age=["old"] + [30] * (len(d) - 1)),
     r"column age: expected finite numbers in 1 row\(s\) \(first at data row 1\)$"),
    (lambda d: d.assign(age=[float("inf")] + [30] * (len(d) - 1)), r"column age: expected finite numbers"),
    (lambda d: d.assign(gender=1.0), "column gender: expected text"),
    (lambda d: d.assign(participant_id=["p1", "p1"] + [f"q{i}" for i in range(len(d) - 2)]),
     "participant_id duplicated: 1 repeat"),
    (lambda d: d.drop(columns=["participant_id"]), "no participant_id column"),
])
def test_bad_prediction_input_is_one_line_and_leaves_nothing(logged, model_frame, tmp_path, mutate, message):
    frame, _, _ = model_frame
    mutate(_new_participants(frame)).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=message) as error:
        predict_file(logged["uri"], tmp_path / "bad.csv", tmp_path / "out.csv")
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_unknown_run_and_model(logged, model_frame, tmp_path, tracking_uri):
    frame, _, _ = model_frame
    _new_participants(frame).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(ModelLookupError, match="neither a run folder nor a run"):
        predict_file("feedfacefeedface", tmp_path / "new.csv", tmp_path / "o.csv", tracking_uri=tracking_uri)
    with pytest.raises(ModelLookupError, match="cannot load model"):
        predict_file(f"runs:/{logged['run_id']}/no_such_model", tmp_path / "new.csv", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_effect_model_round_trip_with_intervals(model_frame, tracking_uri, tmp_path):
    from mbi_predict.models.effect import make_effect_model
    from mbi_predict.models.preprocess import make_preprocessor

    frame, X, spec = model_frame
    observed = frame["distress_post"].notna().to_numpy()
    preprocess = make_preprocessor(spec, use_arm=False).fit(X[observed])
    effect = make_effect_model("interaction_linear", alpha=0.0, random_state=0)
    effect.fit(frame["distress_post"].to_numpy()[observed], frame["arm"].to_numpy()[observed],
               X=preprocess.transform(X[observed]), groups=frame["trial_id"].to_numpy()[observed])
    covariates = FEATURES[:-1]
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("deploy_effect", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        uri = log_final_model(effect, kind="effect", features=covariates, task="continuous",
                              envelope=envelope_from_training(X[covariates]), name="interaction_linear",
                              preprocess=preprocess)
    out = mlflow.pyfunc.load_model(uri).predict(X[covariates].iloc[:40])
    design = preprocess.transform(X.iloc[:40])
    np.testing.assert_allclose(out["cate"], effect.effect(design), rtol=1e-10)
    low, high = effect.effect_interval(design, alpha=0.05)
    np.testing.assert_allclose(out["cate_low"], np.ravel(low), rtol=1e-10)
    assert (out["cate_low"] <= out["cate"]).all() and (out["cate"] <= out["cate_high"]).all()


def test_effect_model_without_a_defensible_interval_gives_nan_bounds(model_frame):
    from mbi_predict.deploy import MBIPyfuncModel
    from mbi_predict.models.effect import make_effect_model
    from mbi_predict.models.preprocess import make_preprocessor

    frame, X, spec = model_frame
    observed = frame["distress_post"].notna().to_numpy()
    preprocess = make_preprocessor(spec, use_arm=False).fit(X[observed])
    effect = make_effect_model("interaction_linear", random_state=0)  # penalised: refuses an interval
    effect.fit(frame["distress_post"].to_numpy()[observed], frame["arm"].to_numpy()[observed],
               X=preprocess.transform(X[observed]), groups=frame["trial_id"].to_numpy()[observed])
    covariates = FEATURES[:-1]
    wrapper = MBIPyfuncModel(kind="effect", fitted=effect, features=covariates, task="continuous",
                             envelope=envelope_from_training(X[covariates]), preprocess=preprocess)
    out = wrapper.predict(None, X[covariates].iloc[:5])
    assert out["cate"].notna().all() and out["cate_low"].isna().all() and out["cate_high"].isna().all()


def test_models_pickled_before_the_split_still_find_their_class():
    """Final models logged when deploy was one module pickled ``mbi_predict.deploy.MBIPyfuncModel``; the package
    still answers to that name (the class now lives in ``mbi_predict.deploy.pyfunc``)."""
    import pickle

    from mbi_predict.deploy import MBIPyfuncModel

    assert pickle.loads(b"cmbi_predict.deploy\nMBIPyfuncModel\n.") is MBIPyfuncModel
    assert MBIPyfuncModel.__module__ == "mbi_predict.deploy.pyfunc"
