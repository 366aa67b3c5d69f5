"""Stage "reference comparison": does each prognostic model beat the reference model on the primary metric?

Contract: `comparison_to_reference` is a pure function of the fold results and the pooled model blocks; it owns the
summary's ``comparison_to_reference`` block (None when the config has no reference model). Its paired bootstrap
draws are seeded by `derive_seed(seed, "paired", model, held-out trial)`.
"""

from __future__ import annotations

from typing import Any

from mbi_predict.config import ExperimentConfig
from mbi_predict.validate.loto import FoldResult, PreparedData, derive_seed
from mbi_predict.validate.metrics import LOWER_IS_BETTER, PRIMARY_METRIC, paired_difference
from mbi_predict.validate.pooling import pool_metric


def hash_seed(seed: int, *parts: Any) -> int:
    """The seed of a paired-difference bootstrap (`derive_seed` in the ``paired`` stream)."""
    return derive_seed(seed, "paired", *parts)


def comparison_to_reference(config: ExperimentConfig, results: dict[str, list[FoldResult]], data: PreparedData,
                            models: dict[str, dict]) -> dict[str, Any] | None:
    """Does each prognostic model beat the reference model on the primary metric (RMSE or Brier), pooled?

    ``beats_reference``: the model's pooled metric is better than the reference's. ``difference`` is the pooled
    per-trial paired difference (model - reference, on the same held-out participants, paired bootstrap variance);
    ``significant`` says whether its CI excludes 0. Models scored on another population (path_risk: controls only)
    are not comparable and are listed under ``not_compared``.
    """
    references = [m for m in config.models if m.kind == "prognostic" and m.estimator == "reference"]
    if not references:
        return None
    reference = references[0].name
    metric = PRIMARY_METRIC[data.task]
    lower_better = LOWER_IS_BETTER[metric]
    ref_results = {r.held_out: r for r in results[reference]}
    ref_pooled = models[reference]["pooled"][metric]["estimate"]
    out: dict[str, Any] = {"reference_model": reference, "metric": metric, "lower_is_better": lower_better,
                           "reference_pooled": ref_pooled, "models": {}, "not_compared": {}}
    for spec in config.models:
        if spec.name == reference or spec.kind != "prognostic":
            continue
        if models[spec.name]["population"] != models[reference]["population"]:
            out["not_compared"][spec.name] = "scored on another population (control participants only)"
            continue
        diffs, variances, labels = [], [], []
        for result in results[spec.name]:
            ref = ref_results[result.held_out]
            predicted = result.predictions["prediction"].to_numpy()[result.evaluated]
            y = data.y[result.test_rows][result.evaluated]
            difference, variance = paired_difference(
                y, predicted, ref.predictions["prediction"].to_numpy()[ref.evaluated], metric,
                B=max(config.validation.bootstrap, 2), seed=hash_seed(config.seed, spec.name, result.held_out))
            diffs.append(difference)
            variances.append(variance)
            labels.append(result.held_out)
        pooled_difference, _ = pool_metric(f"{metric}_difference", diffs, variances, labels, model=spec.name,
                                           method=config.validation.pooling_method, hksj=config.validation.hksj,
                                           level=config.validation.level)
        model_pooled = models[spec.name]["pooled"][metric]["estimate"]
        beats = (model_pooled < ref_pooled) if lower_better else (model_pooled > ref_pooled)
        low, high = pooled_difference["ci_low"], pooled_difference["ci_high"]
        significant = None if low is None else bool(high < 0 or low > 0)
        out["models"][spec.name] = {
            "pooled": model_pooled, "reference_pooled": ref_pooled, "beats_reference": bool(beats),
            "difference": pooled_difference["estimate"], "ci_low": low, "ci_high": high,
            "significant": significant, "k": pooled_difference["k"],
        }
    return out
