"""`mbi-predict run` on large data: the time and memory estimate is one line on stderr before fitting, and a run
whose memory estimate exceeds what the machine has stops there, in one line, writing nothing. The size threshold is
lowered so a small consortium counts as large (the pilots are real)."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from mbi_predict.cli import app
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.validate import estimate


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("estimate_cli")
    ipd = folder / "ipd.parquet"
    simulate_latent("galante2023", seed=3, n_trials=5, n=1200).ipd.to_parquet(ipd)
    config = {"experiment": "estimate_cli", "data": {"path": str(ipd)}, "outcome": "distress_fu1_6",
              "study_traits": ["setting"], "seed": 2,
              "models": [{"name": "reference", "estimator": "reference"},
                         {"name": "t_enet", "kind": "effect", "estimator": "t_learner_enet"}],
              "validation": {"bootstrap": 10}, "heterogeneity": {"null_B": 0}, "tracking": {"enabled": False}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_estimate_is_one_line_on_stderr_before_the_run(config_file, tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    result = CliRunner().invoke(app, ["run", str(config_file), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("estimated ")]
    assert len(lines) == 1, result.stderr
    assert "of fitting and" in lines[0] and "GiB peak memory" in lines[0] and "folds on" in lines[0]
    assert "estimated " not in result.stdout
    assert (tmp_path / "run" / "summary.json").exists()


def test_a_run_that_would_not_fit_in_memory_stops_before_fitting(config_file, tmp_path, monkeypatch):
    from mbi_predict.pipeline import folds

    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    monkeypatch.setattr(folds, "available_memory", lambda: 1024.0)
    fitted = []
    monkeypatch.setattr(folds, "run_jobs", lambda *a, **k: fitted.append(1))
    result = CliRunner().invoke(app, ["run", str(config_file), "--out", str(tmp_path / "run"), "--no-progress"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "data too large for these settings" in lines[0] and "validation.estimate: false" in lines[0]
    assert not fitted and not (tmp_path / "run").exists()


def test_validation_estimate_false_skips_it(config_file, tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    config = yaml.safe_load(config_file.read_text())
    config["validation"]["estimate"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    from mbi_predict.pipeline import folds

    called = []
    monkeypatch.setattr(folds, "estimate_run", lambda *a, **k: called.append(1))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not called and "estimated " not in result.output


def test_the_fold_jobs_the_pilots_ran_give_the_run_the_same_results_as_fitting_them_again(config_file, tmp_path,
                                                                                          monkeypatch):
    """The estimate's whole-fold pilots are the run's own jobs of two folds; the run uses their results instead of
    refitting them. Every held-out metric of every fold is the same as in a run without the estimate."""
    import json

    from mbi_predict.pipeline import folds

    monkeypatch.setattr(estimate, "MIN_ROWS", 100)
    fitted, real = [], folds.run_jobs
    monkeypatch.setattr(folds, "run_jobs", lambda jobs, *a, **k: fitted.append(len(jobs)) or real(jobs, *a, **k))
    config = yaml.safe_load(config_file.read_text())
    config["validation"]["n_jobs"] = 2  # two workers: the pilots run the jobs of two folds, one in each process
    # a boosted effect model with SHAP in the fold (its null off, to stay fast): what a reused result must carry too
    config["models"].append({"name": "t_xgb", "kind": "effect", "estimator": "t_learner_xgb",
                             "explain": {"enabled": True, "max_rows": 50, "max_background": 20, "null_B": 0}})
    summaries = {}
    for on in (True, False):
        config["validation"]["estimate"] = on
        path = tmp_path / f"config_{on}.yaml"
        path.write_text(yaml.safe_dump(config))
        out = tmp_path / f"run_{on}"
        result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert ("estimated " in result.stderr) == on
        summaries[on] = json.loads((out / "summary.json").read_text())
    from joblib import cpu_count

    assert fitted[1] - fitted[0] == 3 * min(2, cpu_count())  # 3 models on the pilots' folds were not refitted
    for name in ("reference", "t_enet", "t_xgb"):
        with_estimate, without = (summaries[on]["models"][name] for on in (True, False))
        assert with_estimate["per_trial"] == without["per_trial"]
        assert with_estimate["pooled"] == without["pooled"]
    shap = [{k: v for k, v in summaries[on]["models"]["t_xgb"]["shap"].items() if k != "seconds"}  # timing
            for on in (True, False)]
    assert shap[0]["ranking"] and shap[0] == shap[1]
