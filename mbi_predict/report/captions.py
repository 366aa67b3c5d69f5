"""Figure captions as sentences, read off the run's figure file names (``<kind>_<model>_<what>.<format>``).

One place for the wording, so a card and the study report describe a figure the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mbi_predict.numbers import label, sentence

_KINDS = ("benefit-calibration", "calibration", "forest", "shap", "toc", "comparison")


def parse(path: str | Path, models: Iterable[str]) -> tuple[str, str | None, str]:
    """(kind, model or None, what) of a run's figure file name; unknown names give ("", None, stem)."""
    stem = Path(str(path)).stem
    for kind in _KINDS:
        if not stem.startswith(kind + "_"):
            continue
        rest = stem[len(kind) + 1:]
        for model in sorted(models, key=len, reverse=True):
            if rest == model or rest.startswith(model + "_"):
                return kind, model, rest[len(model) + 1:]
        return kind, None, rest
    return "", None, stem


def caption(path: str | Path, models: Iterable[str]) -> str:
    """A one- or two-sentence caption for a figure of the run."""
    kind, model, what = parse(path, list(models))
    who = model or "the model"
    if kind == "forest":
        return (f"{sentence(label(what))} of {who} in each held-out trial (squares sized by weight, 95% CIs), "
                "with the random-effects pooled estimate (diamond) and the 95% prediction interval for a new "
                "trial; the footer gives tau², I² and Q.")
    if kind == "calibration":
        return (f"Calibration of {who} in the held-out trials: observed against predicted outcome, smoothed "
                "for each trial and pooled, with decile means; the dashed line is perfect calibration.")
    if kind == "benefit-calibration":
        where = ("one panel per held-out trial of at least 50 participants on shared axes (smaller trials are "
                 "named under the panels)" if what == "by-trial"
                 else "all held-out trials together")
        return (f"Calibration for benefit of {who}: the observed (doubly robust) effect against the predicted "
                f"effect in fifths of predicted benefit, {where}; the dashed line is perfect calibration.")
    if kind == "toc":
        return (f"Targeting operator characteristic of {who}: how much more those predicted to benefit most "
                "gain than the trial's average, by the share treated, averaged over held-out trials; the area "
                "under the curve is the RATE (AUTOC).")
    if kind == "shap":
        return {
            "importance": f"Mean absolute SHAP value of each covariate for {who} across held-out trials, with "
                          "95% CIs; hatched: the importance expected without any effect modification "
                          "(permutation null).",
            "beeswarm": f"SHAP values of {who} by covariate bin (bin means ± 1 SD; bins of at least 10 "
                        "participants; blue low, red high covariate values).",
            "dependence": f"SHAP value of {who} against the value of its most important covariates, by arm "
                          "(bin means with 95% CIs).",
            "benefit-profile": f"Predicted benefit of {who} against its most important covariates (bin means "
                               "with 95% CIs and a LOWESS curve).",
        }.get(what, f"SHAP figure of {who} ({what.replace('-', ' ')}).")
    if kind == "comparison":
        return (f"{sentence(label(what))} of every model, pooled over held-out trials: 95% confidence interval "
                "(thick) and 95% prediction interval for a new trial (thin).")
    return f"Figure: {Path(str(path)).stem.replace('_', ' ')}."
