"""Bad input: one clear line each (an MBIError subclass, which the CLI turns into exit 2), nothing half-written."""

import numpy as np
import pytest

from mbi_predict.config import load_config, parse_config
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError, MBIError
from mbi_predict.runner import run_experiment


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and isinstance(excinfo.value, MBIError)
    return message


@pytest.mark.parametrize("change,key", [
    (lambda c: c.update(modles=[]), "modles"),
    (lambda c: c["validation"].update(n_jobs="two"), "validation.n_jobs"),
    (lambda c: c["models"][1]["tuning"].update(n_trial=3), "models.elastic_net.tuning.n_trial"),
    (lambda c: c["models"][0].update(estimator="svm"), "models.reference"),
    (lambda c: c["data"].update(path="x.parquet"), "data"),
    (lambda c: c["models"].append(dict(c["models"][0])), "models"),
    (lambda c: c["models"][2]["tuning"]["search_space"].update(max_depth={"type": "int", "low": 5, "high": 2}),
     "models.xgboost.tuning.search_space.max_depth"),
])
def test_config_errors_name_the_key(make_config, change, key):
    config = make_config()
    change(config)
    with pytest.raises(ConfigError) as excinfo:
        parse_config(config)
    assert _one_line(excinfo).startswith(key)


def test_yaml_file_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: x\ndata: {simulate: {}}\noutcome: distress_fu1_6\nmodels:\n"
                    "  - {name: a, estimator: reference, tunning: {}}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert "models.a.tunning" in _one_line(excinfo) and "bad.yaml" in str(excinfo.value)
    path.write_text("experiment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def _assert_nothing_written(out):
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("override,error,text", [
    ({"outcome": "distress_fu9"}, DataError, "outcome is not a column"),
    ({"covariates": ["age", "shoe_size"]}, DataError, "shoe_size"),
    ({"data": {"simulate": {"n_trials": 2, "n": 400}}}, ConfigError, "validation.scheme: kfold"),
])
def test_data_errors_before_fitting(make_config, tmp_path, override, error, text):
    out = tmp_path / "out"
    with pytest.raises(error) as excinfo:
        run_experiment(make_config(**override), out_dir=out, progress=False)
    assert text in _one_line(excinfo)
    _assert_nothing_written(out)


def test_outcome_without_variance(make_config, tmp_path):
    ipd = check_ipd(simulate_latent("galante2023", seed=1, n_trials=4, n=500).ipd)
    ipd["stress_post"] = 2.0
    path = tmp_path / "ipd.csv"
    ipd.to_csv(path, index=False)
    with pytest.raises(DataError) as excinfo:
        run_experiment(make_config(), data=path, outcome="stress_post", out_dir=tmp_path / "out", progress=False)
    assert "no variance" in _one_line(excinfo) and "stress_post" in str(excinfo.value)
    _assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/no/such/folder/mlflow.db", "http://127.0.0.1:9"])
def test_unreachable_tracking_uri(make_config, tmp_path, uri):
    uri = uri.format(tmp=tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        run_experiment(make_config(tracking={"uri": uri}), out_dir=tmp_path / "out", progress=False)
    assert "unreachable" in _one_line(excinfo) and uri in str(excinfo.value)
    _assert_nothing_written(tmp_path / "out")


def test_kfold_fallback_is_labelled_internal(make_config, tmp_path):
    config = make_config(data={"simulate": {"n_trials": 1, "n": 300}}, validation={"scheme": "kfold", "folds": 3,
                                                                                   "bootstrap": 20},
                         models=[{"name": "reference", "estimator": "reference"},
                                 {"name": "elastic_net", "estimator": "elastic_net", "imputer": "iterative"}])
    result = run_experiment(config, out_dir=tmp_path, progress=False)
    summary = result.summary
    assert summary["validation"]["scheme"] == "kfold"
    assert "internal, not external" in summary["validation"]["note"]
    assert summary["validation"]["held_out"] == ["fold_1", "fold_2", "fold_3"]
    assert np.isfinite(summary["models"]["reference"]["pooled"]["rmse"]["estimate"])
    verdict = summary["comparison_to_reference"]["models"]["elastic_net"]
    assert verdict["k"] == 3 and verdict["ci_low"] <= verdict["difference"] <= verdict["ci_high"]
    assert (tmp_path / "plots" / "calibration_elastic_net.png").is_file()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_invalid_parameter_values_are_config_errors(make_config, tmp_path, n_jobs):
    config = make_config(models=[{"name": "enet", "estimator": "elastic_net", "params": {"alpha": -1.0}}],
                         validation={"n_jobs": n_jobs, "bootstrap": 0})
    with pytest.raises(ConfigError) as excinfo:
        run_experiment(config, out_dir=tmp_path / "out", progress=False)
    assert _one_line(excinfo).startswith("models.enet.params") and "alpha" in str(excinfo.value)
    _assert_nothing_written(tmp_path / "out")


def test_unknown_search_space_parameter_fails_before_tuning(make_config, tmp_path):
    """A misspelt search-space parameter is one line naming the key, before any fold is fitted (it used to surface
    as a traceback from a tuning worker)."""
    config = make_config(models=[{"name": "enet", "estimator": "elastic_net", "tuning": {
        "n_trials": 2, "search_space": {"alphaa": {"type": "float", "low": 0.01, "high": 1.0}}}}])
    with pytest.raises(ConfigError) as excinfo:
        run_experiment(config, out_dir=tmp_path / "out", progress=False)
    assert _one_line(excinfo).startswith("models.enet.tuning.search_space") and "alphaa" in str(excinfo.value)
    _assert_nothing_written(tmp_path / "out")
