"""The command line: one-line errors with exit 2 and no traceback; commands call the API."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mbi_predict.cli import app
from mbi_predict.data.simulate import simulate_latent

runner = CliRunner()


@pytest.fixture(scope="module")
def ipd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ipd") / "ipd.parquet"
    simulate_latent("galante2023", seed=3, n_trials=5, n=700).ipd.to_parquet(path)
    return path


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("simulate", "harmonise", "describe", "meta", "run", "compare", "ui", "explain", "card",
                    "predict", "demo"):
        assert command in result.output


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_describe_a_missing_file_is_one_line(tmp_path):
    _one_line_error(runner.invoke(app, ["describe", str(tmp_path / "nope.parquet")]), "nope.parquet")


def test_meta_unknown_outcome_names_the_column(ipd_file):
    _one_line_error(runner.invoke(app, ["meta", str(ipd_file), "--outcome", "not_a_column"]), "not_a_column")


def test_meta_json_has_the_documented_shape(ipd_file, tmp_path):
    result = runner.invoke(app, ["meta", str(ipd_file), "--outcome", "distress_fu1_6", "--modifiers",
                                 "baseline_distress", "--json", "--m", "2", "--out", str(tmp_path / "meta")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"pooled", "per_trial", "interactions"} <= set(out)
    assert {"estimate", "se", "ci_low", "ci_high", "tau2", "i2", "pi_low", "pi_high", "k"} <= set(out["pooled"])
    assert {"trial_id", "n", "estimate", "se", "ci_low", "ci_high", "weight"} <= set(out["per_trial"][0])
    assert {"modifier", "estimate", "ci_low", "ci_high", "pvalue", "across_trial_estimate"} <= set(
        out["interactions"][0])
    assert (tmp_path / "meta" / "forest.png").exists()


def test_bad_control_and_malformed_config(ipd_file, tmp_path):
    _one_line_error(runner.invoke(app, ["meta", str(ipd_file), "--outcome", "distress_fu1_6", "--control", "x"]),
                    "--control")
    config = tmp_path / "bad.yaml"
    config.write_text("experiment: x\nmodels: [\n", encoding="utf-8")
    _one_line_error(runner.invoke(app, ["run", str(config), "--no-progress"]), "bad.yaml")


def test_simulate_harmonise_describe_round(tmp_path):
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "c"), "--trials", "3", "--n", "300",
                                 "--seed", "5"])
    assert result.exit_code == 0, result.output
    spec = tmp_path / "c" / "consortium.yaml"
    result = runner.invoke(app, ["harmonise", str(spec), "--out", str(tmp_path / "ipd.parquet")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["describe", str(tmp_path / "ipd.parquet")])
    assert result.exit_code == 0 and "T01" in result.output


def test_card_for_an_unknown_run_is_one_line(tmp_path):
    _one_line_error(runner.invoke(app, ["card", str(tmp_path / "no_such_run")]))
