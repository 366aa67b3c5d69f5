"""What an experiment run logs, as pure functions of the summary and the config: the tag names, the pooled and
per-held-out-trial metrics of a model run (one vocabulary for every model of a kind), its real hyper-parameters, the
parent run's facts, the flattened config params and the config hash. Nothing here talks to MLflow; `run.py` logs
what these return (the layout is described there)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RUN_TYPE_TAG = "mbi_predict.run_type"
KIND_TAG = "mbi_predict.model_kind"
ESTIMATOR_TAG = "mbi_predict.estimator"
HELD_OUT_PREFIX = "held_out/"
BOUNDS = ("ci_low", "ci_high", "pi_low", "pi_high", "tau2")
_MAX_PARAM_LENGTH = 6000   # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LENGTH = 8000     # MAX_TAG_VAL_LENGTH
_BATCH = 100               # params/tags per log_batch (MAX_PARAMS_TAGS_PER_BATCH); metrics allow 1000
_METRIC_BATCH = 900


# ------------------------------------------------------------------------------------------------ helpers

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config)


def config_sha256(config: Any) -> str:
    """A hash of the resolved config (canonical JSON), the same for the same settings whatever the YAML layout."""
    text = json.dumps(_config_dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_unset(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (dict, list, tuple)) and not value) or (
        isinstance(value, float) and not math.isfinite(value))


def flat_params(node: Any, prefix: str = "") -> dict[str, str]:
    """``a.b.c -> value`` strings, unset values (None, "", {}, [], NaN) omitted; lists as JSON."""
    out: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
    elif not _is_unset(node):
        text = json.dumps(node, default=str) if isinstance(node, (list, tuple)) else str(node)
        out[prefix] = text[:_MAX_PARAM_LENGTH]
    return out


def _clip_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:_MAX_TAG_LENGTH] for k, v in tags.items() if v is not None and v != ""}


def _model_specs(config: Any, models: Iterable[Any] | None) -> list[dict[str, str]]:
    """[{name, kind, estimator}] from ``models`` (objects or dicts) or the config's models."""
    source = models if models is not None else _config_dict(config).get("models", [])
    specs = []
    for m in source:
        get = m.get if isinstance(m, Mapping) else lambda k, m=m: getattr(m, k, None)
        specs.append({"name": str(get("name")), "kind": str(get("kind") or "prognostic"),
                      "estimator": str(get("estimator") or "")})
    return specs


def _run_name(experiment: str) -> str:
    return f"{experiment}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def _source_name() -> str:
    """What started the run: the console script (``mbi-predict``), the ``-m`` module, or the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name.removesuffix(".__main__")
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    return Path(argv0).name or "python"


# ----------------------------------------------------------------------------------------- metric mapping

def model_metrics(name: str, summary: dict[str, Any]) -> dict[str, float]:
    """The model run's pooled metrics: ``<metric>``, ``<metric>_<bound>``, ``<metric>_k``; the comparison with the
    reference model (``<metric>_vs_reference`` and its CI), the clustered ATE, the heterogeneity verdict (0/1)
    and its decisive tests' p-values, and timings. Names are the same for every model of a kind."""
    block = summary["models"][name]
    metrics: dict[str, float] = {}
    for metric, pooled in (block.get("pooled") or {}).items():
        if _finite(pooled.get("estimate")):
            metrics[metric] = float(pooled["estimate"])
        for bound in BOUNDS:
            if _finite(pooled.get(bound)):
                metrics[f"{metric}_{bound}"] = float(pooled[bound])
        if _finite(pooled.get("k")):
            metrics[f"{metric}_k"] = float(pooled["k"])
    comparison = summary.get("comparison_to_reference") or {}
    versus = (comparison.get("models") or {}).get(name) or {}
    if versus and comparison.get("metric"):
        stem = f"{comparison['metric']}_vs_reference"
        for key, label in (("difference", stem), ("ci_low", f"{stem}_ci_low"), ("ci_high", f"{stem}_ci_high")):
            if _finite(versus.get(key)):
                metrics[label] = float(versus[key])
        if isinstance(versus.get("beats_reference"), bool):
            metrics[f"{stem}_beats"] = float(versus["beats_reference"])
    ate = block.get("ate_clustered") or {}
    for key in ("estimate", "se", "ci_low", "ci_high"):
        if _finite(ate.get(key)):
            metrics["ate_clustered" if key == "estimate" else f"ate_clustered_{key}"] = float(ate[key])
    heterogeneity = block.get("heterogeneity") or {}
    if heterogeneity.get("verdict") in ("evidence", "no_evidence"):
        metrics["heterogeneity_evidence"] = float(heterogeneity["verdict"] == "evidence")
    for test in heterogeneity.get("tests", []) or []:
        if test.get("decisive") and _finite(test.get("p_value")):
            metrics[f"heterogeneity_p_{test['name']}"] = float(test["p_value"])
    metrics.update(_group_metrics(block))
    for key, value in (block.get("timing") or {}).items():
        if _finite(value):
            metrics[key] = float(value)
    return metrics


def _group_metrics(block: dict[str, Any]) -> dict[str, float]:
    """The harm flag (0/1) and its p, the top-minus-bottom group contrast's p and whether the treatment rule beats
    offering to all (0/1): the tests of ``gates``/``harm``/``policy`` (their pooled effects are pooled metrics)."""
    out: dict[str, float] = {}
    harm, gates, policy = block.get("harm") or {}, block.get("gates") or {}, block.get("policy") or {}
    if harm.get("tested"):
        out["harm_flagged"] = float(bool(harm.get("flagged")))
        if _finite(harm.get("p_value")):
            out["harm_p"] = float(harm["p_value"])
    if _finite((gates.get("top_minus_bottom") or {}).get("p_value")):
        out["gates_top_minus_bottom_p"] = float(gates["top_minus_bottom"]["p_value"])
    if isinstance(policy.get("beats_offer_to_all"), bool):
        out["policy_beats_offer_to_all"] = float(policy["beats_offer_to_all"])
    return out


def held_out_metrics(name: str, summary: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """``held_out/<metric>`` per held-out trial, step = the trial's index in ``validation.held_out``; numeric
    tuned hyper-parameters that differ between folds as ``held_out/param_<name>``."""
    block = summary["models"][name]
    order = {trial: i for i, trial in enumerate(summary["validation"]["held_out"])}
    varying = _varying_params(block)
    out = []
    for row in block.get("per_trial") or []:
        step = order.get(row["trial_id"])
        if step is None:
            continue
        values = {f"{HELD_OUT_PREFIX}{k}": float(v) for k, v in row.items()
                  if k not in ("trial_id", "variances") and _finite(v)}
        best = (block.get("best_params") or {}).get(row["trial_id"]) or {}
        values.update({f"{HELD_OUT_PREFIX}param_{k}": float(best[k]) for k in varying if _finite(best.get(k))})
        out.append((step, values))
    return out


def _varying_params(block: dict[str, Any]) -> set[str]:
    folds = [p or {} for p in (block.get("best_params") or {}).values()]
    keys = {k for p in folds for k in p}
    return {k for k in keys if len({json.dumps(p.get(k), default=str) for p in folds}) > 1}


def model_params(name: str, summary: dict[str, Any]) -> dict[str, str]:
    """The model's real hyper-parameters, no unset values: the config's params, overridden by the values every
    fold's tuning agreed on, overridden by the final model's tuned values; plus estimator, kind, imputer,
    tuning budget and ``held_out_trials`` (step -> trial id, comma-separated in step order)."""
    block = summary["models"][name]
    spec = next((m for m in (summary.get("config") or {}).get("models", []) if m.get("name") == name), {})
    hyper: dict[str, Any] = dict(spec.get("params") or {})
    folds = [p or {} for p in (block.get("best_params") or {}).values()]
    if folds:
        varying = _varying_params(block)
        hyper.update({k: v for k, v in folds[0].items() if k not in varying})
    hyper.update(block.get("final_model_params") or {})
    params = flat_params(hyper)
    meta = {"estimator": block.get("estimator") or spec.get("estimator"), "kind": spec.get("kind") or (
        "effect" if block.get("task") == "effect" else "prognostic"), "imputer": spec.get("imputer"),
        "tuning_n_trials": (spec.get("tuning") or {}).get("n_trials") or None,
        "n_features": len(block.get("features") or []) or None}
    params.update({f"mbi_predict.{k}" if k in params else k: str(v) for k, v in meta.items() if not _is_unset(v)})
    held_out = ",".join(summary["validation"]["held_out"])
    if held_out and len(held_out) <= _MAX_PARAM_LENGTH:
        params["held_out_trials"] = held_out
    return params


def run_facts(summary: dict[str, Any]) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """The parent run's (metrics, params, tags) from the summary."""
    data = summary["data"]
    analysed = data.get("analysed") or {}
    metrics = {"n_participants": data.get("n_participants"), "n_trials": data.get("n_trials"),
               "n_analysed": analysed.get("n_participants"), "n_trials_analysed": analysed.get("n_trials"),
               "n_held_out": len(summary["validation"]["held_out"])}
    heterogeneity = summary.get("heterogeneity") or {}
    if heterogeneity.get("verdict") in ("evidence", "no_evidence"):
        metrics["heterogeneity_evidence"] = float(heterogeneity["verdict"] == "evidence")
    params = flat_params({"run": {
        "outcome": summary.get("outcome"), "outcome_type": summary.get("outcome_type"),
        "control_type": summary.get("control_type"), "data_sha256": data.get("sha256"),
        "data_source": data.get("source"), "validation_scheme": summary["validation"].get("scheme"),
        "primary_metric": summary["validation"].get("primary_metric"),
        "heterogeneity_method": heterogeneity.get("method"), "heterogeneity_rule": heterogeneity.get("rule"),
        "heterogeneity_alpha": heterogeneity.get("alpha"),
        "heterogeneity_primary_model": heterogeneity.get("primary_model")}})
    tags = _clip_tags({"mbi_predict.outcome": summary.get("outcome"), "mbi_predict.data_sha256": data.get("sha256"),
                       "mbi_predict.validation": summary["validation"].get("scheme"),
                       "mbi_predict.models": ",".join(summary["models"]),
                       "mbi_predict.heterogeneity": heterogeneity.get("verdict"),
                       "mbi_predict.heterogeneity_reason": heterogeneity.get("reason")})
    return {k: float(v) for k, v in metrics.items() if _finite(v)}, params, tags
