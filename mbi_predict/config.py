"""Experiment configs: one YAML file declares data, outcome, covariates, models, validation and tracking.

Why pydantic with ``extra="forbid"``: a misspelt key (``n_trial:``) silently falling back to a default would run a
different experiment than the one written down. Every error is turned into one line naming the key at fault
(``models.xgb.tuning.n_trials: ...``), which the CLI prints with exit status 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mbi_predict.io import parse_yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mbi_predict import figstyle
from mbi_predict.errors import ConfigError

#: Prognostic estimator families known to ``mbi_predict.models.prognostic`` (kept here so a config is checked
#: before any data is read; the model module asserts the two lists agree).
PROGNOSTIC_ESTIMATORS = ("reference", "elastic_net", "random_forest", "xgboost", "path_risk")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulateConfig(_Strict):
    """The built-in simulated consortium (``mbi_predict.data.simulate.simulate_latent``)."""

    scenario: str = "galante2023"
    seed: int = 2023
    n_trials: int = Field(13, ge=1)
    n: int = Field(2371, ge=40)


class DataConfig(_Strict):
    """Exactly one source: a harmonised table, a consortium spec to harmonise, or the simulator."""

    path: str | None = None
    spec: str | None = None
    simulate: SimulateConfig | None = None
    #: optional table of true individual effects (simulations, semi-synthetic benchmarks): trial_id,
    #: participant_id and ``true_effect_{control}_{outcome}`` columns; scored as pehe / cate_truth_corr, never a
    #: model input. A spec written by ``mbi-predict simulate`` finds its truth.parquet without this.
    truth: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        given = [k for k in ("path", "spec", "simulate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, spec, simulate (got {', '.join(given) or 'none'})")
        return self


class ComparisonConfig(_Strict):
    """Rows used: every MBI row plus the control rows of this kind, trial by trial."""

    control_type: Literal["passive", "active"] = "passive"


class SearchParam(_Strict):
    """One dimension of an Optuna search space; overrides the family default of the same name."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical search parameter needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError("a numeric search parameter needs low < high")
            if self.log and self.low <= 0:
                raise ValueError("a log-scaled search parameter needs low > 0")
        return self


class ModelTuning(_Strict):
    """Per-model Optuna budget. ``n_trials: 0`` means no tuning: the fixed params (or family defaults) are used."""

    n_trials: int = Field(0, ge=0)
    timeout: float | None = Field(None, gt=0)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)


class ExplainConfig(_Strict):
    """SHAP in the leave-one-trial-out run (``mbi_predict.explain.run``): per fold on the held-out trial's rows
    against a background of training rows, pooled across folds; for effect models also a within-trial
    arm-permutation null, refitted ``null_B`` times on all trials. Caps keep SHAP from dominating the run time."""

    enabled: bool = False
    max_rows: int = Field(200, ge=10)        # held-out rows explained per fold
    max_background: int = Field(100, ge=10)  # training rows used as the SHAP background
    top_k: int = Field(3, ge=1)              # for top_k_frequency in the stability table
    #: permutation-null refits (effect models only; 0 disables); below 19 the family-wise test cannot reach alpha
    #: 0.05 and the rankings are reported as not tested
    null_B: int = Field(19, ge=0)
    dependence_top: int = Field(3, ge=0)     # features in the dependence / benefit-profile plots


class WhoBenefitsConfig(_Strict):
    """Group effects by predicted benefit, harm and a readable treatment rule for every effect model, measured in
    each held-out trial (``mbi_predict.validate.groups``) and pooled across trials."""

    enabled: bool = True
    n_groups: int = Field(5, ge=2, le=10)        # groups by the training trials' quantiles of predicted benefit
    harm_threshold: float = Field(0.0, ge=0)     # predicted benefit below -threshold (outcome SD units) = harmed
    rule_depth: int = Field(2, ge=1, le=2)       # depth of the treatment rule (one or two traits)
    min_leaf: int = Field(20, ge=5)              # fewest training participants on each side of a rule's split
    #: covariates of the best linear projection of the effect (``validate.projection``); default: the continuous
    #: participant-level covariates
    projection: list[str] | None = None


class ModelConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    kind: Literal["prognostic", "effect"] = "prognostic"
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)
    imputer: Literal["simple", "iterative"] = "simple"
    tuning: ModelTuning = Field(default_factory=ModelTuning)
    #: per-model SHAP settings; overrides the config's top-level ``explain`` block as a whole
    explain: ExplainConfig | None = None

    @model_validator(mode="after")
    def _known_estimator(self) -> ModelConfig:
        if self.kind == "prognostic" and self.estimator not in PROGNOSTIC_ESTIMATORS:
            raise ValueError(f"unknown prognostic estimator {self.estimator!r}; use one of "
                             f"{', '.join(PROGNOSTIC_ESTIMATORS)}")
        return self


class TuningConfig(_Strict):
    """Settings shared by every model's tuning."""

    inner_folds: int = Field(3, ge=2)
    #: an Optuna storage URL (e.g. ``sqlite:///optuna.db`` or a PostgreSQL URL) so several workers share studies
    storage: str | None = None


class ValidationConfig(_Strict):
    scheme: Literal["loto", "kfold"] = "loto"
    folds: int = Field(5, ge=2)  # K for the internal K-fold scheme
    min_trial_size: int = Field(20, ge=2)
    bootstrap: int = Field(200, ge=0)  # B for metrics whose sampling variance has no formula
    n_jobs: int = 1
    pooling_method: Literal["REML", "ML", "DL", "PM", "FE"] = "REML"
    hksj: bool = False  # Hartung-Knapp-Sidik-Jonkman CI for the pooled metrics
    level: float = Field(0.95, gt=0, lt=1)
    #: where fold jobs run: ``local`` (joblib processes) or ``dask`` (joblib's dask backend on ``scheduler``,
    #: e.g. ``tcp://host:8786``, required for dask); see ``mbi_predict.parallel.execution_backend``
    backend: Literal["local", "dask"] = "local"
    scheduler: str | None = None
    #: before fitting, estimate the run's time and memory from two pilot fits (data of 50,000 analysed rows or more,
    #: local backend; `mbi_predict.validate.estimate`) and stop, before any fitting, when the memory estimate
    #: exceeds what the machine has available
    estimate: bool = True

    @field_validator("n_jobs")
    @classmethod
    def _n_jobs(cls, value: int) -> int:
        if value == 0:
            raise ValueError("n_jobs must be a positive number of workers or -1 for all cores")
        return value


class TrackingConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None  # MLflow experiment name; defaults to the config's experiment
    #: refit every model on all analysed trials and log it as an MLflow pyfunc model (``mbi_predict.deploy``)
    #: inside the parent run, so ``mbi-predict predict`` and model cards can use it
    log_final_models: bool = False
    #: register a final model in the MLflow Model Registry under this name when the run ends (its model card as the
    #: version's description, alias ``candidate``), as ``mbi-predict card RUN --register NAME`` does; needs
    #: ``log_final_models: true``
    #: (``register`` in the YAML; the attribute is ``registry_name`` because pydantic models have a ``register``)
    registry_name: str | None = Field(None, min_length=1, alias="register")
    #: which model to register (default: the model the default card describes)
    register_model: str | None = None

    @model_validator(mode="after")
    def _registering_needs_final_models(self) -> TrackingConfig:
        if self.registry_name and not (self.enabled and self.log_final_models):
            raise ValueError("register needs tracking enabled and log_final_models: true (only a logged final "
                             "model can be registered)")
        if self.register_model and not self.registry_name:
            raise ValueError("register_model names the model to register: give register (the registry name) too")
        return self


class FiguresConfig(_Strict):
    """Format and resolution of every figure a run writes (forest, calibration, benefit calibration, TOC, SHAP):
    png, svg or pdf at ``dpi`` dots per inch. Presentation only: it changes no number. ``mbi-predict run
    --figure-format/--dpi`` override it; the figures sink hands it to the plotting workers (`mbi_predict.figstyle`)."""

    format: Literal["png", "svg", "pdf"] = figstyle.DEFAULT_FORMAT
    dpi: int = figstyle.DEFAULT_DPI

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> str:
        problem = figstyle.format_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return str(value).lower().lstrip(".")

    @field_validator("dpi", mode="before")
    @classmethod
    def _dpi(cls, value: Any) -> int:
        problem = figstyle.dpi_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return int(float(value))

    def settings(self) -> figstyle.FigureSettings:
        return figstyle.FigureSettings(self.format, self.dpi)


class VerdictRule(BaseModel):
    """The declared heterogeneity rule; see the module docstring for its rationale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=0.5, description="familywise false-positive rate of an 'evidence' verdict")
    rate_metric: str = "rate_autoc"
    slope_metric: str = "benefit_calibration_slope"
    require_calibration_slope: bool = True
    interaction_role: Literal["report", "alternative", "ignore"] = "report"
    #: classical interactions: all modifiers in one within-trial model (``joint``, default: a covariate correlated
    #: with a true modifier is not "significant" for it) or one modifier at a time (``separate``)
    interaction_model: Literal["joint", "separate"] = "joint"
    min_trials: int = Field(3, ge=2)
    ci_level: float = Field(0.95, gt=0, lt=1, description="level of pooled intervals, used only when se is missing")
    #: how the pooled held-out statistics are made dependence-aware (`mbi_predict.validate.verdict_null`):
    #: ``permutation`` refits the validation on ``null_B`` constant-effect draws; ``none`` gives no verdict (the
    #: naive p-values, which treat held-out trials as independent, are shown but do not decide)
    calibration: Literal["permutation", "none"] = "permutation"
    null_B: int = Field(19, ge=0, le=2000, description="constant-effect draws of the permutation calibration")
    #: one verdict per run: ``primary`` (only ``primary_model`` decides), ``holm`` (family-wise over every effect
    #: model, Holm's step-down on the models' p-values) or ``auto`` (primary when ``primary_model`` is given or
    #: there is one effect model, else holm)
    run_rule: Literal["auto", "primary", "holm"] = "auto"
    primary_model: str | None = None
    #: "evidence" also needs the model to beat predicting its training average effect for everyone, on the held-out
    #: doubly robust loss (pooled ``dr_loss_vs_constant`` below 0)
    require_beats_constant: bool = True
    constant_metric: str = "dr_loss_vs_constant"
    #: participant-level K-fold over several trials gives no verdict unless asked for explicitly
    internal_validation: bool = False


@dataclass(frozen=True)
class GroupSettings:
    """What `validate.groups.held_out_groups` computes (from the config's ``who_benefits`` block)."""

    n_groups: int = 5
    harm_threshold: float = 0.0
    rule_depth: int = 2
    min_leaf: int = 20
    rules: bool = True


class ExperimentConfig(_Strict):
    experiment: str = Field(min_length=1)
    data: DataConfig
    outcome: str
    covariates: list[str] | Literal["all"] = "all"
    study_traits: list[str] = Field(default_factory=list)
    comparison: ComparisonConfig = Field(default_factory=ComparisonConfig)
    models: list[ModelConfig] = Field(min_length=1)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    #: the pre-declared heterogeneity rule (``mbi_predict.validate.heterogeneity.VerdictRule``), applied to every
    #: effect model's pooled leave-one-trial-out metrics
    heterogeneity: VerdictRule = Field(default_factory=VerdictRule)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    who_benefits: WhoBenefitsConfig = Field(default_factory=WhoBenefitsConfig)
    #: left out of the dumped config (summary.json, MLflow params) while it has the default values, so a config
    #: without a ``figures:`` block is recorded as before the block existed
    figures: FiguresConfig = Field(default_factory=FiguresConfig, exclude_if=lambda block: block == FiguresConfig())
    seed: int = Field(0, ge=0)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return models

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

    def explain_settings(self, name: str) -> ExplainConfig:
        """The SHAP settings of one model: its own ``explain`` block, else the config's."""
        own = self.model(name).explain
        return own if own is not None else self.explain

    def group_settings(self):
        """`GroupSettings` (used by ``validate.groups``) for the fold jobs, or None when switched off."""
        if not self.who_benefits.enabled:
            return None
        block = self.who_benefits
        return GroupSettings(n_groups=block.n_groups, harm_threshold=block.harm_threshold,
                             rule_depth=block.rule_depth, min_leaf=block.min_leaf)

    @property
    def tracking_experiment(self) -> str:
        return self.tracking.experiment or self.experiment


def _loc_to_key(loc: tuple[Any, ...], raw: Any) -> str:
    """Turn pydantic's location into a dotted key, naming list items by their model name where there is one."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and item < len(node):
            node = node[item]
            name = node.get("name") if isinstance(node, dict) else None
            parts.append(str(name) if name else str(item))
            continue
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(p for p in parts if not p.startswith("function-") and p not in ("literal['all']",
                                                                                     "list[str]"))


def _one_line(error: ValidationError, raw: Any, source: str | None) -> ConfigError:
    first = error.errors()[0]
    key = _loc_to_key(tuple(first["loc"]), raw) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return ConfigError(f"{key}: {message}{more}", file=source)


def parse_config(raw: Any, *, source: str | None = None) -> ExperimentConfig:
    """Validate a config mapping; raise a one-line `ConfigError` naming the first bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("an experiment config must be a YAML mapping of keys to values", file=source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_line(exc, raw, source) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment config; relative data paths are resolved against the config's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", file=str(path))
    raw = parse_yaml(path.read_text(encoding="utf-8"), source=str(path), error=ConfigError,
                     message="not valid YAML")
    config = parse_config(raw, source=str(path))
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    data = config.data
    updates = {}
    for key in ("path", "spec"):
        value = getattr(data, key)
        if value is not None and not Path(value).is_absolute() and not Path(value).exists():
            updates[key] = str(base / value)
    if not updates:
        return config
    return config.model_copy(update={"data": data.model_copy(update=updates)})


def flatten_config(config: ExperimentConfig) -> dict[str, str]:
    """The config as flat ``a.b.c -> value`` strings (models keyed by name), e.g. for MLflow params."""
    dumped = config.model_dump(mode="json")
    dumped["models"] = {m["name"]: {k: v for k, v in m.items() if k != "name"} for m in dumped["models"]}
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            if isinstance(node, float) and not math.isfinite(node):
                node = str(node)
            flat[prefix] = "" if node is None else str(node)

    walk("", dumped)
    return flat
