"""A null reference for CATE importances: what would SHAP say if nobody benefited differently?

Any flexible CATE model attributes *some* importance to every covariate, even when the effect is the same for
everyone: its CATE is partly noise, and SHAP explains noise too. So an importance means nothing until compared with
the importance the same pipeline produces when heterogeneity is absent by construction. Permuting the arm *within
each trial* does that: it keeps each trial's size, allocation ratio and outcome distribution (so trial differences in
level cannot leak in) but breaks every link between covariates and the effect of the arm.

Per feature we report the observed importance, the null mean and 95th percentile, the ratio to the null mean, and
the empirical p-value ``(1 + #{null >= observed}) / (B + 1)``. The smallest attainable p is 1/(B+1) (0.167 at the
default B = 5; B >= 19 is needed for p <= 0.05).

Decision (declared in ``NullReference.rule``), family-wise by default because a model has many features and the
question "does anything predict differential benefit?" is asked once per model: the statistics are importances
divided by the feature's mean importance over the *other* B fits (leave-one-out over the B + 1 fits, observed
and null: the same function is applied to every fit, so under H0 the observed fit stays exchangeable with the null
fits, and a strong observed importance does not inflate its own denominator); the max over features of that ratio
in each null fit gives a max-T distribution (Westfall & Young 1993), used step-down: features are taken in
decreasing order of their observed ratio and each is compared with the null max over itself and the features not
yet declared, its adjusted p being ``(1 + #{null max ratio >= its ratio}) / (B + 1)`` (made monotone). Under H0 the chance that *any* feature is declared is then at most 1/(B+1) for
``exceeds_null_max`` and at most alpha for ``pvalue``. ``familywise=False`` compares each feature with its own null
only (per-feature p as above), whose family-wise error grows with the number of features.

* ``rule="exceeds_null_max"``: beats the null iff its statistic exceeds every null one (adjusted p = 1/(B+1));
* ``rule="pvalue"``: adjusted (or per-feature) p <= alpha; when 1/(B+1) > alpha nothing can pass, and we warn;
* ``rule="auto"`` (default): ``pvalue`` when attainable, else ``exceeds_null_max`` (the two coincide at
  B + 1 = 1/alpha).
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

RULES = ("auto", "pvalue", "exceeds_null_max")


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


@dataclass(frozen=True)
class NullReference:
    """Observed importances against B within-trial-permutation refits (see the module docstring)."""

    observed: dict[str, float]
    null: pd.DataFrame  # B rows (one per permutation) x features
    pvalue: dict[str, float]
    pvalue_familywise: dict[str, float]
    beats_null: dict[str, bool]
    rule: str
    alpha: float
    familywise: bool
    B: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def min_attainable_p(self) -> float:
        return 1.0 / (self.B + 1)

    @property
    def decision_p(self) -> dict[str, float]:
        """The p-value the decision used: family-wise adjusted when ``familywise``, else per feature."""
        return self.pvalue_familywise if self.familywise else self.pvalue

    def summary_frame(self) -> pd.DataFrame:
        null_mean = self.null.mean(axis=0)
        rows = [{"feature": f, "observed": obs, "null_mean": float(null_mean[f]),
                 "null_p95": float(self.null[f].quantile(0.95)), "null_max": float(self.null[f].max()),
                 "ratio_to_null_mean": obs / float(null_mean[f]) if null_mean[f] > 0 else
                 (math.inf if obs > 0 else math.nan),
                 "pvalue": self.pvalue[f], "pvalue_familywise": self.pvalue_familywise[f],
                 "beats_null": self.beats_null[f]} for f, obs in self.observed.items()]
        return pd.DataFrame(rows).sort_values("observed", ascending=False).reset_index(drop=True)

    def describe_rule(self) -> str:
        scope = "family-wise (max-T over features)" if self.familywise else "per feature"
        if self.rule == "exceeds_null_max":
            test = f"importance exceeds every null importance, a test at level 1/(B+1) = {self.min_attainable_p:.3g}"
        else:
            test = f"p <= alpha = {self.alpha:g}"
        return f"{scope}: {test}; B = {self.B} within-trial permutations of the arm"

    def to_dict(self) -> dict[str, Any]:
        frame = self.summary_frame()
        return {"rule": self.describe_rule(), "B": self.B, "alpha": self.alpha,
                "min_attainable_p": self.min_attainable_p, "familywise": self.familywise,
                "features": frame.replace({math.inf: None}).to_dict(orient="records"), "notes": list(self.notes)}


def _ratios(matrix: np.ndarray) -> np.ndarray:
    """Each entry (fit i, feature f) divided by feature f's mean over the other fits.

    A zero denominator (the feature is unused in every other fit) gives 0 for a zero entry and +inf otherwise.
    """
    n = matrix.shape[0]
    others = (matrix.sum(axis=0, keepdims=True) - matrix) / (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(others > 0, matrix / np.where(others > 0, others, 1.0), np.inf)
    return np.where(matrix > 0, ratio, 0.0)


def _step_down_maxt(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Westfall–Young step-down max-T adjusted p-values (observed: p ratios; null: B x p ratios)."""
    B = null.shape[0]
    order = np.argsort(-observed, kind="stable")
    adjusted = np.empty(len(observed))
    running = 0.0
    for position, feature in enumerate(order):
        remaining = order[position:]
        null_max = null[:, remaining].max(axis=1)
        p = (1 + np.sum(null_max >= observed[feature])) / (B + 1)
        running = max(running, p)
        adjusted[feature] = running
    return adjusted


def null_reference(observed: Mapping[str, float], null_rows: list[Mapping[str, float]], *, alpha: float = 0.05,
                   rule: str = "auto", familywise: bool = True) -> NullReference:
    """Decide which observed importances beat the null importances (rows: one dict per permutation)."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {RULES}, got {rule!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    B = len(null_rows)
    if B < 1:
        raise ConfigError("the null reference needs at least one permutation (B >= 1)")
    features = list(observed)
    null = pd.DataFrame([{f: float(row.get(f, 0.0)) for f in features} for row in null_rows], columns=features)
    obs = np.array([float(observed[f]) for f in features])
    nul = null.to_numpy(dtype=float)
    per_feature = (1 + (nul >= obs[None, :]).sum(axis=0)) / (B + 1)
    ratios = _ratios(np.vstack([obs, nul]))
    familywise_p = _step_down_maxt(ratios[0], ratios[1:])
    notes = []
    chosen = rule
    if rule == "auto":
        chosen = "pvalue" if 1 / (B + 1) <= alpha else "exceeds_null_max"
    elif rule == "pvalue" and 1 / (B + 1) > alpha:
        message = (f"with B = {B} the smallest attainable p is {1 / (B + 1):.3g} > alpha = {alpha:g}: no feature can "
                   f"beat the null; use B >= {math.ceil(1 / alpha) - 1}")
        warnings.warn(message, UserWarning, stacklevel=2)
        notes.append(message)
    decision_p = familywise_p if familywise else per_feature
    # p == 1/(B+1) exactly when the statistic exceeds every null one (the p counts ties against the feature)
    threshold = 1.0 / (B + 1) if chosen == "exceeds_null_max" else alpha
    beats = decision_p <= threshold * (1 + 1e-12)
    return NullReference(observed=dict(zip(features, obs.tolist())), null=null,
                         pvalue=dict(zip(features, per_feature.tolist())),
                         pvalue_familywise=dict(zip(features, familywise_p.tolist())),
                         beats_null={f: bool(b) for f, b in zip(features, beats)}, rule=chosen, alpha=alpha,
                         familywise=familywise, B=B, notes=tuple(notes))


def permutation_null(fit_and_explain: Callable[[np.ndarray], Mapping[str, float]], T, groups, *, B: int = 5,
                     seed: int = 0, observed: Mapping[str, float] | None = None, alpha: float = 0.05,
                     rule: str = "auto", familywise: bool = True) -> NullReference:
    """Refit-and-explain with the arm permuted within trial B times and compare with the observed importances.

    ``fit_and_explain(T)`` fits the effect model with arm vector T (everything else fixed) and returns mean |SHAP|
    per feature (see ``make_fit_and_explain``). ``observed`` defaults to ``fit_and_explain(T)``.
    """
    if B < 1:
        raise ConfigError(f"B must be at least 1, got {B}")
    t = np.asarray(T).reshape(-1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    observed = dict(fit_and_explain(t)) if observed is None else dict(observed)
    null_rows = [dict(fit_and_explain(permute_within_groups(t, groups, rng))) for _ in range(B)]
    return null_reference(observed, null_rows, alpha=alpha, rule=rule, familywise=familywise)


def make_fit_and_explain(effect_model, Y, X, *, groups=None, X_explain=None, background=None,
                         original: pd.DataFrame | None = None, max_rows: int = 300, max_background: int = 50,
                         seed: int = 0, max_evals: int | None = None) -> Callable[[np.ndarray], dict[str, float]]:
    """The usual ``fit_and_explain`` for ``permutation_null``: clone the (unfitted) effect model, fit it on
    (Y, T, X, groups), explain it on X_explain (default X) against ``background`` (default X), return mean |SHAP|.

    Rows and background are drawn with the same seed every time, so observed and null fits are explained on the
    same participants: the only thing that changes between them is the arm.
    """
    from sklearn.base import clone

    from mbi_predict.explain.effect_shap import explain_effect

    X_explain = X if X_explain is None else X_explain
    background = X if background is None else background

    def fit_and_explain(T) -> dict[str, float]:
        model = clone(effect_model).fit(Y, T, X=X, groups=groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the fallback warning would repeat B + 1 times
            explanation = explain_effect(model, X_explain, background=background, max_rows=max_rows,
                                         max_background=max_background, seed=seed, original=original,
                                         max_evals=max_evals)
        return explanation.importance()

    return fit_and_explain
