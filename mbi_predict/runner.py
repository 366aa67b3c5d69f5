"""Run one experiment config end to end: load the data once, validate every model leave-one-trial-out, pool the
per-trial metrics, plot, write ``summary.json`` and log the run to MLflow.

`run_experiment` is what ``mbi-predict run CONFIG`` calls; keyword arguments override the config. The order of work
is chosen so that bad input fails before anything is fitted (config, tracking store, data, outcome, covariates,
folds), and that nothing is half-written: outputs are built in a staging folder inside ``out_dir`` and moved into
place, ``summary.json`` last, only when everything (including MLflow logging) has succeeded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io as _io
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.config import ExperimentConfig, load_config, parse_config
from mbi_predict.errors import ConfigError
from mbi_predict.io import sha256_file, write_json_atomic, write_parquet_atomic
from mbi_predict.parallel import local_workers
from mbi_predict.validate.loto import (ITT_NOTE, FoldPlan, FoldResult, PreparedData, make_jobs, plan_folds,
                                       prepare_data, run_jobs)
from mbi_predict.validate.metrics import LOWER_IS_BETTER, PRIMARY_METRIC, paired_difference
from mbi_predict.validate.pooling import pool_metric
from mbi_predict.validate.verdict_null import METHOD as VERDICT_NULL_METHOD
from mbi_predict.validate.verdict_null import VerdictCalibration, calibrate_run


@dataclass(frozen=True)
class RunResult:
    summary: dict[str, Any]
    out_dir: Path
    summary_path: Path
    mlflow_run_id: str | None
    predictions_path: Path | None = None
    plot_paths: tuple[Path, ...] = field(default_factory=tuple)
    #: per-fold results with the fitted models, only with ``keep_models=True`` (in memory, never written)
    fold_results: tuple[Any, ...] = field(default_factory=tuple, repr=False)


# ------------------------------------------------------------------------------------------------- inputs

#: the config's data path when the table is given to `run_experiment` as a DataFrame
IN_MEMORY = "(in-memory DataFrame)"


def _resolve_config(config: ExperimentConfig | str | Path | dict, *, data: str | Path | pd.DataFrame | None,
                    outcome: str | None, tracking_uri: str | None) -> ExperimentConfig:
    in_memory = isinstance(data, pd.DataFrame)
    if isinstance(config, ExperimentConfig):
        resolved = config
    elif isinstance(config, dict):
        resolved = parse_config({"data": {"path": IN_MEMORY}, **config} if in_memory else config)
    else:
        resolved = load_config(config)
    updates: dict[str, Any] = {}
    if in_memory:
        updates["data"] = {"path": IN_MEMORY}
    elif data is not None:
        updates["data"] = {"path": str(data)}
    if outcome is not None:
        updates["outcome"] = outcome
    if tracking_uri is not None:
        updates["tracking"] = {**resolved.tracking.model_dump(), "uri": tracking_uri}
    if updates:  # re-validate so an override is checked like the file is
        resolved = parse_config({**resolved.model_dump(mode="json"), **updates})
    return resolved


def canonical_sha256(frame: pd.DataFrame) -> str:
    """Hash of the table's canonical parquet bytes (for data that has no file: simulated or harmonised)."""
    buffer = _io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer, index=False)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def load_data(config: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The IPD table and its provenance (source, sha256)."""
    frame, provenance, _ = load_data_with_truth(config)
    return frame, provenance


def load_data_with_truth(config: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """The IPD table, its provenance, and the simulator's truth table when the data carry one: the simulated
    consortium's, or ``truth.parquet`` beside a consortium spec written by ``mbi-predict simulate`` (keyed by
    trial_id + participant_id). The truth is kept apart from the table so it can never become a model input."""
    from mbi_predict.data.schema import check_ipd

    source = config.data
    if source.simulate is not None:
        from mbi_predict.data.simulate import simulate_latent

        sim = source.simulate
        latent = simulate_latent(sim.scenario, seed=sim.seed, n_trials=sim.n_trials, n=sim.n)
        frame = check_ipd(latent.ipd, source="simulated consortium")
        return frame, {"source": "simulated", "simulate": sim.model_dump(), "sha256": canonical_sha256(frame),
                       "truth": "simulator"}, latent.truth
    if source.spec is not None:
        from mbi_predict.data.harmonise import harmonise

        harmonised = harmonise(source.spec)
        frame = harmonised.ipd
        provenance = {"source": "spec", "spec": str(source.spec), "spec_sha256": sha256_file(source.spec),
                      "sha256": canonical_sha256(frame), **harmonisation_facts(harmonised.metadata)}
        truth_path = Path(source.truth) if source.truth else Path(source.spec).parent / "truth.parquet"
        truth = None
        if source.truth or truth_path.is_file():
            truth = read_truth(truth_path)
            provenance["truth"] = str(truth_path)
        return frame, provenance, truth
    from mbi_predict.data.readers import load_ipd

    frame = load_ipd(source.path)
    facts = {}
    if str(source.path).endswith(".parquet"):
        from mbi_predict.data.harmonise import read_parquet_metadata

        facts = harmonisation_facts(read_parquet_metadata(source.path))
    provenance = {"source": "file", "path": str(source.path), "sha256": sha256_file(source.path), **facts}
    truth = None
    if source.truth:
        truth = read_truth(source.truth)
        provenance["truth"] = str(source.truth)
    return frame, provenance, truth


def read_truth(path: str | Path) -> pd.DataFrame:
    """A truth table (parquet or CSV) keyed by trial_id + participant_id; one-line error if unreadable."""
    from mbi_predict.errors import DataError

    path = Path(path)
    try:
        truth = pd.read_csv(path) if path.suffix.lower() in (".csv", ".tsv") else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise DataError(f"cannot read the truth table ({' '.join(str(exc).split())[:200]})", file=str(path)) \
            from None
    for column in ("trial_id", "participant_id"):
        if column not in truth.columns:
            raise DataError("the truth table needs trial_id and participant_id", file=str(path), column=column)
    return truth.astype({"trial_id": str, "participant_id": str})


def harmonisation_facts(metadata: dict[str, Any]) -> dict[str, Any]:
    """What the model card reports of harmonisation: the standardisation declared and the instruments used per
    construct (aggregates of the harmonisation metadata; no participant-level values)."""
    if not metadata:
        return {}
    instruments: dict[str, set[str]] = {}
    for trial in (metadata.get("trials") or {}).values():
        for construct, block in (trial.get("constructs") or {}).items():
            for point in (block.get("timepoints") or {}).values():
                if point.get("instrument"):
                    instruments.setdefault(construct, set()).add(str(point["instrument"]))
    facts: dict[str, Any] = {"instruments": {k: sorted(v) for k, v in sorted(instruments.items())}}
    if metadata.get("standardisation"):
        facts["standardisation"] = {"method": metadata["standardisation"],
                                    "rule": metadata.get("standardisation_rule")}
    return facts


def missingness_facts(frame: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """Share missing per analysed column (an aggregate for the card)."""
    return {c: round(float(frame[c].isna().mean()), 4) for c in columns if c in frame.columns}


def load_prepared(config: ExperimentConfig, frame: pd.DataFrame | None = None
                  ) -> tuple[pd.DataFrame, PreparedData, FoldPlan, dict[str, Any]]:
    """Data loaded, prepared for the comparison (with the truth attached for scoring) and the folds planned."""
    from mbi_predict.validate.loto import attach_truth

    if frame is not None:  # a table given in memory: checked like a file, hashed for provenance
        from mbi_predict.data.schema import check_ipd

        frame = check_ipd(frame, source="the DataFrame given to run_experiment")
        provenance, truth = {"source": "dataframe", "sha256": canonical_sha256(frame)}, None
    else:
        frame, provenance, truth = load_data_with_truth(config)
    prepared = prepare_data(frame, outcome=config.outcome, covariates=config.covariates,
                            study_traits=config.study_traits, control_type=config.comparison.control_type)
    prepared = attach_truth(prepared, truth)
    provenance["missingness"] = missingness_facts(frame, [*prepared.covariates, config.outcome])
    if truth is not None and prepared.truth_cate is None:
        provenance["truth_note"] = (f"no true effect for {config.outcome} vs {prepared.control_type} control in the "
                                    "truth table: pehe and cate_truth_corr not computed")
    from mbi_predict.validate.benefit import MIN_PER_ARM

    has_effect_models = any(model.kind == "effect" for model in config.models)
    plan = plan_folds(prepared, scheme=config.validation.scheme, n_folds=config.validation.folds,
                      min_trial_size=config.validation.min_trial_size, seed=config.seed,
                      min_per_arm=MIN_PER_ARM if has_effect_models else 0)
    return frame, prepared, plan, provenance


# ---------------------------------------------------------------------------------------------- aggregation

def _per_trial_row(result: FoldResult) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": result.held_out, "n": result.n, "n_randomised": result.n_randomised,
                           "n_missing_outcome": result.n_missing_outcome}
    row.update({name: value.value for name, value in result.metrics.items()})
    row["variances"] = {name: value.variance for name, value in result.metrics.items()}
    return row


def _features(spec, data: PreparedData) -> list[str]:
    if spec.kind == "prognostic":
        from mbi_predict.models.prognostic import input_columns

        return input_columns(spec.estimator, data.features)
    return list(data.covariates)


def _model_block(spec, results: list[FoldResult], config: ExperimentConfig, data: PreparedData) -> tuple[dict,
                                                                                                        dict]:
    """The summary block of one model, and what its forest plots need."""
    labels = [r.held_out for r in results]
    metric_names = list(results[0].metrics) if results else []
    pooled, forest = {}, {}
    for metric in metric_names:
        values = [r.metrics[metric].value for r in results]
        variances = [r.metrics[metric].variance for r in results]
        pooled[metric], pool_result = pool_metric(metric, values, variances, labels, model=spec.name,
                                                  method=config.validation.pooling_method,
                                                  hksj=config.validation.hksj, level=config.validation.level)
        forest[metric] = {"labels": labels, "values": values, "variances": variances, "pooled": pool_result}
    task = data.task
    timing = {key: float(sum(r.timing.get(key, 0.0) for r in results))
              for key in ("fit_seconds", "predict_seconds", "tune_seconds", "shap_seconds")}
    block = {
        "task": spec.kind, "estimator": spec.estimator, "outcome_type": task, "features": _features(spec, data),
        "population": results[0].population if results else "all",
        "per_trial": [_per_trial_row(r) for r in results], "pooled": pooled, "timing": timing,
        "best_params": {r.held_out: r.best_params for r in results},
        "tuning": {r.held_out: r.tuning for r in results if r.tuning is not None} or None,
    }
    return block, forest


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


def hash_seed(seed: int, *parts: Any) -> int:
    from mbi_predict.validate.loto import derive_seed

    return derive_seed(seed, "paired", *parts)


def _subgroups(results: list[FoldResult], data: PreparedData) -> list[dict]:
    """Performance by gender, education, age band and baseline-distress tertile on the pooled held-out predictions
    (aggregates only; small groups suppressed by `report.card_subgroups`), for the model card's fairness section."""
    try:
        from mbi_predict.report.card_subgroups import subgroup_metrics
    except ImportError:
        return []
    rows = np.concatenate([r.test_rows[r.evaluated] for r in results]) if results else np.array([], dtype=int)
    predicted = np.concatenate([r.predictions["prediction"].to_numpy()[r.evaluated] for r in results]) \
        if results else np.array([])
    return subgroup_metrics(data.y[rows], predicted, data.X.iloc[rows], data.task)


def _calibration_inputs(results: list[FoldResult], data: PreparedData) -> dict[str, Any]:
    observed, predicted, trial = [], [], []
    for result in results:
        if "prediction" not in result.predictions:
            continue
        observed.append(data.y[result.test_rows][result.evaluated])
        predicted.append(result.predictions["prediction"].to_numpy()[result.evaluated])
        trial.append(np.full(int(result.evaluated.sum()), result.held_out))
    cat = (lambda parts: np.concatenate(parts) if parts else np.array([]))
    return {"observed": cat(observed), "predicted": cat(predicted), "trial": cat(trial), "task": data.task}


# ------------------------------------------------------------------------------------------- effect models

def execution(config: ExperimentConfig):
    """``mbi_predict.parallel.execution_backend(backend, scheduler, n_jobs)``: where fold jobs run. Until that module
    exists the local backend is plain joblib with ``validation.n_jobs``; asking for dask then is a config error."""
    import contextlib

    validation = config.validation
    try:
        from mbi_predict.parallel import execution_backend
    except ImportError:
        if validation.backend != "local":
            raise ConfigError("validation.backend: dask execution needs mbi_predict.parallel, which is not "
                              "available in this installation") from None
        return contextlib.nullcontext(validation.n_jobs)
    return execution_backend(validation.backend, validation.scheduler, validation.n_jobs)


def _null_references(config: ExperimentConfig, data: PreparedData, n_jobs: int) -> tuple[dict, dict]:
    if not any(m.kind == "effect" and config.explain_settings(m.name).enabled for m in config.models):
        return {}, {}
    from mbi_predict.explain.run import null_references

    return null_references(config, data, n_jobs=n_jobs)


def _continuous_modifiers(config: ExperimentConfig, data: PreparedData) -> list[str]:
    """The model's continuous participant-level covariates (study-level traits do not vary within a trial, so no
    within-trial interaction can be estimated for them)."""
    traits = set(config.study_traits)
    return [c for c in data.covariates if c not in traits and pd.api.types.is_numeric_dtype(data.X[c])
            and data.X[c].nunique() > 2]


def _classical_interactions(config: ExperimentConfig, frame: pd.DataFrame, data: PreparedData) -> dict | None:
    """Within-trial arm x covariate interactions (``mbi_predict.meta.interactions``) on the analysis data, for the
    heterogeneity verdict (role per ``heterogeneity.interaction_role``) and beside the SHAP rankings."""
    if not any(m.kind == "effect" for m in config.models):
        return None
    from mbi_predict.errors import MBIError

    modifiers = _continuous_modifiers(config, data)
    out: dict[str, Any] = {"modifiers": modifiers, "control": data.control_type, "records": [], "note": None,
                           "method": ("within-trial interactions, all modifiers in one model per trial, each pooled "
                                      "by REML (Riley et al. 2020, Stat Med)"
                                      if config.heterogeneity.interaction_model == "joint" else
                                      "within-trial interaction, one modifier at a time, pooled by REML "
                                      "(Riley et al. 2020, Stat Med)")}
    if not modifiers:
        out["note"] = "no continuous participant-level covariate"
        return out
    try:
        from mbi_predict.meta import interactions

        analysed = frame[frame["trial_id"].astype(str).isin(set(data.trial))]
        records = interactions(analysed, config.outcome, modifiers, control=data.control_type, seed=config.seed,
                               joint=config.heterogeneity.interaction_model == "joint")
    except (MBIError, ValueError) as exc:
        out["note"] = f"not estimated: {exc}"
        return out
    out["records"] = json.loads(json.dumps(records, default=_json_default))
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _interaction_pvalues(interactions: dict | None) -> dict[str, float]:
    if not interactions:
        return {}
    return {str(r["modifier"]): float(r["pvalue"]) for r in interactions["records"]
            if r.get("pvalue") is not None and np.isfinite(float(r["pvalue"]))}


def _ate_clustered(config: ExperimentConfig, data: PreparedData) -> dict[str, Any]:
    """The doubly robust ATE over all analysed trials with trial-clustered (CR1, t_{G-1}) inference, beside the
    naive independent-rows interval (``mbi_predict.models.inference.trial_aware_ate``)."""
    from mbi_predict.errors import MBIError
    from mbi_predict.models.inference import trial_aware_ate
    from mbi_predict.models.preprocess import make_preprocessor

    observed = np.flatnonzero(np.isfinite(data.y))
    try:
        X = make_preprocessor(data.features, use_arm=False, seed=config.seed).fit_transform(data.X.iloc[observed])
        result = trial_aware_ate(data.y[observed], data.arm[observed], X, data.trial[observed],
                                 seed=derive_seed_for(config.seed, "ate_clustered"), alpha=1 - config.validation.level)
    except (MBIError, ValueError) as exc:
        return {"note": f"not estimated: {exc}"}
    return {"estimate": result["estimate"], "se": result["se"], "ci_low": result["ci_low"],
            "ci_high": result["ci_high"], "n_clusters": result["n_clusters"], "df": result["df"], "n": result["n"],
            "naive": {"se": result["naive_se"], "ci_low": result["naive_ci_low"], "ci_high": result["naive_ci_high"]},
            "note": "AIPW scores with the known randomisation ratio per trial, outcome models cross-fitted over "
                    "whole trials; SE cluster-robust by trial (naive: participants as independent)"}


def projection_covariates(config: ExperimentConfig, data: PreparedData) -> list[str]:
    """The covariates of the best linear projection: the config's ``who_benefits.projection``, else the continuous
    participant-level covariates (as for the classical interactions)."""
    return list(config.who_benefits.projection) if config.who_benefits.projection is not None else \
        _continuous_modifiers(config, data)


def _projection(config: ExperimentConfig, data: PreparedData) -> dict[str, Any]:
    """The best linear projection of the effect on the chosen covariates (`validate.projection`), trial-clustered."""
    from mbi_predict.errors import MBIError
    from mbi_predict.validate.projection import best_linear_projection

    covariates = projection_covariates(config, data)
    if not covariates:
        return {"note": "not estimated: no continuous participant-level covariate"}
    try:
        result = best_linear_projection(data.X[list(data.covariates)], data.y, data.arm, data.trial,
                                        covariates=covariates, level=config.validation.level,
                                        seed=derive_seed_for(config.seed, "blp"))
    except (MBIError, ValueError) as exc:
        return {"note": f"not estimated: {exc}"}
    return result.to_dict()


def derive_seed_for(seed: int, *parts: Any) -> int:
    from mbi_predict.validate.loto import derive_seed

    return derive_seed(seed, *parts)


def _verdict_inputs(pooled: dict, forest: dict) -> dict[str, dict]:
    """Pooled metrics with the pooled SE and degrees of freedom (HKSJ: k - 1) the verdict's tests need."""
    entries = {}
    for metric, entry in pooled.items():
        result = forest.get(metric, {}).get("pooled")
        extra = {}
        if result is not None and entry.get("scale") == "identity":
            extra = {"se": float(result.se), "df": float(result.df)}
        if entry.get("estimate") is not None:
            entries[metric] = {**entry, **extra}
    return entries


def _model_verdict(config: ExperimentConfig, spec, block: dict, forest: dict, interactions: dict | None,
                   calibration: VerdictCalibration | None) -> dict[str, Any]:
    """One effect model's verdict: permutation-calibrated when the run calibrated this model, else ``not_tested``
    with the naive (independent held-out trials) tests kept for information."""
    from mbi_predict.validate.heterogeneity import heterogeneity_verdict
    from mbi_predict.validate.verdict_null import calibrate, observed_statistic

    entries = _verdict_inputs(block["pooled"], forest)
    rule = config.heterogeneity
    needed = [rule.rate_metric] + ([rule.slope_metric] if rule.require_calibration_slope else [])
    if not all(m in entries for m in needed):
        return {"verdict": "no_evidence", "tests": [], "rule": rule.model_dump(), "p_value": 1.0,
                "beats_constant": None, "method": "none", "calibration": None,
                "reason": f"not shown: pooled {', '.join(m for m in needed if m not in entries)} not estimable"}
    interaction_p = _interaction_pvalues(interactions) or None
    null = calibration.null.get(spec.name) if calibration is not None else None
    calibrated = None
    if null is not None:
        naive = heterogeneity_verdict(entries, rule=rule, interaction_pvalues=interaction_p)
        naive_p = {t["metric"]: t["p_value"] for t in naive["tests"] if t.get("p_value") is not None}
        calibrated = {metric: calibrate(metric, observed_statistic(config, forest, metric), null[metric],
                                        naive_p.get(metric, float("nan"))).to_dict() for metric in needed}
    verdict = heterogeneity_verdict(entries, rule=rule, interaction_pvalues=interaction_p, calibrated=calibrated)
    verdict["calibration"] = None if calibrated is None else {"B": rule.null_B, "tests": calibrated,
                                                              "method": VERDICT_NULL_METHOD}
    if calibrated is None:
        verdict["naive_verdict"] = verdict["verdict"]
        verdict["verdict"] = "not_tested"
        verdict["reason"] = (calibration.not_calibrated_reason(spec.name) if calibration is not None else
                             "no effect models calibrated") + "; naive p-values shown for information only"
    return verdict


def _groups_block(config: ExperimentConfig, spec, block: dict, forest: dict, results: list[FoldResult],
                  calibration: VerdictCalibration | None, data: PreparedData) -> dict[str, Any]:
    """gates, harm and policy of one effect model (`validate.groups_summary.groups_block`)."""
    from mbi_predict.validate.groups import rule_frame
    from mbi_predict.validate.groups_summary import groups_block

    rows = np.concatenate([r.test_rows for r in results if "harmed" in r.extras])
    traits, _ = rule_frame(data.X.iloc[rows], list(data.covariates))
    null = calibration.null.get(spec.name) if calibration is not None else None
    return groups_block(config, spec.name, block["pooled"], forest, null, results, traits)


def _effect_blocks(config: ExperimentConfig, spec, block: dict, forest: dict, results: list[FoldResult],
                   interactions: dict | None, ate_clustered: dict | None,
                   calibration: VerdictCalibration | None = None,
                   data: PreparedData | None = None) -> dict[str, Any]:
    """heterogeneity verdict, ate_clustered, harm and the pooled calibration-for-benefit table of one effect model."""
    out: dict[str, Any] = {"ate_clustered": ate_clustered}
    verdict = _model_verdict(config, spec, block, forest, interactions, calibration)
    if any("harmed" in r.extras for r in results):
        out.update(_groups_block(config, spec, block, forest, results, calibration, data))
    verdict["interactions"] = None if interactions is None else interactions["records"]
    out["heterogeneity"] = verdict
    harms = {r.held_out: r.extras["harm"] for r in results if "harm" in r.extras}
    if harms:
        out["harm"] = {
            "per_trial": [{"trial_id": k, **v} for k, v in harms.items()],
            "pooled_share_predicted_harmed": block["pooled"].get("share_predicted_harmed"),
            "pooled": {m: block["pooled"][m] for m in ("share_predicted_harmed", "mean_predicted_risk_difference",
                                                       "observed_effect_predicted_harmed",
                                                       "observed_effect_predicted_not_harmed")
                       if m in block["pooled"]},
            "note": "predicted harmed: predicted risk under MBI above the risk under control; observed effects are "
                    "each held-out trial's doubly robust risk differences within the predicted groups",
        }
    benefit = _benefit_inputs(results)
    if len(benefit["pseudo"]) >= 10:
        from mbi_predict.validate.benefit import calibration_for_benefit_table

        table = calibration_for_benefit_table(benefit["pseudo"], benefit["cate"])
        out["calibration_for_benefit"] = json.loads(table.to_json(orient="records"))
    return out


def _benefit_inputs(results: list[FoldResult]) -> dict[str, Any]:
    pseudo = [r.extras["pseudo"] for r in results if "pseudo" in r.extras]
    cate = [r.extras["cate_scored"] for r in results if "pseudo" in r.extras]
    trial = [np.full(len(r.extras["pseudo"]), r.held_out) for r in results if "pseudo" in r.extras]
    cat = (lambda parts: np.concatenate(parts) if parts else np.array([]))
    return {"pseudo": cat(pseudo), "cate": cat(cate), "trial": cat(trial)}


def _shap_block(config: ExperimentConfig, spec, results: list[FoldResult], null_ref, interactions: dict | None):
    from mbi_predict.explain.run import shap_block

    return shap_block(spec.kind, results, settings=config.explain_settings(spec.name), null_ref=null_ref,
                      interactions=None if interactions is None else interactions["records"],
                      level=config.validation.level, method="REML")


def _shap_plot_files(config: ExperimentConfig, folder: Path, by_model: dict, tables: dict, null_refs: dict,
                     data: PreparedData) -> list[Path]:
    from mbi_predict.explain.run import shap_plots

    written = []
    for spec in config.models:
        if spec.name in tables:
            written += shap_plots(folder, spec.name, spec.kind, by_model[spec.name], tables[spec.name],
                                  settings=config.explain_settings(spec.name), null_ref=null_refs.get(spec.name),
                                  data=data)
    return written


def explain_config(config: ExperimentConfig) -> ExperimentConfig:
    """The config with SHAP switched on (its own settings kept) for recomputing a run's explain step."""
    dumped = config.model_dump(mode="json")
    dumped["explain"] = {**dumped["explain"], "enabled": True}
    for model in dumped["models"]:
        if model.get("explain"):
            model["explain"] = {**model["explain"], "enabled": True}
    return parse_config(dumped)


def explain_models(config: ExperimentConfig, frame: pd.DataFrame, data: PreparedData, plan: FoldPlan,
                   plots_dir: Path) -> tuple[dict[str, tuple[dict, float]], list[Path]]:
    """Refit every fold model with SHAP on (the run's seeds) and rebuild the shap blocks and SHAP plots only:
    ``({model: (shap block, shap seconds)}, plot paths)``."""
    jobs = make_jobs(config, plan)
    with execution(config) as n_jobs:
        fold_results = run_jobs(jobs, data, n_jobs=n_jobs)
        null_refs, null_seconds = _null_references(config, data, n_jobs)
    by_model: dict[str, list[FoldResult]] = {m.name: [] for m in config.models}
    for result in fold_results:
        by_model[result.model].append(result)
    interactions = _classical_interactions(config, frame, data)
    blocks, tables = {}, {}
    for spec in config.models:
        shap, tables[spec.name] = _shap_block(config, spec, by_model[spec.name], null_refs.get(spec.name),
                                              interactions)
        seconds = sum(r.timing.get("shap_seconds", 0.0) for r in by_model[spec.name]) + null_seconds.get(spec.name,
                                                                                                         0.0)
        blocks[spec.name] = (shap, float(seconds))
    plots_dir.mkdir(parents=True, exist_ok=True)
    return blocks, _shap_plot_files(config, plots_dir, by_model, tables, null_refs, data)


# -------------------------------------------------------------------------------------- run-level jobs

def _aux_job(kind: str, config: ExperimentConfig, frame: pd.DataFrame | None, data: PreparedData, payload: Any):
    if kind == "null":
        from mbi_predict.explain.run import _run_null_task

        return _run_null_task(payload)
    if kind == "interactions":
        return _classical_interactions(config, frame, data)
    if kind == "ate_clustered":
        return _ate_clustered(config, data)
    if kind == "projection":
        return _projection(config, data)
    from mbi_predict.validate.loto import fit_final_model

    return fit_final_model(config, config.model(payload), data)


def _run_aux_jobs(config: ExperimentConfig, frame: pd.DataFrame, data: PreparedData, n_jobs: int, *,
                  final: bool) -> dict[str, Any]:
    """Permutation-null refits, classical interactions, clustered ATE and final models as one parallel batch
    (largest first, so the batch ends evenly); results are identical to running them one by one."""
    from mbi_predict.explain.run import null_reference_from_outputs, null_tasks

    effect = any(m.kind == "effect" for m in config.models)
    explained = [m for m in config.models if m.kind == "effect" and config.explain_settings(m.name).enabled]
    tasks: list[tuple[str, Any]] = []
    if final:
        tasks += [("final", spec.name) for spec in config.models]
    if explained:
        tasks += [("null", task) for task in null_tasks(config, data)]
    if effect:
        tasks += [("interactions", None), ("ate_clustered", None)]
        if data.task == "continuous":
            tasks.append(("projection", None))
    analysed = frame[frame["trial_id"].astype(str).isin(set(data.trial))] if effect else None
    if n_jobs == 1 or len(tasks) <= 1:
        outputs = [_aux_job(kind, config, analysed, data, payload) for kind, payload in tasks]
    else:
        from joblib import Parallel, delayed

        outputs = list(Parallel(n_jobs=n_jobs)(delayed(_aux_job)(kind, config, analysed, data, payload)
                                               for kind, payload in tasks))
    out: dict[str, Any] = {"interactions": None, "ate_clustered": None, "projection": None, "final": {},
                           "null": ({}, {})}
    null_outputs = []
    for (kind, payload), output in zip(tasks, outputs):
        if kind == "final":
            out["final"][payload] = output
        elif kind == "null":
            null_outputs.append(output)
        else:
            out[kind] = output
    if null_outputs:
        out["null"] = null_reference_from_outputs(null_outputs)
    return out


def _plot_tasks(config: ExperimentConfig, folder: Path, by_model: dict, forests: dict, shap_tables: dict,
                null_refs: dict, data: PreparedData) -> list[tuple]:
    """One plotting task per model: its forest plots, calibration (prognosis) or calibration for benefit (effect),
    and SHAP figures."""
    tasks = []
    for spec in config.models:
        results = by_model[spec.name]
        calibration = {spec.name: _calibration_inputs(results, data)} if spec.kind == "prognostic" else {}
        benefit = {spec.name: _benefit_inputs(results)} if spec.kind == "effect" else {}
        shap = None
        if spec.name in shap_tables and shap_tables[spec.name] is not None:
            shap = (spec.kind, results, shap_tables[spec.name], config.explain_settings(spec.name),
                    null_refs.get(spec.name))
        tasks.append((folder, spec.name, forests[spec.name], calibration, benefit, shap, data if shap else None))
    return tasks


def _plot_model(folder: Path, name: str, forest: dict, calibration: dict, benefit: dict, shap, data) -> list[Path]:
    from mbi_predict.report.plots import write_plots

    written = write_plots(folder, forests={name: forest}, calibration=calibration, benefit_calibration=benefit)
    if shap is not None:
        from mbi_predict.explain.run import shap_plots

        kind, results, table, settings, null_ref = shap
        written += shap_plots(folder, name, kind, results, table, settings=settings, null_ref=null_ref, data=data)
    return written


class _PlotRenderer:
    """Render the plotting tasks in a background thread that farms them out to worker processes (matplotlib's
    Agg rendering is CPU-bound Python), so the caller can log to MLflow meanwhile. ``result()`` waits."""

    def __init__(self, tasks: list[tuple], n_jobs: int) -> None:
        import threading

        self._paths: list[Path] = []
        self.by_model: dict[str, list[Path]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(tasks, n_jobs), daemon=True)
        self._thread.start()

    def _run(self, tasks: list[tuple], n_jobs: int) -> None:
        try:
            if n_jobs == 1 or len(tasks) <= 1:
                chunks = [_plot_model(*task) for task in tasks]
            else:
                from joblib import Parallel, delayed

                chunks = Parallel(n_jobs=n_jobs, backend="loky")(delayed(_plot_model)(*task) for task in tasks)
            self._paths = [path for chunk in chunks for path in chunk]
            self.by_model = {task[1]: list(chunk) for task, chunk in zip(tasks, chunks)}
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> list[Path]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return list(self._paths)


# ------------------------------------------------------------------------------------------------- progress

class _Progress:
    """A rich progress bar over folds and tuning trials; a no-op when switched off. rich degrades to plain,
    non-animated output when stderr is not a terminal, so piping or CI logs are not broken."""

    def __init__(self, enabled: bool, n_jobs: int, n_trials: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.folds = self.bar.add_task("held-out folds", total=n_jobs)
        self.trials = self.bar.add_task("tuning trials", total=n_trials) if n_trials else None

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def on_trial(self) -> None:
        if self.enabled and self.trials is not None:
            self.bar.advance(self.trials)

    def on_result(self, parallel: bool) -> Callable[[FoldResult], None]:
        def advance(result: FoldResult) -> None:
            if not self.enabled:
                return
            self.bar.advance(self.folds)
            if parallel and self.trials is not None and result.tuning:
                self.bar.advance(self.trials, result.tuning["n_trials"])
        return advance


# ---------------------------------------------------------------------------------------------------- main

def run_experiment(config_path_or_obj: ExperimentConfig | str | Path | dict, *,
                   data: str | Path | pd.DataFrame | None = None,
                   outcome: str | None = None, out_dir: str | Path | None = None, tracking_uri: str | None = None,
                   save_predictions: bool = False, progress: bool = True, keep_models: bool = False) -> RunResult:
    """Validate every model of the config; write ``out_dir/summary.json`` (+ plots, + predictions on request) and
    log the run to MLflow. Flags override the config (``data`` a harmonised table path or an IPD DataFrame, in
    which case the config needs no data block; ``outcome`` a column; ``tracking_uri`` the MLflow store)."""
    from mbi_predict import __version__

    config = _resolve_config(config_path_or_obj, data=data, outcome=outcome, tracking_uri=tracking_uri)
    uri = None
    if config.tracking.enabled:
        from mbi_predict.track import check_tracking_uri

        uri = check_tracking_uri(config.tracking.uri)
    # the MLflow runs exist (RUNNING) from here: FAILED on an error, KILLED on Ctrl-C or SIGTERM
    with _open_tracking(config, uri) as tracking:
        return _run_experiment(config, uri, tracking, data, out_dir, save_predictions, progress, keep_models,
                               __version__)


def _open_tracking(config: ExperimentConfig, uri: str | None):
    import contextlib

    if not uri:
        return contextlib.nullcontext()
    from mbi_predict.track import ExperimentRun

    return ExperimentRun(uri, config.tracking_experiment, config=config, checked=True)


def _run_experiment(config, uri, tracking, data, out_dir, save_predictions, progress, keep_models, __version__):
    frame, prepared, plan, provenance = load_prepared(config, data if isinstance(data, pd.DataFrame) else None)
    _preflight(config, prepared)
    jobs = make_jobs(config, plan, keep_models=keep_models)

    n_trials = sum(job.model.tuning.n_trials for job in jobs)
    with execution(config) as n_jobs:
        parallel = n_jobs != 1
        with _Progress(progress, len(jobs), n_trials) as bar:
            fold_results = run_jobs(jobs, prepared, n_jobs=n_jobs, on_result=bar.on_result(parallel),
                                    on_trial=None if parallel else bar.on_trial)
        # the run-level work that does not need the fold models, as one batch of parallel jobs: permutation-null
        # refits, classical interactions, the clustered ATE and the final (all-trials) models
        aux = _run_aux_jobs(config, frame, prepared, n_jobs,
                            final=bool(uri and config.tracking.log_final_models))
        # the verdict's dependence-aware calibration: the validation repeated on constant-effect draws
        calibration = calibrate_run(config, prepared, plan, n_jobs=n_jobs)
    null_refs, null_seconds = aux["null"]
    interactions, ate_clustered, final_models = aux["interactions"], aux["ate_clustered"], aux["final"] or None
    projection = aux["projection"]
    by_model: dict[str, list[FoldResult]] = {m.name: [] for m in config.models}
    for result in fold_results:
        by_model[result.model].append(result)

    models, forests, shap_tables = {}, {}, {}
    for spec in config.models:
        models[spec.name], forests[spec.name] = _model_block(spec, by_model[spec.name], config, prepared)
        if spec.kind == "prognostic":
            models[spec.name]["subgroups"] = _subgroups(by_model[spec.name], prepared)
        else:
            models[spec.name]["higher_is_better"] = not prepared.outcome_higher_is_worse
            models[spec.name].update(_effect_blocks(config, spec, models[spec.name], forests[spec.name],
                                                    by_model[spec.name], interactions, ate_clustered, calibration,
                                                    prepared))
        if config.explain_settings(spec.name).enabled:
            models[spec.name]["shap"], shap_tables[spec.name] = _shap_block(
                config, spec, by_model[spec.name], null_refs.get(spec.name), interactions)
            models[spec.name]["timing"]["shap_seconds"] += null_seconds.get(spec.name, 0.0)
    summary = _summary(config, frame, provenance, prepared, plan, models, __version__)
    summary["comparison_to_reference"] = comparison_to_reference(config, by_model, prepared, models)
    if interactions is not None:
        summary["classical_interactions"] = interactions
    if projection is not None:
        summary["best_linear_projection"] = projection
    if calibration is not None:
        summary["heterogeneity"] = _run_level_verdict(config, models, calibration)
    if any(block.get("harm", {}).get("group_effect") is not None for block in models.values()):
        from mbi_predict.validate.groups_summary import harm_flagged

        summary["harm_flagged"] = harm_flagged({n: b for n, b in models.items() if "gates" in b},
                                               config.heterogeneity.alpha)

    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        # figures render in worker processes while this process logs to MLflow (sqlite commits, mostly waiting)
        plots = _PlotRenderer(_plot_tasks(config, staging / "plots", by_model, forests, shap_tables, null_refs,
                                          prepared), n_jobs=local_workers(config.validation.n_jobs))
        try:
            run_id = _track(tracking, config, summary, staging, plots, final_models, prepared, frame) if uri else None
        finally:
            plot_paths = plots.result()
        summary["mlflow_run_id"] = run_id
        if not uri:
            write_json_atomic(staging / "summary.json", summary)
        predictions_path = None
        if save_predictions:
            write_parquet_atomic(staging / "predictions.parquet", _predictions(fold_results, prepared), index=False)
        final_plots = _publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if save_predictions:
        predictions_path = out_dir / "predictions.parquet"
    return RunResult(summary, out_dir, out_dir / "summary.json", run_id, predictions_path, tuple(final_plots),
                     tuple(fold_results) if keep_models else ())


def _run_level_verdict(config: ExperimentConfig, models: dict, calibration: VerdictCalibration) -> dict[str, Any]:
    """The run's one heterogeneity verdict (``validate.heterogeneity.run_verdict``) from the per-model blocks."""
    from mbi_predict.validate.heterogeneity import run_verdict

    per_model = {name: block["heterogeneity"] for name, block in models.items() if block.get("heterogeneity")}
    return run_verdict(per_model, rule=config.heterogeneity, run_rule=calibration.run_rule,
                       primary=calibration.primary, method=calibration.method,
                       not_tested_reason=calibration.not_tested)


def _preflight(config: ExperimentConfig, data: PreparedData) -> None:
    """Build every model once so unknown parameters fail before hours of fitting; check the heterogeneity rule."""
    from mbi_predict.models.prognostic import make_prognostic_model
    from mbi_predict.validate.heterogeneity import resolve_run_rule

    effect_models = [m.name for m in config.models if m.kind == "effect"]
    if effect_models:
        resolve_run_rule(config.heterogeneity, effect_models)
        for column in config.who_benefits.projection or []:
            if column not in data.covariates:
                raise ConfigError(f"who_benefits.projection: {column!r} is not a covariate of this analysis "
                                  f"({', '.join(data.covariates)})")

    for spec in config.models:
        if spec.kind == "prognostic":
            make_prognostic_model(spec.estimator, data.task, spec.params, 0, features=data.features,
                                  imputer=spec.imputer)
            if spec.tuning.n_trials > 0:  # a misspelt search-space parameter fails here, not in a tuning worker
                from mbi_predict.models.tuning import representative_params, search_space

                space = search_space(spec.estimator, data.task, spec.tuning.search_space, spec.params)
                try:
                    make_prognostic_model(spec.estimator, data.task, {**spec.params, **representative_params(space)},
                                          0, features=data.features, imputer=spec.imputer)
                except ConfigError as exc:
                    raise ConfigError(f"models.{spec.name}.tuning.search_space: {exc}") from None
        else:
            try:
                from mbi_predict.models.effect import make_effect_model
            except ImportError as exc:
                raise ConfigError(f"models.{spec.name}: effect models are not available ({exc})") from None
            make_effect_model(spec.estimator, **spec.params)


def _summary(config: ExperimentConfig, frame: pd.DataFrame, provenance: dict, data: PreparedData, plan: FoldPlan,
             models: dict, version: str) -> dict[str, Any]:
    from mbi_predict.track.store import git_commit

    validation = {
        "scheme": plan.scheme, "note": plan.note, "held_out": [f.label for f in plan.folds],
        "skipped": list(plan.skipped), "trials": list(plan.trials), "min_trial_size": config.validation.min_trial_size,
        "pooling": {"method": config.validation.pooling_method, "hksj": config.validation.hksj,
                    "level": config.validation.level,
                    "scales": "c_statistic pooled on the logit scale, oe_ratio on the log scale (estimates and "
                              "intervals back-transformed; tau2 on the pooling scale); other metrics as they are"},
        "bootstrap": config.validation.bootstrap, "itt_note": ITT_NOTE,
        "primary_metric": PRIMARY_METRIC[data.task],
    }
    return {
        "mlflow_run_id": None, "experiment": config.experiment, "outcome": config.outcome,
        "outcome_type": data.task, "control_type": data.control_type,
        "comparison": {"control_type": data.control_type},
        "covariates": list(data.covariates),
        "data": {**provenance, "n_participants": int(len(frame)), "n_trials": int(frame["trial_id"].nunique()),
                 "analysed": {"n_participants": data.n, "n_trials": int(len(np.unique(data.trial))),
                              "n_missing_outcome": int((~np.isfinite(data.y)).sum())},
                 "trials": _trial_descriptors(frame)},
        "validation": validation, "models": models, "seed": config.seed,
        "package_version": version, "git_commit": git_commit(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json"),
    }


def _trial_descriptors(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per-trial design facts for the model card: sizes by arm, control kinds and study-level traits."""
    from mbi_predict.data.schema import STUDY_TRAITS

    rows = []
    for trial_id, trial in frame.groupby("trial_id", sort=True):
        row: dict[str, Any] = {"trial_id": str(trial_id), "n": int(len(trial)), "n_mbi": int((trial["arm"] == 1).sum()),
                               "n_control": int((trial["arm"] == 0).sum()),
                               "control_types": sorted({str(c) for c in trial["control_type"].dropna()})}
        for trait in STUDY_TRAITS:
            if trait in trial.columns and trial[trait].notna().any():
                value = trial[trait].dropna().iloc[0]
                row[trait] = value.item() if hasattr(value, "item") else value
        rows.append(row)
    return rows


def _track(run, config: ExperimentConfig, summary: dict, staging: Path, plots: _PlotRenderer,
           final_models: dict | None, data: PreparedData, frame: pd.DataFrame) -> str:
    """Log the finished experiment into its open MLflow run (`mbi_predict.track.ExperimentRun`): the dataset
    (schema and counts), the final models as LoggedModels in their model runs, every model's metrics and params,
    then summary.json, the config and the plots by model. The tracker returns what goes into the summary."""
    from mbi_predict.deploy import envelope_from_training

    summary["mlflow_run_id"] = run.run_id
    run.log_dataset(summary, columns=frame)  # dtypes and counts only: the tracker drops the rows
    for name, fitted in (final_models or {}).items():
        block = summary["models"][name]
        features = block["features"]
        envelope = envelope_from_training(data.X.iloc[fitted.train_rows][features])
        block["final_model_uri"] = run.log_final_model(name, fitted.model, kind=block["task"], features=features,
                                                       task=data.task, envelope=envelope, preprocess=fitted.preprocess)
        block["final_model_params"] = fitted.tuned
    for name, run_id in run.model_runs.items():
        summary["models"][name]["mlflow_run_id"] = run_id
    run.log_results(summary)
    write_json_atomic(staging / "summary.json", summary)
    plots.result()
    run.log_artifacts(summary_path=staging / "summary.json", config=config, plots=plots.by_model)
    return run.run_id


def _predictions(results: list[FoldResult], data: PreparedData) -> pd.DataFrame:
    frames = []
    for result in results:
        frame = result.predictions.copy()
        frame["scored"] = result.evaluated
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _publish(staging: Path, out_dir: Path) -> list[Path]:
    """Move staged outputs into ``out_dir`` (plots first, summary.json last)."""
    plots = []
    if (staging / "plots").is_dir():
        (out_dir / "plots").mkdir(exist_ok=True)
        for path in sorted((staging / "plots").iterdir()):
            target = out_dir / "plots" / path.name
            path.replace(target)
            plots.append(target)
    if (staging / "predictions.parquet").exists():
        (staging / "predictions.parquet").replace(out_dir / "predictions.parquet")
    (staging / "summary.json").replace(out_dir / "summary.json")
    return plots


def _default_out_dir(config: ExperimentConfig) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("runs") / config.experiment / stamp
