"""``tracking.register`` in a config registers the chosen final model when `mbi-predict run` ends, with its model
card as the version's description, as ``mbi-predict card RUN --register NAME`` does; without final models it is a
one-line config error before anything runs."""

from __future__ import annotations

import mlflow
import yaml
from typer.testing import CliRunner

from mbi_predict.cli import app


def _write(make_config, tmp_path, **tracking):
    config = make_config(models=[{"name": "reference", "estimator": "reference"},
                                  {"name": "xgboost", "estimator": "xgboost", "params": {"n_estimators": 20}}],
                          tracking=tracking, heterogeneity={"null_B": 0, "calibration": "none"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_config_registers_its_model_with_the_card(make_config, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    path = _write(make_config, tmp_path, uri=uri, log_final_models=True, register="mbi_distress", register_model="xgboost")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='mbi_distress'")
    assert len(versions) == 1
    assert "xgboost" in (versions[0].description or "")
    assert (tmp_path / "run" / "model_card_registered.md").exists()


def test_register_without_final_models_is_one_line(make_config, tmp_path):
    path = _write(make_config, tmp_path, uri=f"sqlite:///{tmp_path}/mlflow.db", register="mbi_distress")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "log_final_models" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
