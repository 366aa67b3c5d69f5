"""Best linear projection of the MBI effect (`mbi_predict.validate.projection`)."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from mbi_predict.errors import ConfigError, DataError
from mbi_predict.validate.projection import best_linear_projection, blp_from_scores, encode_covariates

TRUTH_COLUMN = "true_effect_passive_distress_fu1_6"   # attach_truth's true_effect_{control}_{outcome}
OUTCOME = "distress_fu1_6"
COVARIATES = ["age", "gender", "education", "baseline_distress", "baseline_mindfulness"]
PROJECTED = ["baseline_distress", "baseline_mindfulness"]


def _toy(seed: int = 0, n_trials: int = 6, n_per: int = 80):
    rng = np.random.default_rng(seed)
    trial = np.repeat([f"T{k}" for k in range(n_trials)], n_per)
    n = len(trial)
    t = np.concatenate([rng.permutation(np.arange(n_per) < n_per // 2) for _ in range(n_trials)]).astype(int)
    x1 = rng.normal(size=n)
    X = pd.DataFrame({"x1": x1, "x2": rng.normal(size=n), "sex": rng.choice(["f", "m"], size=n)})
    y = 0.5 * x1 + t * (0.3 + 0.4 * x1) + rng.normal(size=n)
    return X, y, t, trial


def test_ols_and_cr1_match_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(7), rng.integers(20, 60, size=7))
    n = len(groups)
    Z = np.column_stack([rng.normal(size=n), rng.normal(size=n) + 0.3 * (groups % 3)])
    scores = 0.2 + Z @ np.array([0.5, -0.3]) + rng.normal(size=n) + rng.normal(size=7)[groups]
    ours = blp_from_scores(scores, Z, groups, names=["a", "b"], alpha=0.05)
    design = sm.add_constant(Z - Z.mean(axis=0))
    # statsmodels' CRV1: use_correction=True scales by G/(G-1) (n-1)/(n-k); df_correction (default True) makes
    # the t tests and intervals use G - 1 degrees of freedom
    fit = sm.OLS(scores, design).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": True},
                                     use_t=True)
    assert ours.df == 6 == fit.df_resid_inference
    assert np.allclose([t.estimate for t in ours.terms], fit.params, atol=1e-8, rtol=0)
    assert np.allclose([t.se for t in ours.terms], fit.bse, atol=1e-8, rtol=0)
    assert np.allclose([t.pvalue for t in ours.terms], fit.pvalues, atol=1e-8, rtol=0)
    ci = fit.conf_int(alpha=0.05)
    assert np.allclose([[t.ci_low, t.ci_high] for t in ours.terms], ci, atol=1e-8, rtol=0)
    assert ours.terms[0].estimate == pytest.approx(scores.mean())   # centred covariates: intercept = mean score


def test_result_shape_and_intercept_first():
    X, y, t, trial = _toy()
    result = best_linear_projection(X, y, t, trial, covariates=["x1", "sex"], seed=1)
    out = result.to_dict()
    assert list(out) == ["terms", "clusters", "n_clusters", "n", "df", "method", "note"]
    assert [term["term"] for term in out["terms"]] == ["intercept", "x1", "sex=m"]
    assert set(out["terms"][0]) == {"term", "estimate", "se", "ci_low", "ci_high", "pvalue"}
    assert out["clusters"] == "trial_id" and out["n_clusters"] == 6 and out["df"] == 5 and out["n"] == len(y)
    x1 = result.term("x1")
    assert x1.ci_low < 0.4 < x1.ci_high and x1.ci_low > 0


def test_seeded_reproducibility_and_level():
    X, y, t, trial = _toy(seed=5)
    a = best_linear_projection(X, y, t, trial, seed=7).to_dict()
    b = best_linear_projection(X, y, t, trial, seed=7).to_dict()
    assert a == b
    wide = best_linear_projection(X, y, t, trial, seed=7, level=0.99).term("x1")
    narrow = best_linear_projection(X, y, t, trial, seed=7, alpha=0.05).term("x1")
    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low


def test_given_propensity_array_input_and_binary_outcome():
    X, y, t, trial = _toy(seed=4)
    share = pd.Series(t).groupby(trial).transform("mean").to_numpy()
    default = best_linear_projection(X, y, t, trial, seed=2).to_dict()
    assert best_linear_projection(X, y, t, trial, propensity=share, seed=2).to_dict() == default
    plain = best_linear_projection(X[["x1", "x2"]].to_numpy(), y, t, trial, covariates=["x0"], seed=2)
    assert [term.term for term in plain.terms] == ["intercept", "x0"]
    binary = best_linear_projection(X, (y > 0).astype(float), t, trial, covariates=["x1"], seed=2)
    assert all(np.isfinite([term.estimate, term.se]).all() for term in binary.terms)


def test_missing_outcomes_and_covariates_are_counted():
    X, y, t, trial = _toy(seed=2)
    y = y.copy()
    y[:10] = np.nan
    X = X.copy()
    X.loc[20:24, "x2"] = np.nan
    result = best_linear_projection(X, y, t, trial, covariates=["x1", "x2"], seed=0)
    assert result.n_dropped_outcome == 10 and result.n_dropped_covariates == 5
    assert result.n == len(y) - 15
    assert "10 rows with a missing outcome" in result.note and "5 rows missing" in result.note


def test_encoding_drop_first():
    encoded = encode_covariates(pd.DataFrame({"g": ["b", "a", None, "c"], "v": [1, 2, 3, 4]}))
    assert list(encoded.columns) == ["g=b", "g=c", "v"]
    assert np.isnan(encoded.loc[2, "g=b"]) and encoded.loc[0, "g=b"] == 1.0


def test_bad_inputs_are_one_line_errors():
    X, y, t, trial = _toy()
    with pytest.raises(ConfigError, match="column not_there") as err:
        best_linear_projection(X, y, t, trial, covariates=["x1", "not_there"])
    assert err.value.column == "not_there" and "\n" not in str(err.value)
    keep = np.isin(trial, ["T0", "T1"])
    with pytest.raises(DataError, match="at least 3 trials"):
        best_linear_projection(X[keep], y[keep], t[keep], trial[keep])
    t_bad = t.copy()
    t_bad[trial == "T2"] = 1
    with pytest.raises(DataError, match="no control participant") as err:
        best_linear_projection(X, y, t_bad, trial)
    assert err.value.trial == "T2" and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="disagree"):
        best_linear_projection(X, y, t, trial, alpha=0.1, level=0.95)


def _analysis(scenario: str, seed: int):
    """MBI + passive-control rows of a simulated consortium with the true individual effect on distress_fu1_6."""
    from mbi_predict.data.simulate import simulate_latent

    sim = simulate_latent(scenario, seed=seed, n_trials=12, n=2400)
    ipd = sim.ipd[(sim.ipd["arm"] == 1) | (sim.ipd["control_type"] == "passive")]
    truth = sim.truth.set_index(["trial_id", "participant_id"])[TRUTH_COLUMN]
    tau = truth.reindex(pd.MultiIndex.from_frame(ipd[["trial_id", "participant_id"]])).to_numpy(dtype=float)
    has_truth = np.isfinite(tau)   # MBI rows of trials with only an active control have no passive contrast
    return ipd[has_truth].reset_index(drop=True), tau[has_truth]


def _true_blp(ipd: pd.DataFrame, tau: np.ndarray) -> np.ndarray:
    """OLS of the true individual effects on (1, centred covariates), on exactly the rows the estimator projects
    (observed outcome, all projected covariates observed). Conditional on these rows' covariates, E[score | X] is the
    true effect, so the estimator is unbiased for this projection (its CR1 SE also carries the between-trial
    variation, so it is if anything conservative for it); a large separate draw would add X-sampling noise and a
    different set of trials (those without mindfulness drop out) to the comparison."""
    Z = ipd[PROJECTED].to_numpy(dtype=float)
    rows = np.isfinite(ipd[OUTCOME].to_numpy(dtype=float)) & np.all(np.isfinite(Z), axis=1)
    design = np.column_stack([np.ones(rows.sum()), Z[rows] - Z[rows].mean(axis=0)])
    return np.linalg.lstsq(design, tau[rows], rcond=None)[0]


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


N_SEEDS = 100   # about 0.35-0.6 s per fit on one core: both scenarios in about 100 s


def coverage_counts(n_seeds: int) -> dict[tuple[str, str], int]:
    """(scenario, covariate) -> in how many of seeds 0..n_seeds-1 the 95% interval of the covariate's BLP slope covers
    its target: the true projection in 'strong', 0 in 'null' (also run on more seeds by
    experiments/benchmarks/projection_coverage.py)."""
    covered = {("strong", c): 0 for c in PROJECTED} | {("null", c): 0 for c in PROJECTED}
    for scenario in ("strong", "null"):
        for seed in range(n_seeds):
            ipd, tau = _analysis(scenario, seed)
            result = best_linear_projection(ipd[COVARIATES], ipd[OUTCOME], ipd["arm"], ipd["trial_id"],
                                            covariates=PROJECTED, seed=seed)
            beta = _true_blp(ipd, tau)
            for j, name in enumerate(PROJECTED):
                term = result.term(name)
                target = beta[j + 1] if scenario == "strong" else 0.0
                covered[scenario, name] += bool(term.ci_low <= target <= term.ci_high)
    return covered


@pytest.mark.slow
def test_coverage_on_the_simulator():
    """95% intervals of the BLP slopes of baseline_distress and baseline_mindfulness over ``N_SEEDS`` simulated
    consortia (12 trials, 2400 participants, MBI + passive-control rows; the 2-3 trials that never measured
    mindfulness drop out of the projection, leaving 7-8 trials): they should cover the true projection ("strong")
    and zero ("null") in at least 90% of seeds.

    Measured (seeds 0-199): distress 93.0% in both scenarios; mindfulness 90.5% (strong) and 90.0% (null); on
    seeds 0-99: 92/90 (strong) and 92/89 (null). CR1 with t_{G-1} and ~7.6 unequal trials undercovers its nominal
    95% (Cameron & Miller 2015, sec. VI), so mindfulness sits at the 90% line and a point threshold of 90% would
    pass or fail with the seed range. The test therefore fails only when coverage is credibly below 90%: the Wilson
    95% interval of the coverage must reach 0.90.
    """
    started = time.perf_counter()
    covered = coverage_counts(N_SEEDS)
    seconds = time.perf_counter() - started
    report = {f"{s}/{c}": (float(k) / N_SEEDS, wilson(int(k), N_SEEDS)) for (s, c), k in covered.items()}
    print(f"\nBLP coverage over {N_SEEDS} seeds ({seconds:.0f} s):", report)
    for key, (rate, (low, high)) in report.items():
        assert high >= 0.90, f"{key}: coverage {rate:.2f} (Wilson 95% {low:.2f}-{high:.2f}) credibly below 0.90"
