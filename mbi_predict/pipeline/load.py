"""Stage "load": the config resolved, the data loaded once, prepared for the comparison, the folds planned and every
model built once, so that bad input fails before anything is fitted (config, data, outcome, covariates, folds,
model parameters, the heterogeneity rule).

Contract: `load_inputs(config, frame)` returns the frozen `RunInputs` every later stage reads (the config, the IPD
table, the prepared analysis data with the simulator's truth attached for scoring only, the fold plan, and the
data's provenance, which becomes the summary's ``data`` block). Nothing is fitted here; every problem is a one-line
`mbi_predict.errors.MBIError`.
"""

from __future__ import annotations

import hashlib
import io as _io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mbi_predict.config import ExperimentConfig, load_config, parse_config
from mbi_predict.data.harmonise import harmonise
from mbi_predict.data.publish import read_parquet_metadata
from mbi_predict.data.readers import load_ipd
from mbi_predict.data.schema import check_ipd
from mbi_predict.data.simulate import simulate_latent
from mbi_predict.errors import ConfigError, DataError
from mbi_predict.io import sha256_file
from mbi_predict.models.effect import make_effect_model
from mbi_predict.models.prognostic import make_prognostic_model
from mbi_predict.models.tuning import representative_params, search_space
from mbi_predict.validate.benefit import MIN_PER_ARM
from mbi_predict.validate.heterogeneity import resolve_run_rule
from mbi_predict.validate.loto import FoldPlan, PreparedData, attach_truth, plan_folds, prepare_data

#: the config's data path when the table is given to `run_experiment` as a DataFrame
IN_MEMORY = "(in-memory DataFrame)"


@dataclass(frozen=True)
class RunInputs:
    """What every stage after loading reads; built once per run."""

    config: ExperimentConfig
    frame: pd.DataFrame              # the IPD table as loaded (every trial and arm)
    data: PreparedData               # the comparison's analysed rows, model-ready
    plan: FoldPlan
    provenance: dict[str, Any]       # source, sha256, harmonisation facts, missingness (the summary's data block)


def resolve_config(config: ExperimentConfig | str | Path | dict, *, data: str | Path | pd.DataFrame | None,
                   outcome: str | None, tracking_uri: str | None) -> ExperimentConfig:
    """The config (object, mapping or YAML path) with `run_experiment`'s overrides applied and re-validated."""
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
    source = config.data
    if source.simulate is not None:
        sim = source.simulate
        latent = simulate_latent(sim.scenario, seed=sim.seed, n_trials=sim.n_trials, n=sim.n)
        frame = check_ipd(latent.ipd, source="simulated consortium")
        return frame, {"source": "simulated", "simulate": sim.model_dump(), "sha256": canonical_sha256(frame),
                       "truth": "simulator"}, latent.truth
    if source.spec is not None:
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
    frame = load_ipd(source.path)
    facts = {}
    if str(source.path).endswith(".parquet"):
        facts = harmonisation_facts(read_parquet_metadata(source.path))
    provenance = {"source": "file", "path": str(source.path), "sha256": sha256_file(source.path), **facts}
    truth = None
    if source.truth:
        truth = read_truth(source.truth)
        provenance["truth"] = str(source.truth)
    return frame, provenance, truth


def read_truth(path: str | Path) -> pd.DataFrame:
    """A truth table (parquet or CSV) keyed by trial_id + participant_id; one-line error if unreadable."""
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
    if frame is not None:  # a table given in memory: checked like a file, hashed for provenance
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
    has_effect_models = any(model.kind == "effect" for model in config.models)
    plan = plan_folds(prepared, scheme=config.validation.scheme, n_folds=config.validation.folds,
                      min_trial_size=config.validation.min_trial_size, seed=config.seed,
                      min_per_arm=MIN_PER_ARM if has_effect_models else 0)
    return frame, prepared, plan, provenance


def preflight(config: ExperimentConfig, data: PreparedData) -> None:
    """Build every model once so unknown parameters fail before hours of fitting; check the heterogeneity rule."""
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
                space = search_space(spec.estimator, data.task, spec.tuning.search_space, spec.params)
                try:
                    make_prognostic_model(spec.estimator, data.task, {**spec.params, **representative_params(space)},
                                          0, features=data.features, imputer=spec.imputer)
                except ConfigError as exc:
                    raise ConfigError(f"models.{spec.name}.tuning.search_space: {exc}") from None
        else:
            make_effect_model(spec.estimator, **spec.params)


def load_inputs(config: ExperimentConfig, frame: pd.DataFrame | None = None) -> RunInputs:
    """The stage: load (or check the given table), prepare, plan, preflight."""
    frame, prepared, plan, provenance = load_prepared(config, frame)
    preflight(config, prepared)
    return RunInputs(config, frame, prepared, plan, provenance)
