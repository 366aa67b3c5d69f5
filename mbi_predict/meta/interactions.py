"""Treatment-by-covariate interactions estimated within trials and pooled (Riley et al., Stat Med 2020).

Two modes: `joint=True` (the default) fits every declared modifier in one model per trial, so each interaction is
adjusted for the others (see `mbi_predict.meta.interactions_joint` for the model, the per-trial dropping rule and why
the pooling stays univariate); `joint=False` fits one modifier at a time, as described below. Records say which.

Why within trials: pooling the interaction estimated inside each trial uses only comparisons between participants
randomised in the same trial, so it is free of the ecological (across-trial) bias that comes from trials with, say,
more distressed participants also differing in dose, setting or control condition. The across-trial estimate (a
meta-regression of the trial treatment effects on the trial mean of the modifier) is reported beside it so that a
reader can see how far the two disagree; it must not be read as an individual-level effect modifier.

One at a time, per modifier and trial: `y ~ arm + x_c + arm:x_c (+ baseline of the outcome's construct)`, x centred
at its trial mean, fitted on each of m within-trial imputations (the imputation model holds the outcome, the baseline
and all modifiers, each arm imputed separately when large enough so interactions survive) and combined by Rubin's
rules; the interaction coefficients are pooled across trials by REML. Coding (both modes):
* numeric with more than two distinct values: kept continuous, effect per 1 unit as stored (baseline_* columns are in
  SD units already, so there it is per SD);
* numeric with two values: 0/1 for (lower, higher) value;
* text: one 0/1 indicator per level against the reference (the first level in sorted order), named
  `modifier[level]`; a trial without the reference level cannot estimate those contrasts and is skipped for them.
The outcome scale is the outcome as stored (standardised outcomes: SD units), i.e. the interaction is the change in
the MBI-vs-control mean difference per unit of the modifier. A trial in which a modifier term does not vary within
both arms is skipped for that term (the interaction is not estimable there), and listed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.data.impute import multiply_impute
from mbi_predict.data.schema import predictor_refusal
from mbi_predict.errors import DataError, MBIError
from mbi_predict.meta.ipd import (analysis_rows, baseline_column, is_binary_outcome, ols, rubin,
                                  treatment_difference)
from mbi_predict.meta.pool import meta_regression, pool


def _terms(ipd: pd.DataFrame, modifier: str) -> tuple[str, list[tuple[str, Any]], Any]:
    """(kind, [(term name, level or None)], reference) for one modifier, decided on the whole table."""
    series = ipd[modifier]
    observed = series.dropna()
    if observed.empty:
        raise DataError("modifier is never observed", column=modifier)
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        values = np.unique(observed.astype(float))
        if values.size > 2:
            return "continuous", [(modifier, None)], None
        return "binary", [(modifier, float(values.max()))], float(values.min())
    levels = sorted(observed.astype(str).unique())
    if len(levels) < 2:
        return "categorical", [], levels[0]
    return "categorical", [(f"{modifier}[{level}]", level) for level in levels[1:]], levels[0]


def _indicator(values: pd.Series, kind: str, level: Any) -> np.ndarray:
    if kind == "continuous":
        return values.to_numpy(dtype=float)
    if kind == "binary":
        return (values.astype(float) == level).to_numpy(dtype=float)
    return (values.astype(str) == level).to_numpy(dtype=float)


def interactions(ipd: pd.DataFrame, outcome: str, modifiers: list[str] | tuple[str, ...], *,
                 control: str = "passive", m: int = 5, seed: int = 0, method: str = "REML", test: str = "z",
                 level: float = 0.95, covariate_adjust: bool = True, joint: bool = True,
                 min_per_parameter: int = 10) -> list[dict[str, Any]]:
    """One dict per modifier term: the pooled within-trial interaction and the across-trial (ecological) slope.

    `joint=True` (default): all modifiers in one within-trial model per trial, each interaction adjusted for the
    others (`mbi_predict.meta.interactions_joint`; a modifier that makes a trial's model singular or leaves fewer
    than `min_per_parameter` participants with an observed outcome per coefficient is dropped for that trial only).
    `joint=False`: one modifier at a time, as described in the module docstring; a modifier correlated with a true
    modifier then inherits part of its interaction. Each record says which (``"model": "joint" | "separate"``).
    """
    modifiers = list(dict.fromkeys(modifiers))
    data, _ = analysis_rows(ipd, outcome, control)
    if is_binary_outcome(ipd[outcome]):
        raise MBIError("interactions are estimated for continuous outcomes only (a risk-ratio interaction would "
                       "need a log-binomial model)", column=outcome)
    for modifier in modifiers:
        if modifier not in ipd.columns:
            raise DataError("modifier column is not in the IPD table", column=modifier)
        refusal = "it is the outcome" if modifier == outcome else predictor_refusal(modifier)
        if refusal is not None:   # the covariate policy of the models: ids, design columns and outcomes never
            raise DataError(f"this column cannot be a treatment-effect modifier: {refusal}", column=modifier)
    baseline = baseline_column(ipd, outcome)
    adjust_for = baseline if covariate_adjust else None
    columns = [outcome] + ([baseline] if baseline else []) + modifiers
    imputations = multiply_impute(data, columns, m=m, seed=seed) if len(data) else []
    trials = sorted(data["trial_id"].unique()) if len(data) else []
    by_trial = {t: ([imp[imp["trial_id"] == t] for imp in imputations], data[data["trial_id"] == t]) for t in trials}
    specs = {modifier: _terms(ipd, modifier) for modifier in modifiers}
    model = "joint" if joint else "separate"
    if joint:
        from mbi_predict.meta.interactions_joint import collect_joint

        collected = collect_joint(trials, by_trial, outcome, [mod for mod in modifiers if specs[mod][1]], specs,
                                  adjust_for, _indicator, min_per_parameter)
    results: list[dict[str, Any]] = []
    for modifier in modifiers:
        kind, terms, reference = specs[modifier]
        if not terms:
            results.append(_empty(modifier, modifier, kind, "the modifier takes a single value in the whole table")
                           | {"model": model})
            continue
        per_term = collected if joint else _collect_separate(trials, by_trial, outcome, modifier, specs[modifier],
                                                             adjust_for)
        for name, _ in terms:
            record = _summarise(modifier, name, kind, per_term[name], method=method, test=test, level=level)
            results.append(record | {"model": model})
    return results


def _collect_separate(trials: list[Any], by_trial: dict[Any, Any], outcome: str, modifier: str,
                      spec: tuple[str, list[tuple[str, Any]], Any], adjust_for: str | None) -> dict[str, Any]:
    """One modifier at a time: {term: {"trials": [...], "skipped": [...]}}."""
    from mbi_predict.meta.interactions_joint import screen_terms

    kind, terms, reference = spec
    per_term: dict[str, dict[str, Any]] = {name: {"trials": [], "skipped": []} for name, _ in terms}
    skipped = {name: per_term[name]["skipped"] for name, _ in terms}
    for trial in trials:
        imputed, original = by_trial[trial]
        present = screen_terms(original, modifier, kind, terms, reference, skipped, trial, _indicator)
        if not present:
            continue
        try:
            fits = _trial_fits(imputed, outcome, modifier, kind, present,
                               adjust_for if adjust_for != modifier else None)
        except MBIError as exc:
            for name, _ in present:
                skipped[name].append({"trial_id": trial, "reason": str(exc)})
            continue
        for name, _ in present:
            est = rubin(fits["interaction"][name][0], fits["interaction"][name][1])
            effect = rubin(fits["effect"][0], fits["effect"][1])
            per_term[name]["trials"].append({
                "trial_id": trial, "estimate": est.estimate, "se": est.se, "fmi": est.fmi,
                "treatment_effect": effect.estimate, "treatment_effect_se": effect.se,
                "modifier_mean": float(np.mean(fits["means"][name]))})
    return per_term


def _trial_fits(imputed: list[pd.DataFrame], outcome: str, modifier: str, kind: str,
                terms: list[tuple[str, Any]], adjust_for: str | None) -> dict[str, Any]:
    """Interaction coefficients (one per term) and the overall treatment difference in each imputation."""
    out: dict[str, Any] = {"interaction": {n: ([], []) for n, _ in terms}, "effect": ([], []),
                           "means": {n: [] for n, _ in terms}}
    for frame in imputed:
        y = frame[outcome].to_numpy(dtype=float)
        arm = frame["arm"].to_numpy(dtype=float)
        base = frame[adjust_for].to_numpy(dtype=float) if adjust_for and frame[adjust_for].notna().all() else None
        xs = []
        for name, lev in terms:
            x = _indicator(frame[modifier], kind, lev)
            out["means"][name].append(float(x.mean()))
            xs.append(x - x.mean())
        design = [np.ones_like(y), arm, *xs, *[arm * x for x in xs]] + ([base] if base is not None else [])
        beta, cov = ols(np.column_stack(design), y)
        for j, (name, _) in enumerate(terms):
            position = 2 + len(terms) + j
            out["interaction"][name][0].append(float(beta[position]))
            out["interaction"][name][1].append(float(cov[position, position]))
        effect, variance = treatment_difference(y, arm, base)
        out["effect"][0].append(effect)
        out["effect"][1].append(variance)
    return out


def _empty(modifier: str, term: str, kind: str, note: str) -> dict[str, Any]:
    nan = math.nan
    return {"modifier": term, "variable": modifier, "kind": kind, "estimate": nan, "se": nan, "ci_low": nan,
            "ci_high": nan, "pvalue": nan, "k": 0, "tau2": nan, "i2": nan, "across_trial_estimate": nan,
            "across_trial_se": nan, "across_trial_ci_low": nan, "across_trial_ci_high": nan,
            "across_trial_pvalue": nan, "across_trial_k": 0, "scale": _scale(kind), "note": note, "trials": [],
            "skipped_trials": []}


def _scale(kind: str) -> str:
    unit = "per 1 unit of the modifier as stored" if kind == "continuous" else "level vs reference"
    return f"difference in the MBI-vs-control effect (outcome units), {unit}"


def _summarise(modifier: str, term: str, kind: str, collected: dict[str, Any], *, method: str, test: str,
               level: float) -> dict[str, Any]:
    trials = collected["trials"]
    result = _empty(modifier, term, kind, "")
    result["trials"], result["skipped_trials"] = trials, collected["skipped"]
    if not trials:
        result["note"] = "no trial could estimate this interaction"
        return result
    pooled = pool([t["estimate"] for t in trials], [t["se"] ** 2 for t in trials], method=method, test=test,
                  level=level, labels=[t["trial_id"] for t in trials])
    result.update(estimate=pooled.estimate, se=pooled.se, ci_low=pooled.ci_low, ci_high=pooled.ci_high,
                  pvalue=pooled.pvalue, k=pooled.k, tau2=pooled.tau2, i2=pooled.i2, note=pooled.note)
    means = np.array([t["modifier_mean"] for t in trials])
    if len(trials) >= 3 and np.ptp(means) > 0:
        across = meta_regression([t["treatment_effect"] for t in trials],
                                 [t["treatment_effect_se"] ** 2 for t in trials], means, method=method, test=test,
                                 level=level)
        result.update(across_trial_estimate=across.slope, across_trial_se=across.slope_se,
                      across_trial_ci_low=across.slope_ci_low, across_trial_ci_high=across.slope_ci_high,
                      across_trial_pvalue=across.slope_pvalue, across_trial_k=across.k)
    else:
        result["note"] = " ".join(filter(None, [result["note"], "across-trial estimate needs at least 3 trials "
                                                "whose mean modifier differs"]))
    return result
