"""The verdict's dependence-aware calibration (validate.verdict_null), the run-level verdict and the constant-effect
yardstick."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mbi_predict.errors import ConfigError
from mbi_predict.validate.benefit import dr_loss_vs_constant
from mbi_predict.validate.heterogeneity import VerdictRule, resolve_run_rule, run_verdict
from mbi_predict.validate.loto import prepare_data
from mbi_predict.validate.verdict_null import calibrate, constant_effect_draw

COVARIATES = ["age", "baseline_distress", "baseline_anxiety", "baseline_mindfulness"]


def _wilson_high(k: int, n: int, z: float = 2.576) -> float:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return centre + z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)


def _prepared(seed: int = 1, n_trials: int = 4, n: int = 400):
    from mbi_predict.data.simulate import simulate_latent

    ipd = simulate_latent("null", seed=seed, n_trials=n_trials, n=n).ipd
    return prepare_data(ipd, outcome="distress_fu1_6", covariates=COVARIATES, study_traits=[])


# ------------------------------------------------------------------------------------------ the null draw

def test_constant_effect_draw_keeps_each_trials_design_and_missingness():
    data = _prepared()
    drawn = constant_effect_draw(data, np.random.default_rng(0))
    observed = np.isfinite(data.y)
    for trial in np.unique(data.trial):
        rows = data.trial == trial
        assert drawn.arm[rows].sum() == data.arm[rows].sum()  # the trial's allocation is kept
        # and its number of observed participants per arm (the held-out metrics need enough in each)
        assert drawn.arm[rows & observed].sum() == data.arm[rows & observed].sum()
    assert np.array_equal(np.isnan(drawn.y), np.isnan(data.y))
    assert drawn.truth_cate is None
    assert not np.array_equal(drawn.arm, data.arm)
    if "arm" in drawn.X.columns:
        assert np.array_equal(drawn.X["arm"].to_numpy(), drawn.arm)
    again = constant_effect_draw(data, np.random.default_rng(0))
    assert np.array_equal(again.arm, drawn.arm) and np.array_equal(again.y, drawn.y, equal_nan=True)


def test_constant_effect_draw_imputes_each_trials_own_effect():
    """With Y = c_k + tau_k T exactly, the draw is Y* = c_k + tau_k T*: the effect level is kept, trial by trial."""
    data = _prepared()
    trials = np.unique(data.trial)
    level = {t: i * 0.5 for i, t in enumerate(trials)}
    tau = {t: -0.2 - 0.1 * i for i, t in enumerate(trials)}
    y = np.array([level[t] + tau[t] * a for t, a in zip(data.trial, data.arm)], dtype=float)
    from dataclasses import replace

    exact = replace(data, y=y)
    drawn = constant_effect_draw(exact, np.random.default_rng(3))
    expected = np.array([level[t] + tau[t] * a for t, a in zip(drawn.trial, drawn.arm)])
    np.testing.assert_allclose(drawn.y, expected, atol=1e-12)


# ------------------------------------------------------------------------------------------ calibration

def test_studentised_calibration_is_uniform_and_at_level_under_the_null():
    """Observed and B null statistics exchangeable (normal, with a shift and scale the test must not know)."""
    rng = np.random.default_rng(11)
    reps, B = 4000, 19
    draws = rng.normal(0.7, 1.6, size=(reps, B + 1))
    p = np.array([calibrate("m", row[0], row[1:]).p_value for row in draws])
    assert stats.kstest(p, "uniform").pvalue > 0.01
    rejections = int((p < 0.05).sum())
    assert rejections / reps < _wilson_high(rejections, reps) and rejections / reps < 0.065
    assert rejections / reps > 0.035
    p_mc = np.array([calibrate("m", row[0], row[1:]).p_monte_carlo for row in draws])
    assert np.mean(p_mc <= 0.05) <= 0.065  # the rank p-value is valid too (at its attainable levels)


def test_calibration_has_power_against_a_shift():
    rng = np.random.default_rng(5)
    hits = [calibrate("m", 4.0 + rng.normal(), rng.normal(size=19)).p_value < 0.05 for _ in range(200)]
    assert np.mean(hits) > 0.9


def test_calibration_with_too_few_finite_draws_or_no_observed_statistic_tests_nothing():
    null = np.array([0.1, np.nan, np.nan, 0.3, -0.2, np.nan])
    assert math.isnan(calibrate("m", 2.0, null).p_value)
    assert calibrate("m", 2.0, null).B_used == 3
    assert math.isnan(calibrate("m", float("nan"), np.zeros(10) + np.arange(10)).p_value)
    ok = calibrate("m", 2.0, np.array([0.1, np.nan, 0.2, -0.4, 0.0, 0.3, -0.1]))
    assert ok.B == 7 and ok.B_used == 6 and 0 < ok.p_value < 1
    assert ok.p_monte_carlo == pytest.approx(1 / 8)


# ------------------------------------------------------------------------------------------ run-level verdict

def _model(verdict: str, p: float, beats: bool | None = True) -> dict:
    return {"verdict": verdict, "p_value": p, "beats_constant": beats, "reason": "r"}


def test_holm_over_models_and_the_constant_yardstick():
    rule = VerdictRule()
    per_model = {"a": _model("no_evidence", 0.03), "b": _model("no_evidence", 0.2), "c": _model("no_evidence", 0.4)}
    out = run_verdict(per_model, rule=rule, run_rule="holm", primary=None, method="m")
    assert out["verdict"] == "no_evidence"  # 3 x 0.03 = 0.09
    assert out["models"]["a"]["p_holm"] == pytest.approx(0.09)
    per_model["a"] = _model("evidence", 0.01)
    out = run_verdict(per_model, rule=rule, run_rule="holm", primary=None, method="m")
    assert out["verdict"] == "evidence" and "a (adjusted p 0.03)" in out["reason"]
    # a model that does not beat one average effect for everyone enters with p = 1 (heterogeneity_verdict sets it)
    per_model["a"] = _model("no_evidence", 1.0, beats=False)
    assert run_verdict(per_model, rule=rule, run_rule="holm", primary=None, method="m")["verdict"] == "no_evidence"


def test_primary_and_not_tested():
    rule = VerdictRule()
    per_model = {"a": _model("evidence", 0.01), "b": _model("not_tested", None)}
    assert run_verdict(per_model, rule=rule, run_rule="primary", primary="a", method="m")["verdict"] == "evidence"
    out = run_verdict(per_model, rule=rule, run_rule="holm", primary=None, method="m",
                      not_tested_reason="K-fold")
    assert out["verdict"] == "not_tested" and out["reason"] == "K-fold"
    only_untested = {"b": _model("not_tested", None), "c": _model("not_tested", None)}
    assert run_verdict(only_untested, rule=rule, run_rule="holm", primary=None, method="m")["verdict"] == \
        "not_tested"


def test_resolve_run_rule():
    assert resolve_run_rule(VerdictRule(), ["a"]) == ("primary", "a")
    assert resolve_run_rule(VerdictRule(), ["a", "b"]) == ("holm", None)
    assert resolve_run_rule(VerdictRule(primary_model="b"), ["a", "b"]) == ("primary", "b")
    with pytest.raises(ConfigError, match="primary_model: 'z' is not an effect model"):
        resolve_run_rule(VerdictRule(primary_model="z"), ["a", "b"])
    with pytest.raises(ConfigError, match="at least two effect models"):
        resolve_run_rule(VerdictRule(run_rule="holm"), ["a"])
    with pytest.raises(ConfigError, match="needs a primary_model"):
        resolve_run_rule(VerdictRule(run_rule="primary"), ["a", "b"])


# ------------------------------------------------------------------------------------------ yardstick

def test_dr_loss_vs_constant_is_the_difference_of_squared_errors():
    rng = np.random.default_rng(2)
    truth = rng.normal(-0.3, 0.4, 3000)
    pseudo = truth + rng.normal(0, 2.0, 3000)  # unbiased for the CATE, noisy
    good = dr_loss_vs_constant(pseudo, truth, -0.3)
    assert good["estimate"] < 0 and good["estimate"] / good["se"] < -2
    expected = np.mean((pseudo - truth) ** 2) - np.mean((pseudo + 0.3) ** 2)
    assert good["estimate"] == pytest.approx(expected)
    noise = dr_loss_vs_constant(pseudo, -0.3 + rng.normal(0, 0.6, 3000), -0.3)
    assert noise["estimate"] > 0  # predicting noise is worse than one effect for all
    assert math.isnan(dr_loss_vs_constant(pseudo, truth, float("nan"))["estimate"])


# ------------------------------------------------------------------------------------------ in the runner

def _config(scenario: str, seed: int, **heterogeneity) -> dict:
    return {"experiment": "verdict", "data": {"simulate": {"scenario": scenario, "seed": seed, "n_trials": 5,
                                                           "n": 500}},
            "outcome": "distress_fu1_6", "covariates": COVARIATES,
            "models": [{"name": "lin", "kind": "effect", "estimator": "interaction_linear", "params": {"alpha": 0}}],
            "validation": {"n_jobs": 1, "bootstrap": 10},
            "heterogeneity": {"null_B": 6, **heterogeneity}, "tracking": {"enabled": False}, "seed": seed}


def _run(config: dict, tmp_path):
    from mbi_predict.runner import run_experiment

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiment(config, out_dir=tmp_path, progress=False).summary


def test_runner_writes_one_run_level_verdict_with_its_calibration(tmp_path):
    summary = _run(_config("strong", 2), tmp_path)
    run = summary["heterogeneity"]
    assert run["rule"] == "primary" and run["primary_model"] == "lin" and run["verdict"] in ("evidence",
                                                                                          "no_evidence")
    assert "permutation" in run["method"]
    model = summary["models"]["lin"]["heterogeneity"]
    assert model["calibration"]["B"] == 6
    for metric in ("rate_autoc", "benefit_calibration_slope"):
        test = model["calibration"]["tests"][metric]
        assert test["B"] == 6 and 0 <= test["p_value"] <= 1 and test["naive_p"] is not None
    assert "dr_loss_vs_constant" in summary["models"]["lin"]["pooled"]
    assert any(t["name"] == "beats_constant_effect" for t in model["tests"])
    # same seed, same verdict numbers
    again = _run(_config("strong", 2), tmp_path / "again")
    assert again["models"]["lin"]["heterogeneity"]["calibration"] == model["calibration"]


def test_kfold_over_several_trials_gives_no_verdict_unless_asked(tmp_path):
    config = _config("null", 3, null_B=5)
    config["validation"] = {**config["validation"], "scheme": "kfold", "folds": 3}
    summary = _run(config, tmp_path)
    assert summary["heterogeneity"]["verdict"] == "not_tested"
    assert "K-fold" in summary["heterogeneity"]["reason"]
    assert summary["models"]["lin"]["heterogeneity"]["verdict"] == "not_tested"
    config["heterogeneity"] = {**config["heterogeneity"], "internal_validation": True}
    asked = _run(config, tmp_path / "asked")
    assert asked["heterogeneity"]["verdict"] in ("evidence", "no_evidence")


def test_calibration_none_gives_no_verdict(tmp_path):
    summary = _run(_config("null", 4, calibration="none"), tmp_path)
    assert summary["heterogeneity"]["verdict"] == "not_tested"
    assert summary["models"]["lin"]["heterogeneity"]["naive_verdict"] in ("evidence", "no_evidence")


def test_bad_rule_is_one_line_exit_2(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from mbi_predict.cli import app

    config = _config("null", 1, primary_model="missing")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "primary_model" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "o" / "summary.json").exists()


# ------------------------------------------------------------------------------------------ slow: error rate

@pytest.mark.slow
def test_calibrated_null_pvalues_are_uniform_over_null_consortia(tmp_path):
    """40 no-heterogeneity consortia: the calibrated one-sided p-values of the pooled RATE and slope are uniform
    (KS) and the verdict's false-positive rate is compatible with alpha, where the naive p-values are not needed to
    be. (The full benchmark with flexible learners: experiments/benchmarks/heterogeneity_verdict_rates.py.)"""
    rates, slopes, verdicts = [], [], []
    for seed in range(1, 41):
        config = _config("null", seed, null_B=19)
        config["data"]["simulate"].update(n_trials=6, n=600)
        config["validation"] = {**config["validation"], "n_jobs": 2, "bootstrap": 20}
        summary = _run(config, tmp_path / str(seed))
        tests = summary["models"]["lin"]["heterogeneity"]["calibration"]["tests"]
        rates.append(tests["rate_autoc"]["p_value"])
        slopes.append(tests["benefit_calibration_slope"]["p_value"])
        verdicts.append(summary["heterogeneity"]["verdict"] == "evidence")
    for pvalues in (rates, slopes):
        finite = [p for p in pvalues if p is not None and np.isfinite(p)]
        assert len(finite) >= 38
        assert stats.kstest(finite, "uniform").pvalue > 0.01
    # P(X >= 7 | n = 40, p = 0.05) = 0.003
    assert sum(verdicts) <= 6
