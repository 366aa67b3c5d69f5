"""Within-trial interactions with every declared modifier in one model per trial (the default of `interactions`).

Why jointly: a covariate that modifies nothing but is correlated with a true modifier (baseline anxiety with
baseline distress) picks up that modifier's interaction when fitted alone: with y = ... + g arm x1 and
corr(x1, x2) = r, the one-at-a-time slope of arm x x2 estimates g r, not 0. Measured on the simulator's 'strong'
scenario, baseline anxiety, depression and wellbeing came out "significant" in 7-10 of 10 seeds that way. Putting
all modifiers in one ANCOVA per trial estimates each interaction adjusted for the others: the two-stage approach of
Riley et al. (2020, Stat Med 39:2115, "Individual participant data meta-analysis to examine interactions between
treatment effect and participant-level covariates"), with several treatment-covariate interactions in the one
within-trial model instead of one.

Per trial: `y ~ arm + x1_c + ... + xq_c + arm:x1_c + ... + arm:xq_c (+ baseline of the outcome's construct, unless it
is itself a modifier)`, each x centred at its trial mean (in each imputation), fitted on each of the m imputations and
combined by Rubin's rules (per coefficient, and for the covariance of the interaction coefficients
T = U_bar + (1 + 1/m) B, Rubin 1987). Coding of modifiers is `interactions`' (dummy terms for text modifiers). The
trial's treatment effect behind the across-trial slope is the baseline-adjusted difference, the same for every term.

Which terms a trial fits (decided per trial, never an error):
* a term is screened out exactly as in the one-at-a-time mode (modifier never observed in the trial, reference level
  absent, no variation within both arms);
* the remaining modifiers are added greedily in the declared order (the order is the priority): a modifier (all its
  terms) is kept when the design with it and the modifiers kept before it has full column rank in every imputation
  and the trial has at least `min_per_parameter` (default 10) participants with an observed outcome per fitted
  coefficient (intercept, arm, the baseline, every main-effect and interaction term); otherwise it is dropped for
  that trial only and listed under the term's ``skipped_trials`` with the reason.

Pooling: each interaction coefficient is pooled across trials on its own by REML (univariate), as in the one-at-a-time
mode. A multivariate meta-analysis (Jackson, Riley & White 2011 Stat Med) would also use the within-trial
covariances between the interaction coefficients (stored per trial under ``covariances``) and a between-trial
covariance matrix. We keep the univariate one because (i) the gain from borrowing strength is small when (nearly)
every trial estimates every term, and mostly comes from trials missing some terms (Riley et al. 2017 BMJ,
"Multivariate and network meta-analysis of multiple outcomes and multiple treatments"), (ii) with the handful of trials
of a consortium the between-trial covariance matrix is poorly estimated and often lands on the boundary (correlations
of +-1), and (iii) it is the second stage of Riley et al. (2020)'s two-stage approach as in the separate mode. The point
estimates are already adjusted for the other modifiers by the within-trial model; only their weighting ignores the
covariances.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import MBIError
from mbi_predict.meta.ipd import ols, rubin, treatment_difference

Term = tuple[str, Any]


def screen_terms(observed: pd.DataFrame, modifier: str, kind: str, terms: list[Term], reference: Any,
                 skipped: dict[str, list[dict[str, Any]]], trial: Any, indicator) -> list[Term]:
    """The terms of `modifier` estimable in this trial (the one-at-a-time rules); the others go to `skipped`."""
    observed = observed[observed[modifier].notna()]
    if observed.empty:
        for name, _ in terms:
            skipped[name].append({"trial_id": trial, "reason": "modifier never observed"})
        return []
    if kind == "categorical" and not (observed[modifier].astype(str) == reference).any():
        for name, _ in terms:
            skipped[name].append({"trial_id": trial, "reason": f"reference level {reference!r} absent"})
        return []
    present = []
    arm_obs = observed["arm"].to_numpy()
    for name, lev in terms:
        x_obs = indicator(observed[modifier], kind, lev)
        if all(np.ptp(x_obs[arm_obs == a]) > 0 if np.any(arm_obs == a) else False for a in (0, 1)):
            present.append((name, lev))
        else:
            skipped[name].append({"trial_id": trial, "reason": "modifier does not vary within both arms"})
    return present


def _design(frame: pd.DataFrame, chosen: list[tuple[str, str, Term]], base: str | None,
            indicator) -> tuple[np.ndarray, list[float]]:
    """[1, arm, centred terms..., arm x centred terms..., baseline] and the terms' means."""
    arm = frame["arm"].to_numpy(dtype=float)
    xs, means = [], []
    for modifier, kind, (_, lev) in chosen:
        x = indicator(frame[modifier], kind, lev)
        means.append(float(x.mean()))
        xs.append(x - x.mean())
    columns = [np.ones_like(arm), arm, *xs, *[arm * x for x in xs]]
    if base is not None:
        columns.append(frame[base].to_numpy(dtype=float))
    return np.column_stack(columns), means


def _full_rank(imputed: list[pd.DataFrame], chosen: list[tuple[str, str, Term]], base: str | None,
               indicator) -> bool:
    for frame in imputed:
        X, _ = _design(frame, chosen, base, indicator)
        if not np.all(np.isfinite(X)) or X.shape[0] <= X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
            return False
    return True


def joint_trial(imputed: list[pd.DataFrame], original: pd.DataFrame, trial: Any, outcome: str,
                modifiers: list[str], specs: dict[str, tuple[str, list[Term], Any]], adjust_for: str | None,
                skipped: dict[str, list[dict[str, Any]]], indicator, min_per_parameter: int) -> list[dict[str, Any]]:
    """Fit the joint model in one trial: one record per kept term (the trial rows of `interactions`' records)."""
    base = adjust_for if adjust_for and adjust_for not in modifiers else None
    if base is not None and not all(frame[base].notna().all() for frame in imputed):
        base = None  # the baseline was never observed in this trial: not adjusted for (as in the separate mode)
    n_observed = int(original[outcome].notna().sum())
    chosen: list[tuple[str, str, Term]] = []
    for modifier in modifiers:
        kind, terms, reference = specs[modifier]
        present = screen_terms(original, modifier, kind, terms, reference, skipped, trial, indicator)
        if not present:
            continue
        candidate = chosen + [(modifier, kind, term) for term in present]
        n_parameters = 2 + 2 * len(candidate) + (base is not None)
        if n_observed < min_per_parameter * n_parameters:
            reason = (f"dropped from the joint model in this trial: {n_observed} participants with an observed "
                      f"outcome < {min_per_parameter} per parameter x {n_parameters} parameters")
        elif not _full_rank(imputed, candidate, base, indicator):
            reason = "dropped from the joint model in this trial: collinear with the modifiers kept before it"
        else:
            chosen = candidate
            continue
        for name, _ in present:
            skipped[name].append({"trial_id": trial, "reason": reason})
    if not chosen:
        return []
    q = len(chosen)
    coefs, covs, effects, effect_vars, means = [], [], [], [], []
    for frame in imputed:
        X, frame_means = _design(frame, chosen, base, indicator)
        y = frame[outcome].to_numpy(dtype=float)
        beta, cov = ols(X, y)
        coefs.append(beta[2 + q: 2 + 2 * q])
        covs.append(cov[2 + q: 2 + 2 * q, 2 + q: 2 + 2 * q])
        means.append(frame_means)
        raw_base = frame[adjust_for].to_numpy(dtype=float) if adjust_for and frame[adjust_for].notna().all() \
            else None
        effect, variance = treatment_difference(y, frame["arm"].to_numpy(dtype=float), raw_base)
        effects.append(effect)
        effect_vars.append(variance)
    coefs_arr = np.array(coefs)
    m = len(imputed)
    between = np.cov(coefs_arr, rowvar=False, ddof=1).reshape(q, q) if m > 1 else np.zeros((q, q))
    total = np.mean(covs, axis=0) + (1 + 1 / m) * between
    effect = rubin(effects, effect_vars)
    names = [term[0] for _, _, term in chosen]
    rows = []
    for j, name in enumerate(names):
        est = rubin(coefs_arr[:, j], [c[j, j] for c in covs])
        rows.append({
            "trial_id": trial, "estimate": est.estimate, "se": est.se, "fmi": est.fmi,
            "treatment_effect": effect.estimate, "treatment_effect_se": effect.se,
            "modifier_mean": float(np.mean([mm[j] for mm in means])), "model_terms": names,
            "adjusted_for_baseline": base is not None,
            "covariances": {other: float(total[j, i]) for i, other in enumerate(names) if i != j}})
    return rows


def collect_joint(trials: list[Any], by_trial: dict[Any, tuple[list[pd.DataFrame], pd.DataFrame]], outcome: str,
                  modifiers: list[str], specs: dict[str, tuple[str, list[Term], Any]], adjust_for: str | None,
                  indicator, min_per_parameter: int = 10) -> dict[str, dict[str, Any]]:
    """{term: {"trials": [per-trial rows], "skipped": [{"trial_id", "reason"}]}} for every term of every modifier."""
    if not isinstance(min_per_parameter, (int, np.integer)) or min_per_parameter < 1:
        raise MBIError(f"min_per_parameter must be a positive integer, got {min_per_parameter!r}")
    names = [name for modifier in modifiers for name, _ in specs[modifier][1]]
    collected: dict[str, dict[str, Any]] = {name: {"trials": [], "skipped": []} for name in names}
    skipped = {name: collected[name]["skipped"] for name in names}
    for trial in trials:
        imputed, original = by_trial[trial]
        try:
            rows = joint_trial(imputed, original, trial, outcome, modifiers, specs, adjust_for, skipped, indicator,
                               min_per_parameter)
        except MBIError as exc:  # a fit that fails despite the checks: the trial is skipped for every term
            for name in names:
                if not any(item["trial_id"] == trial for item in skipped[name]):
                    skipped[name].append({"trial_id": trial, "reason": str(exc)})
            continue
        for j, row in enumerate(rows):
            collected[row["model_terms"][j]]["trials"].append(row)
    return collected
