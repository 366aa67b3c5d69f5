"""The prose of a model card: intended use, ethics, caveats and metric definitions.

Kept apart from `card` so the wording can be reviewed on its own. Caveats are derived from the run's numbers
(quoted, never recomputed), so a card warns about what this run actually shows, not generic boilerplate only.
"""

from __future__ import annotations

from typing import Any

METRIC_DEFINITIONS = {
    "rmse": "root mean squared error of the predicted outcome, in outcome units (SD units for standardised "
            "scores); lower is better",
    "mae": "mean absolute error, in outcome units; lower is better",
    "r2": "1 - SSE/SST against the held-out trial's own mean; a shift in level between trials is penalised",
    "calibration_slope": "slope of observed on predicted (logit scale for binary outcomes); 1 is ideal, below 1 "
                         "means predictions are too extreme",
    "calibration_intercept": "calibration-in-the-large: mean observed minus predicted (logit scale with slope 1 "
                             "for binary outcomes); 0 is ideal",
    "c_statistic": "area under the ROC curve; 0.5 is chance, 1 perfect (pooled on the logit scale)",
    "brier": "mean squared error of the predicted probability; lower is better",
    "oe_ratio": "observed over expected events; 1 is ideal (pooled on the log scale)",
    "ici": "integrated calibration index: mean |predicted - smoothed observed|",
    "e50": "median |predicted - smoothed observed|",
    "e90": "90th percentile of |predicted - smoothed observed|",
}

_MODEL_TYPES = {
    "reference": "linear (or unpenalised logistic) regression of the outcome on its own baseline score and the arm",
    "elastic_net": "elastic-net penalised linear / logistic regression on all covariates and the arm",
    "random_forest": "random forest on all covariates and the arm",
    "xgboost": "gradient-boosted trees (XGBoost, histogram method) on all covariates and the arm",
    "path_risk": "PATH-statement risk model: elastic-net regression fitted on control participants only, predicting "
                 "the outcome under control",
}


def model_type_description(estimator: str | None, kind: str) -> str:
    if kind == "effect":
        return (f"treatment-effect (CATE) model {estimator or ''}".strip()
                + ": predicts the difference MBI minus control in the outcome for a participant with given "
                  "baseline characteristics")
    return _MODEL_TYPES.get(estimator or "", f"prognostic model {estimator or '(estimator not recorded)'}")


def metric_definitions(names: list[str]) -> dict[str, str]:
    return {name: METRIC_DEFINITIONS[name] for name in names if name in METRIC_DEFINITIONS}


def intended_use(kind: str, outcome: str | None) -> dict[str, list[str]]:
    predicts = ("the expected benefit of a mindfulness-based intervention (MBI) over the trial's control condition"
                if kind == "effect" else f"a participant's {outcome or 'outcome'} in the setting of an MBI trial")
    return {
        "primary_uses": [
            f"Research: estimating {predicts} from baseline characteristics, for adults resembling the participants "
            "of the training trials (see Training data).",
            "Generating hypotheses about who benefits from MBIs, to be tested in new randomised trials.",
            "Planning: anticipating outcome distributions in a new trial's population.",
        ],
        "primary_users": ["researchers in psychology, psychiatry and public mental health",
                          "trialists and meta-analysts working with individual participant data"],
        "out_of_scope": [
            "Clinical decisions about an individual (offering, withholding or choosing a treatment) without clinical "
            "judgement and without local validation.",
            "Populations, settings or intervention formats absent from the training trials, e.g. children, acute "
            "psychiatric care, or MBIs unlike those trialled; predictions flag covariates outside the training "
            "range as out of distribution.",
            "Screening or diagnosis of mental disorders: the model predicts a trial outcome, it does not diagnose.",
            "Ranking, selecting or excluding people for employment, education or insurance.",
        ],
    }


def ethical_considerations(card: dict[str, Any]) -> list[str]:
    items = [
        "Data: pooled individual participant data of randomised trials, shared under each trial's consent and "
        "data-sharing agreement; this card holds aggregates only (trial- and subgroup-level), no participant rows.",
        "Mental health outcomes are sensitive; a prediction about a person must not be disclosed to third parties "
        "or used to deny access to support.",
        "Representativeness: trial participants volunteer and are often younger, more educated and more often "
        "female than the populations MBIs are offered to; performance in under-represented groups is uncertain.",
        "A low predicted benefit is not evidence of harm or of no benefit for an individual: the model estimates "
        "averages conditional on a few baseline characteristics.",
    ]
    if card["subgroups"]["rows"] is None:
        items.append("Fairness: subgroup performance was not recorded in this run, so differences in accuracy "
                     "between genders, ages or education levels are unknown.")
    return items


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any], low: str, high: str) -> str | None:
    if isinstance(row.get(low), (int, float)) and isinstance(row.get(high), (int, float)):
        return f"{_fmt(row[low])} to {_fmt(row[high])}"
    return None


def caveats(card: dict[str, Any]) -> list[str]:
    """Warnings grounded in this run's numbers (each quoted from summary.json) plus the standing ones."""
    evaluation, data = card["evaluation"], card["training_data"]
    pooled = {row["metric"]: row for row in evaluation["pooled"]}
    notes: list[str] = []
    n_trials = data.get("n_trials")
    if isinstance(n_trials, int) and n_trials < 10:
        notes.append(f"Only {n_trials} trials: the between-trial variance (tau²) and the prediction interval are "
                     "imprecise; treat the prediction interval as a rough guide.")
    scheme = evaluation.get("scheme")
    if scheme not in ("loto", "leave_one_trial_out"):
        notes.append(f"Validation scheme {scheme}: not leave-one-trial-out, so performance in a new trial is not "
                     "what was estimated.")
    slope = pooled.get("calibration_slope")
    if slope and isinstance(slope.get("ci_low"), (int, float)) and isinstance(slope.get("ci_high"), (int, float)):
        if slope["ci_high"] < 1:
            notes.append(f"Pooled calibration slope {_fmt(slope['estimate'])} (95% CI "
                         f"{_interval(slope, 'ci_low', 'ci_high')}): predictions are too extreme in new trials; "
                         "recalibrate (shrink) before use.")
        elif slope["ci_low"] > 1:
            notes.append(f"Pooled calibration slope {_fmt(slope['estimate'])} (95% CI "
                         f"{_interval(slope, 'ci_low', 'ci_high')}): predictions are too modest in new trials.")
    intercept = pooled.get("calibration_intercept")
    if intercept and isinstance(intercept.get("pi_low"), (int, float)) and isinstance(intercept.get("pi_high"),
                                                                                      (int, float)):
        if intercept["pi_low"] < 0 < intercept["pi_high"]:
            pass
        else:
            notes.append("The prediction interval of calibration-in-the-large excludes 0 "
                         f"({_interval(intercept, 'pi_low', 'pi_high')}): expect systematic over- or "
                         "under-prediction in a new trial.")
    primary = pooled.get(evaluation["primary_metric"])
    if primary and isinstance(primary.get("tau2"), (int, float)) and primary["tau2"] > 0:
        span = _interval(primary, "pi_low", "pi_high")
        notes.append(f"Performance varies between trials (tau² of {evaluation['primary_metric']} = "
                     f"{_fmt(primary['tau2'])})" + (f"; in a new trial it may lie anywhere in {span} "
                                                    "(95% prediction interval)." if span else "."))
    excluded = data.get("excluded_trials") or []
    if excluded:
        notes.append(f"{len(excluded)} trial(s) were not evaluated (listed under Training data); the pooled "
                     "estimates do not cover them.")
    notes += [
        "Recalibrate and re-validate the model in the target population before any use beyond research.",
        "Predictions for participants outside the training envelope (out_of_distribution = true) are "
        "extrapolations.",
        "Missing covariates are imputed by the model; many missing values make a prediction less reliable.",
    ]
    if card["model_details"]["kind"] == "effect":
        notes.append("Individual treatment effects are not observable: benefit predictions are validated only "
                     "through grouped and doubly-robust comparisons, and are far less certain than outcome "
                     "predictions.")
        run = card["explanations"].get("run_heterogeneity")
        if run is not None and run["verdict"] != "evidence":
            notes.append(("The run's heterogeneity verdict is 'not tested'" if run["verdict"] == "not_tested" else
                          "The run found no evidence that the effect differs between participants")
                         + f" ({run.get('reason') or 'no reason recorded'}): differences in predicted benefit "
                           "between participants are not established by this run.")
    return notes


_LABELS = {"shap": "SHAP", "blp": "the BLP", "interactions": "the interactions"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def agreement_sentence(rows: list[dict[str, Any]], ran: list[str], untested: tuple[str, ...] = ()) -> str:
    """One sentence on where the three answers to "who benefits" agree, e.g. "baseline_distress is flagged by all
    three; age only by SHAP." ``rows`` carry ``flags`` {method: True/False/None}; ``ran`` lists the methods run
    that could flag (a SHAP ranking whose null was not tested is in ``untested`` instead)."""
    if not ran:
        return ("None of the three answers (SHAP, best linear projection, within-trial interactions) was run"
                + (f"; {_join([_LABELS[m] for m in untested])} not tested" if untested else "") + ".")
    groups: dict[tuple[str, ...], list[str]] = {}
    for row in rows:
        by = tuple(m for m in ran if row["flags"].get(m) is True)
        if by:
            groups.setdefault(by, []).append(row["covariate"])
    if not groups:
        which = "the one method run" if len(ran) == 1 else ("both methods run" if len(ran) == 2 else "any of the three")
        return f"No covariate is flagged by {which}" + (f" ({_join([_LABELS[m] for m in untested])} not tested)"
                                                        if untested else "") + "."
    parts = []
    for by, covariates in sorted(groups.items(), key=lambda item: (-len(item[0]), item[1])):
        only = len(by) == 1 and len(ran) > 1
        if len(by) == len(ran) and len(ran) > 1:
            where = "all three" if len(ran) == 3 else f"both {_join([_LABELS[m] for m in ran])}"
        else:
            where = _join([_LABELS[m] for m in by])
        head = f"{_join(covariates)} {'is' if len(covariates) == 1 else 'are'} flagged " if not parts \
            else f"{_join(covariates)} "
        parts.append(f"{head}{'only ' if only else ''}by {where}")
    sentence = "; ".join(parts)
    extra = [f"{_join([_LABELS[m] for m in untested])} not tested"] if untested else []
    skipped = [m for m in ("shap", "blp", "interactions") if m not in ran and m not in untested]
    extra += [f"{_join([_LABELS[m] for m in skipped])} not run"] if skipped else []
    return sentence + (f" ({'; '.join(extra)})" if extra else "") + "."
