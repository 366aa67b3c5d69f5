"""A null reference for CATE importances: what would SHAP say if nobody benefited differently?

Any flexible CATE model attributes *some* importance to every covariate, even when the effect is the same for
everyone: its CATE is partly noise, and SHAP explains noise too. So an importance means nothing until compared with
the importance the same pipeline produces when heterogeneity is absent by construction. Permuting the arm *within
each trial* does that: it keeps each trial's size, allocation ratio and outcome distribution (so trial differences in
level cannot leak in) but breaks every link between covariates and the effect of the arm.

Constant effect kept under the null (``keep_average_effect``, on by default for non-binary outcomes): a plain
permutation tests "the arm does nothing", which an average benefit already contradicts. We test the hypothesis of
interest, "each trial's effect is the same for everyone in it": with tau_k the difference in means of trial k,
Y0 = Y - tau_k T is imputed and the null outcome is Y* = Y0 + tau_k T* (T* the permuted arm). This is the plug-in
version of the Fisher randomisation test for a constant effect (Ding, Feller & Miratrix 2016, "Randomization
inference for treatment effect variation", JRSS-B 78:655), valid up to the estimation of tau_k. 0/1 outcomes are
permuted plainly (Y* would leave {0, 1}).

The family-wise test: studentised max-T, step-down (Westfall & Young 1993, "Resampling-based multiple testing",
Wiley; Dudoit, Shaffer & Boldrick 2003, Stat. Sci. 18:71). The B + 1 fits (observed and null) form a (B + 1) x m
matrix of importances. Each entry is studentised *leave-one-out*: z_if = (I_if - mean_{k!=i} I_kf) /
(sd_{k!=i} I_kf + s0), so the same function is applied to every fit and, under the null, the observed row stays
exchangeable with the B null rows. s0 is the "fudge factor" of SAM (Tusher, Tibshirani & Chu 2001, PNAS 98:5116),
here the largest per-feature SD across all B + 1 fits (a symmetric function of the fits, so exchangeability holds):
a feature that a sparse learner uses in one fit only has a leave-one-out SD of 0, and without s0 that fit's
statistic would be infinite and swamp every null maximum (the failure of the earlier ratio statistic). With
s0 = max SD no statistic exceeds its raw deviation (in CATE units) / s0, and a feature with a large null spread is
discounted about twofold at most, so the comparison across features stays close to "moves predicted benefit by
more than any covariate does under the null". On the project's simulator (experiments/benchmarks/
shap_null_rates.py, three learners, 50 seeds per scenario) this s0 found the true modifiers at least as often as
SAM's median SD (both modifiers with the elastic-net T-learner in 14 vs 9 of 50 seeds) at the same error rate;
the choice of s0 does not affect validity. Features are taken in decreasing order of their observed z; feature r's
adjusted p is ``(1 + #{b: max over not-yet-declared features of z_b >= z_r}) / (B + 1)``, made monotone. Ties
count against the feature (>=), so under the complete null P(any declared) <= floor(alpha (B + 1)) / (B + 1) <=
alpha exactly (the observed maximum is one of B + 1 exchangeable values).

What a declaration means: the permutation breaks every arm-covariate link at once, so the error control is exact
under the complete null (no covariate predicts benefit); the step-down's control of a *partial* null needs subset
pivotality (Westfall & Young 1993), which refits of a penalised learner only approximate. A covariate correlated
with a true modifier (a proxy) is in the model's sense predictive of benefit and may be declared; the classical
within-trial interactions (``side_by_side``) are the place to ask about one covariate given the others.

Why not min-P (Ge, Dudoit & Speed 2003, TEST 12:1): it needs no comparable statistics, but its per-feature
permutation p-values take only B + 1 values; with m features a null fit reaches the smallest one in some feature
with probability about 1 - (1 - 1/(B+1))^m (0.34 for B = 19, m = 8), so the strongest modifier's adjusted p stays
far above 0.05 (on the simulator's 300 benchmark fits min-P declared a covariate once, in 150 seeds with true
modifiers); min-P needs B in the hundreds, and each B is a full refit here.

Per feature we also report the observed importance, null mean and 95th percentile, the per-feature permutation
p-value of the statistic, ``(1 + #{b: z_bf >= z_0f}) / (B + 1)``, and, descriptively only, ``exceeds_null_max``.

Edge cases: a feature with importance 0 in every fit has z = 0 everywhere and p = 1 (never declared); a feature
used in the observed fit and in no null fit gets a finite z (s0 > 0) and per-feature p = 1/(B+1).
The smallest attainable adjusted p is 1/(B+1): when it exceeds alpha (B < 1/alpha - 1, e.g. B = 5 at 0.05) nothing
can be declared, so no decision is made: ``beats_null`` is None, ``test_status`` "not_tested", with the reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import ConfigError
from mbi_predict.validate.verdict_null import constant_effect_outcome  # the one constant-effect null outcome

RULES = ("auto", "pvalue", "exceeds_null_max")
#: s0 = this percentile of the per-feature SDs (module docstring)
S0_QUANTILE = 100.0
METHOD = ("studentised max-T, Westfall-Young step-down over the B + 1 fits (leave-one-out studentisation, "
          "SAM fudge s0 = the largest per-feature SD)")


def permute_within_groups(T, groups, rng: np.random.Generator) -> np.ndarray:
    """T with its values shuffled inside each group (trial): every trial keeps its own treated count."""
    t = np.asarray(T).reshape(-1)
    if groups is None:
        return rng.permutation(t)
    g = np.asarray(groups).reshape(-1)
    if len(g) != len(t):
        raise ConfigError(f"groups has {len(g)} rows but T has {len(t)}")
    out = t.copy()
    codes = pd.factorize(g)[0]
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        out[idx] = t[rng.permutation(idx)]
    return out


def required_B(alpha: float) -> int:
    """The smallest B with 1/(B+1) <= alpha."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


def insufficient_B_message(B: int, alpha: float = 0.05) -> str | None:
    """The one-line note when B permutations cannot reach alpha family-wise (None when they can)."""
    if B >= required_B(alpha):
        return None
    return (f"B = {B} cannot reach alpha {alpha:g} family-wise (needs B >= {required_B(alpha)}): SHAP rankings "
            "reported as not tested")


def _is_binary(Y) -> bool:
    y = np.asarray(Y, dtype=float)
    return bool(np.all(np.isin(y[np.isfinite(y)], (0.0, 1.0))))


def null_draws(T, groups, *, B: int, seed: int, Y=None,
               keep_average_effect: bool = True) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The B null (arm, outcome) pairs: within-trial permutations of T drawn from ``SeedSequence([seed, 7919])``
    and, when ``Y`` is given, non-binary and ``keep_average_effect``, the constant-effect outcome (else None: the
    observed Y). ``permutation_null`` and ``explain.run.null_tasks`` both draw here, so they agree."""
    t = np.asarray(T).reshape(-1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    impute = Y is not None and keep_average_effect and not _is_binary(Y)
    draws = []
    for _ in range(B):
        arm = permute_within_groups(t, groups, rng)
        draws.append((arm, constant_effect_outcome(Y, t, arm, groups) if impute else None))
    return draws


@dataclass(frozen=True)
class NullReference:
    """Observed importances against B within-trial-permutation refits (see the module docstring).

    ``beats_null[f]`` is True/False when the test was made, None when it could not be (``test_status`` is then
    "not_tested" and ``reason`` says why).
    """

    observed: dict[str, float]
    null: pd.DataFrame  # B rows (one per permutation) x features
    pvalue: dict[str, float]
    pvalue_familywise: dict[str, float]
    beats_null: dict[str, bool | None]
    rule: str
    alpha: float
    familywise: bool
    B: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    statistic: dict[str, float] = field(default_factory=dict)
    test_status: str = "tested"
    reason: str | None = None
    method: str = METHOD

    @property
    def min_attainable_p(self) -> float:
        return 1.0 / (self.B + 1)

    @property
    def tested(self) -> bool:
        return self.test_status == "tested"

    @property
    def decision_p(self) -> dict[str, float]:
        """The p-value the decision uses: family-wise adjusted when ``familywise``, else per feature."""
        return self.pvalue_familywise if self.familywise else self.pvalue

    def summary_frame(self) -> pd.DataFrame:
        null_mean = self.null.mean(axis=0)
        rows = [{"feature": f, "observed": obs, "statistic": self.statistic.get(f, math.nan),
                 "null_mean": float(null_mean[f]), "null_p95": float(self.null[f].quantile(0.95)),
                 "null_max": float(self.null[f].max()),
                 "ratio_to_null_mean": obs / float(null_mean[f]) if null_mean[f] > 0 else math.nan,
                 "exceeds_null_max": bool(obs > float(self.null[f].max())),
                 "pvalue": self.pvalue[f], "pvalue_familywise": self.pvalue_familywise[f],
                 "beats_null": self.beats_null[f], "test_status": self.test_status}
                for f, obs in self.observed.items()]
        return pd.DataFrame(rows).sort_values("observed", ascending=False).reset_index(drop=True)

    def describe_rule(self) -> str:
        scope = "family-wise (studentised max-T, step-down)" if self.familywise else "per feature"
        head = f"{scope}: adjusted p <= alpha = {self.alpha:g}" if self.familywise else \
            f"{scope}: p <= alpha = {self.alpha:g}"
        text = f"{head}; B = {self.B} within-trial permutations of the arm"
        return text if self.tested else f"not tested ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        records = self.summary_frame().astype(object).to_dict(orient="records")
        clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                 for r in records]
        return {"rule": self.describe_rule(), "method": self.method, "B": self.B, "alpha": self.alpha,
                "min_attainable_p": self.min_attainable_p, "familywise": self.familywise,
                "test_status": self.test_status, "reason": self.reason, "features": clean,
                "notes": list(self.notes)}


def studentised(matrix: np.ndarray, s0_quantile: float = S0_QUANTILE) -> np.ndarray:
    """Leave-one-out studentised importances of a (fits x features) matrix, with the fudge s0 (module doc): the
    ``s0_quantile`` (in [0, 100]) of the per-feature SDs over all fits, over the features that vary."""
    m = np.asarray(matrix, dtype=float)
    n = m.shape[0]
    spread = m.std(axis=0, ddof=1) if n > 1 else np.zeros(m.shape[1])
    positive = spread[spread > 0]
    s0 = float(np.percentile(positive, s0_quantile)) if positive.size else 1.0
    z = np.empty_like(m)
    for i in range(n):
        others = np.delete(m, i, axis=0)
        centre = others.mean(axis=0) if len(others) else np.zeros(m.shape[1])
        scale = others.std(axis=0, ddof=1) if len(others) > 1 else np.zeros(m.shape[1])
        z[i] = (m[i] - centre) / (scale + s0)
    z[:, spread == 0] = 0.0  # a constant feature (e.g. unused everywhere): no evidence, exactly 0
    return z


def step_down_maxt(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Westfall–Young step-down max-T adjusted p-values (observed: m statistics; null: B x m), ties against."""
    B = null.shape[0]
    order = np.argsort(-observed, kind="stable")
    adjusted = np.empty(len(observed))
    running = 0.0
    for position, feature in enumerate(order):
        null_max = null[:, order[position:]].max(axis=1)
        running = max(running, (1 + np.sum(null_max >= observed[feature])) / (B + 1))
        adjusted[feature] = running
    return adjusted


def null_reference(observed: Mapping[str, float], null_rows: list[Mapping[str, float]], *, alpha: float = 0.05,
                   rule: str = "auto", familywise: bool = True) -> NullReference:
    """Decide which observed importances beat the null importances (rows: one dict per permutation).

    ``rule`` "auto" and "pvalue" are the same test; "exceeds_null_max" is deprecated (a level-1/(B+1) test) and
    now means "pvalue" (``exceeds_null_max`` stays a descriptive column of ``summary_frame``).
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {RULES}, got {rule!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if rule == "exceeds_null_max":
        warnings.warn("rule='exceeds_null_max' is deprecated (a test at level 1/(B+1)); using 'pvalue'",
                      DeprecationWarning, stacklevel=2)
    B = len(null_rows)
    if B < 1:
        raise ConfigError("the null reference needs at least one permutation (B >= 1)")
    features = list(observed)
    null = pd.DataFrame([{f: float(row.get(f, 0.0)) for f in features} for row in null_rows], columns=features)
    obs = np.array([float(observed[f]) for f in features])
    matrix = np.vstack([obs, null.to_numpy(dtype=float)]).reshape(B + 1, len(features))
    if not np.all(np.isfinite(matrix)):
        bad = sorted({features[j] for j in np.flatnonzero(~np.all(np.isfinite(matrix), axis=0))})
        raise ConfigError(f"importance of feature(s) {bad} is not finite in some fit: the null test needs numbers")
    z = studentised(matrix)
    per_feature = (1 + (z[1:] >= z[0][None, :]).sum(axis=0)) / (B + 1)
    familywise_p = np.maximum(step_down_maxt(z[0], z[1:]), per_feature)
    notes, status, reason = [], "tested", None
    message = insufficient_B_message(B, alpha)
    if message is not None:
        status, reason = "not_tested", message
        notes.append(message)
        warnings.warn(message, UserWarning, stacklevel=2)
        beats: dict[str, bool | None] = {f: None for f in features}
    else:
        decision_p = familywise_p if familywise else per_feature
        beats = {f: bool(p <= alpha * (1 + 1e-12)) for f, p in zip(features, decision_p)}
    return NullReference(observed=dict(zip(features, obs.tolist())), null=null,
                         pvalue=dict(zip(features, per_feature.tolist())),
                         pvalue_familywise=dict(zip(features, familywise_p.tolist())),
                         beats_null=beats, rule="pvalue", alpha=alpha, familywise=familywise, B=B,
                         notes=tuple(notes), statistic=dict(zip(features, z[0].tolist())), test_status=status,
                         reason=reason)


def permutation_null(fit_and_explain: Callable[..., Mapping[str, float]], T, groups, *, B: int = 19,
                     seed: int = 0, observed: Mapping[str, float] | None = None, alpha: float = 0.05,
                     rule: str = "auto", familywise: bool = True, Y=None,
                     keep_average_effect: bool = True) -> NullReference:
    """Refit-and-explain with the arm permuted within trial B times and compare with the observed importances.

    ``fit_and_explain(T)`` fits the effect model with arm vector T (everything else fixed) and returns mean |SHAP|
    per feature (see ``make_fit_and_explain``). ``observed`` defaults to ``fit_and_explain(T)``. With ``Y`` (the
    outcome ``fit_and_explain`` was built with) and ``keep_average_effect``, null fits are called as
    ``fit_and_explain(T*, Y*)`` with the constant-effect outcome (module docstring).
    """
    if B < 1:
        raise ConfigError(f"B must be at least 1, got {B}")
    t = np.asarray(T).reshape(-1)
    observed = dict(fit_and_explain(t)) if observed is None else dict(observed)
    null_rows = [dict(fit_and_explain(arm) if y is None else fit_and_explain(arm, y))
                 for arm, y in null_draws(t, groups, B=B, seed=seed, Y=Y, keep_average_effect=keep_average_effect)]
    return null_reference(observed, null_rows, alpha=alpha, rule=rule, familywise=familywise)


def make_fit_and_explain(effect_model, Y, X, *, groups=None, X_explain=None, background=None,
                         original: pd.DataFrame | None = None, max_rows: int = 300, max_background: int = 50,
                         seed: int = 0, max_evals: int | None = None) -> Callable[..., dict[str, float]]:
    """The usual ``fit_and_explain`` for ``permutation_null``: clone the (unfitted) effect model, fit it on
    (Y, T, X, groups) — or (y, T, ...) when called as ``fit_and_explain(T, y)`` — explain it on X_explain (default
    X) against ``background`` (default X), return mean |SHAP|.

    Rows and background are drawn with the same seed every time, so observed and null fits are explained on the
    same participants: the only things that change between them are the arm (and the imputed outcome).
    """
    from sklearn.base import clone

    from mbi_predict.explain.effect_shap import explain_effect

    X_explain = X if X_explain is None else X_explain
    background = X if background is None else background

    def fit_and_explain(T, y=None) -> dict[str, float]:
        model = clone(effect_model).fit(Y if y is None else y, T, X=X, groups=groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the fallback warning would repeat B + 1 times
            explanation = explain_effect(model, X_explain, background=background, max_rows=max_rows,
                                         max_background=max_background, seed=seed, original=original,
                                         max_evals=max_evals)
        return explanation.importance()

    return fit_and_explain
