"""The pre-declared heterogeneity verdict on constructed pooled results."""

import numpy as np
import pytest
from pydantic import ValidationError
from statsmodels.stats.multitest import multipletests

from mbi_predict.errors import ConfigError
from mbi_predict.validate.heterogeneity import VerdictRule, heterogeneity_verdict
from mbi_predict.validate.heterogeneity import holm as _holm


def pooled(rate=(0.15, 0.05), slope=(0.9, 0.3), **extra):
    def entry(est, se):
        return dict(estimate=est, se=se, ci_low=est - 1.96 * se, ci_high=est + 1.96 * se, **extra)
    return {"rate_autoc": entry(*rate), "benefit_calibration_slope": entry(*slope)}


def test_evidence_needs_both_rate_and_slope():
    assert heterogeneity_verdict(pooled())["verdict"] == "evidence"
    assert heterogeneity_verdict(pooled(slope=(0.4, 0.3)))["verdict"] == "no_evidence"  # slope CI includes 0
    assert heterogeneity_verdict(pooled(rate=(0.05, 0.05)))["verdict"] == "no_evidence"
    assert heterogeneity_verdict(pooled(rate=(-0.2, 0.05)))["verdict"] == "no_evidence"  # worse than random
    only_rate = VerdictRule(require_calibration_slope=False)
    result = heterogeneity_verdict(pooled(slope=(0.4, 0.3)), rule=only_rate)
    assert result["verdict"] == "evidence" and [t["metric"] for t in result["tests"]] == ["rate_autoc"]


def test_tests_report_one_sided_p_values_and_the_rule():
    result = heterogeneity_verdict(pooled(rate=(0.1, 0.05)))
    rate_test = result["tests"][0]
    assert rate_test["p_value"] == pytest.approx(0.02275, abs=1e-4)  # 1 - Phi(2)
    assert result["rule"]["alpha"] == 0.05 and "rate" in result["reason"].lower()


def test_df_makes_the_test_a_t_test():
    borderline = pooled(rate=(0.1, 0.05))
    assert heterogeneity_verdict(borderline)["verdict"] == "evidence"  # z = 2, p = 0.023
    with_df = pooled(rate=(0.1, 0.05), df=3)  # t(3): p = 0.07
    assert heterogeneity_verdict(with_df)["verdict"] == "no_evidence"


def test_se_recovered_from_the_interval():
    no_se = pooled()
    for entry in no_se.values():
        del entry["se"]
    result = heterogeneity_verdict(no_se)
    assert result["tests"][0]["se"] == pytest.approx(0.05, rel=1e-4)  # the fixture used 1.96, not 1.95996
    with pytest.raises(ConfigError):
        heterogeneity_verdict({"rate_autoc": {"estimate": 0.1}, "benefit_calibration_slope": {"estimate": 1.0}})


def test_too_few_trials_and_missing_metric():
    assert heterogeneity_verdict(pooled(k=2))["verdict"] == "no_evidence"
    assert heterogeneity_verdict(pooled(k=5))["verdict"] == "evidence"
    with pytest.raises(ConfigError, match="rate_autoc"):
        heterogeneity_verdict({"benefit_calibration_slope": pooled()["benefit_calibration_slope"]})
    nan_rate = pooled(rate=(float("nan"), 0.05))
    assert heterogeneity_verdict(nan_rate)["verdict"] == "no_evidence"


def test_holm_matches_statsmodels():
    p = {"age": 0.01, "baseline_distress": 0.04, "gender": 0.03, "education": 0.5}
    expected = multipletests(list(p.values()), method="holm")[1]
    assert list(_holm(p).values()) != [] and all(_holm(p)[k] == pytest.approx(e) for k, e in zip(p, expected))


def test_interactions_report_or_alternative_with_split_alpha():
    null_model = pooled(rate=(0.0, 0.05), slope=(0.0, 0.3))
    strong = {"baseline_distress": 0.001, "age": 0.4}
    reported = heterogeneity_verdict(null_model, interaction_pvalues=strong)
    assert reported["verdict"] == "no_evidence" and len(reported["tests"]) == 4
    alternative = VerdictRule(interaction_role="alternative")
    assert heterogeneity_verdict(null_model, rule=alternative, interaction_pvalues=strong)["verdict"] == "evidence"
    # p = 0.02 (Holm x2 = 0.04) would pass at 0.05 but not at the split alpha of 0.025
    weak = {"baseline_distress": 0.02, "age": 0.4}
    assert heterogeneity_verdict(null_model, rule=alternative, interaction_pvalues=weak)["verdict"] == "no_evidence"
    # the model route is tested at alpha/2 too when interactions are an alternative
    borderline = pooled(rate=(0.09, 0.05))  # one-sided p = 0.036
    assert heterogeneity_verdict(borderline)["verdict"] == "evidence"
    assert heterogeneity_verdict(borderline, rule=alternative, interaction_pvalues=weak)["verdict"] == "no_evidence"
    ignored = heterogeneity_verdict({**null_model, "interaction_pvalues": strong}, rule=VerdictRule(
        interaction_role="ignore"))
    assert len(ignored["tests"]) == 2


def test_false_positive_rate_at_most_alpha_under_the_null():
    """No heterogeneity: pooled estimates are noise around 0. Even perfectly correlated metrics stay <= alpha."""
    rng = np.random.default_rng(0)
    for correlation in (0.0, 1.0):
        z_rate = rng.normal(size=4000)
        z_slope = correlation * z_rate + np.sqrt(1 - correlation**2) * rng.normal(size=4000)
        hits = [heterogeneity_verdict(pooled(rate=(zr * 0.05, 0.05), slope=(zs * 0.3, 0.3)))["verdict"] == "evidence"
                for zr, zs in zip(z_rate, z_slope)]
        assert np.mean(hits) < 0.05 + 0.012


def test_rule_is_a_declarable_config_object():
    rule = VerdictRule.model_validate({"alpha": 0.1, "interaction_role": "alternative"})
    assert rule.alpha == 0.1 and rule.model_dump()["rate_metric"] == "rate_autoc"
    with pytest.raises(ValidationError):
        VerdictRule.model_validate({"alpha": 0.1, "alpah": 0.2})
    with pytest.raises(ValidationError):
        VerdictRule(alpha=0.7)
    with pytest.raises(ValidationError):
        rule.alpha = 0.2  # frozen: a declared rule cannot be changed after the fact


def test_nothing_pooled_is_no_evidence():
    from mbi_predict.validate.heterogeneity import heterogeneity_verdict

    empty = {"estimate": None, "ci_low": None, "ci_high": None, "k": 0}
    out = heterogeneity_verdict({"rate_autoc": empty, "benefit_calibration_slope": empty})
    assert out["verdict"] == "no_evidence"
