"""Model cards for mbi_predict runs: `build_card` (run -> dict) and `write_card` (dict -> md / html / json).

The card follows Mitchell et al. 2019 ("Model cards for model reporting": details, intended use, factors, metrics,
evaluation and training data, ethical considerations, caveats) and adds what TRIPOD+AI 2024 (Collins et al., BMJ
385:e078378) and TRIPOD-Cluster 2023 (Debray et al., BMJ 380:e071018) ask of a prediction model validated across
clusters: per-trial performance, pooled performance with a confidence and a prediction interval, between-trial
heterogeneity (tau²), subgroup performance, and a checklist pointing at where each item is met.

Rules the code keeps:
* Every number is read from the run's summary.json; nothing is re-estimated. Renderers only format.
* Aggregates only: the card holds trial-level and subgroup-level numbers, never a participant's row.
* What the run did not record is said to be "not recorded in this run", never silently left out.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import mbi_predict
from mbi_predict.errors import ConfigError
from mbi_predict.report.card_groups import groups_section
from mbi_predict.report.card_source import (NOT_RECORDED, LoadedRun, load_summary, model_heterogeneity,
                                            outcome_task, primary_metric, run_heterogeneity, select_model,
                                            who_benefits)
from mbi_predict.validate.subgroup_performance import subgroup_metrics  # noqa: F401  (re-exported)
from mbi_predict.report.card_text import (caveats, ethical_considerations, intended_use, metric_definitions,
                                          model_type_description)

CARD_SCHEMA_VERSION = "1.0"
FORMATS = ("md", "html", "json")


def _public_source(source: str) -> str:
    """Where the card's numbers came from, without the local machine's absolute path (a card is shared)."""
    text = str(source)
    if text.startswith("mlflow run") or "/" not in text and "\\" not in text:
        return text
    return f"run folder {Path(text).name}"


def build_card(run: str | Path, *, model: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """The model card of ``model`` (default: the best prognostic model by the pooled primary metric) of ``run``.

    ``run`` is a run folder holding summary.json (and plots/), or an MLflow run id (summary.json and plots/ are
    then read from the run's artifacts in the tracking store ``tracking_uri``, default the current one).
    """
    loaded = load_summary(run, tracking_uri=tracking_uri, with_plots=True)
    return card_from_summary(loaded, model=model)


def card_from_summary(loaded: LoadedRun, *, model: str | None = None) -> dict[str, Any]:
    summary = loaded.summary
    name = select_model(summary, model)
    entry = summary["models"][name]
    metric, lower_is_better = primary_metric(summary)
    card: dict[str, Any] = {
        "schema_version": CARD_SCHEMA_VERSION,
        "title": f"Model card: {name} predicting {summary.get('outcome', 'the outcome')}",
        "model_details": _model_details(summary, name, entry, loaded, model is None, metric, lower_is_better),
        "intended_use": intended_use(entry.get("task", "prognostic"), summary.get("outcome")),
        "training_data": _training_data(summary),
        "evaluation": _evaluation(summary, entry, metric),
        "figures": _figures(loaded.plots, name, list(summary["models"])),
        "subgroups": _subgroups(entry),
        "explanations": _explanations(summary, name, entry),
        "who_benefits_groups": groups_section(summary, entry),
    }
    card["ethical_considerations"] = ethical_considerations(card)
    card["caveats_and_recommendations"] = caveats(card)
    from mbi_predict.report.card_tripod import tripod_checklist

    card["tripod_ai"] = tripod_checklist(card)
    return card


def _model_details(summary, name, entry, loaded, chosen_automatically, metric, lower_is_better) -> dict[str, Any]:
    kind = entry.get("task", "prognostic")
    data = summary.get("data") or {}
    selection = (f"chosen automatically: the best prognostic model of the run by pooled {metric} "
                 f"({'lower' if lower_is_better else 'higher'} is better), the reference comparator left out"
                 if chosen_automatically else "named by the user")
    return {
        "name": name,
        "kind": kind,
        "estimator": entry.get("estimator") or NOT_RECORDED,
        "description": model_type_description(entry.get("estimator"), kind),
        "outcome": summary.get("outcome") or NOT_RECORDED,
        "outcome_task": outcome_task(summary, name),
        "features": list(entry.get("features") or summary.get("covariates") or []),
        "hyperparameters": entry.get("best_params") or entry.get("params") or {},
        "training_data_sha256": data.get("sha256") or NOT_RECORDED,
        "package": "mbi_predict",
        "package_version_run": summary.get("package_version") or NOT_RECORDED,
        "package_version_card": mbi_predict.__version__,
        "run_date": summary.get("finished_at") or summary.get("created") or summary.get("date") or NOT_RECORDED,
        "card_date": dt.date.today().isoformat(),
        "experiment": summary.get("experiment") or NOT_RECORDED,
        "mlflow_run_id": summary.get("mlflow_run_id") or NOT_RECORDED,
        "final_model_uri": entry.get("final_model_uri") or NOT_RECORDED,
        "source": _public_source(loaded.source),
        "selection": selection,
        "primary_metric": metric,
        "models_in_run": list(summary["models"]),
    }


def _trial_rows(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("trial_id", "n", "n_mbi", "n_control", "control_types", "country", "setting", "mbi_type", "delivery")
    return [{key: trial.get(key) for key in keys if key in trial} for trial in trials]


def _distinct(trials: list[dict[str, Any]], key: str) -> list[str] | None:
    values: set[str] = set()
    for trial in trials:
        value = trial.get(key)
        if value is None:
            continue
        values.update(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])
    return sorted(values) or None


def _training_data(summary: dict[str, Any]) -> dict[str, Any]:
    data = summary.get("data") or {}
    trials = data.get("trials") or []
    return {
        "sha256": data.get("sha256") or NOT_RECORDED,
        "n_participants": data.get("n_participants"),
        "n_trials": data.get("n_trials"),
        "trials": _trial_rows(trials) if trials else None,
        "countries": _distinct(trials, "country"),
        "settings": _distinct(trials, "setting"),
        "control_types": _distinct(trials, "control_types") or _distinct(trials, "control_type")
        or ([summary["control_type"]] if summary.get("control_type") else None),
        "instruments": data.get("instruments"),
        "missingness": data.get("missingness"),
        "standardisation": data.get("standardisation"),
        "excluded_trials": data.get("excluded_trials") or (summary.get("validation") or {}).get("skipped") or [],
    }


def _evaluation(summary: dict[str, Any], entry: dict[str, Any], metric: str) -> dict[str, Any]:
    pooled = [{"metric": name, **{key: values.get(key) for key in
                                  ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "tau2", "i2", "k")
                                  if key in values}}
              for name, values in (entry.get("pooled") or {}).items() if isinstance(values, dict)]
    # scalars only: the per-trial variances are pooling inputs, not something a reader needs
    per_trial = [{key: value for key, value in row.items() if not isinstance(value, (dict, list))}
                 for row in entry.get("per_trial") or []]
    validation = dict(summary.get("validation") or {})
    return {
        "validation": validation,
        "scheme": validation.get("scheme") or NOT_RECORDED,
        "primary_metric": metric,
        "per_trial": per_trial,
        "pooled": pooled,
        "metric_definitions": metric_definitions([row["metric"] for row in pooled]),
        "timing": entry.get("timing") or {},
    }


def _figures(plots: dict[str, bytes], name: str, all_models: list[str]) -> list[dict[str, Any]]:
    """The run's plots for this model (file name contains it), else the run-wide ones (no model's name in them),
    each with a caption written as sentences."""
    from mbi_predict.report.captions import caption
    from mbi_predict.figstyle import media_type

    def mentions(path: str, model: str) -> bool:  # plots are named like forest_<model>_<metric>.png
        return f"_{model}_" in f"_{Path(path).stem}_"

    def owner(path: str) -> str | None:
        """The model a plot belongs to: the longest name it mentions (path_risk_effect's plots also mention
        path_risk)."""
        named = [model for model in all_models if mentions(path, model)]
        return max(named, key=len) if named else None

    own = [path for path in plots if owner(path) == name]
    shared = [path for path in plots if owner(path) is None]
    return [{"path": path, "caption": caption(path, all_models), "media_type": media_type(path),
             "data_base64": base64.b64encode(plots[path]).decode("ascii")} for path in own + shared]


def _subgroups(entry: dict[str, Any]) -> dict[str, Any]:
    rows = entry.get("subgroups")
    if not rows:
        return {"rows": None, "note": f"subgroup performance: {NOT_RECORDED}"}
    return {"rows": [dict(row) for row in rows],
            "note": "computed on the pooled held-out predictions: every participant was predicted by the model fitted "
                    "without their trial; groups below the minimum size show n only"}


def _explanations(summary: dict[str, Any], name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """SHAP ranking; for an effect model also the three answers to "who benefits" side by side, the run's one
    heterogeneity verdict (None for runs made before it) and the model's own verdict with its tests."""
    shap = (entry.get("shap") or {}).get("ranking")
    effect = entry.get("task") == "effect"
    return {"shap_ranking": [dict(row) for row in shap] if shap else None,
            "heterogeneity": model_heterogeneity(entry),
            "run_heterogeneity": run_heterogeneity(summary) if effect else None,
            "who_benefits": who_benefits(summary, name) if effect else None}


# ------------------------------------------------------------------------------------------------------ write

def validate_card(card: dict[str, Any]) -> None:
    """Check the card against the shipped JSON schema (raises ConfigError with the first violation's path)."""
    import json
    from importlib.resources import files

    import jsonschema

    from mbi_predict.io import json_safe

    schema = json.loads(files("mbi_predict.resources").joinpath("model_card.schema.json").read_text("utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(json_safe(card)), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(map(str, errors[0].absolute_path)) or "(top level)"
        raise ConfigError(f"the model card does not follow its schema at {where}: {errors[0].message}")


def write_card(card: dict[str, Any], out_path: str | Path, fmt: str = "md") -> Path:
    """Validate the card and write it atomically as Markdown (figures beside it), self-contained HTML, or JSON."""
    from mbi_predict.io import to_json, write_text_atomic
    from mbi_predict.report.card_html import to_html
    from mbi_predict.report.card_render import to_markdown, write_markdown_figures

    if fmt not in FORMATS:
        raise ConfigError(f"unknown card format {fmt!r}; use one of {', '.join(FORMATS)}")
    validate_card(card)
    out_path = Path(out_path)
    if fmt == "json":
        return write_text_atomic(out_path, to_json(card, indent=2) + "\n")
    if fmt == "html":
        return write_text_atomic(out_path, to_html(card))
    figure_paths = write_markdown_figures(card, out_path)
    return write_text_atomic(out_path, to_markdown(card, figure_paths))
