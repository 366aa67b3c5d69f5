"""Where a model card's numbers come from: a run's summary.json and plots, from its folder or its MLflow artifacts.

A card never recomputes a metric: it reads the run's own record. The plots are read into memory here (and any
temporary download removed) so the card can embed them without depending on a folder that may vanish.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbi_predict.errors import ModelLookupError

PLOT_SUFFIXES = (".png", ".svg")  # the formats a card or a report can embed (PDFs are linked)
#: what a card says of an item the run did not record (never left out silently); the card, its renderers and its
#: TRIPOD checklist read it from here
NOT_RECORDED = "not recorded in this run"


@dataclass(frozen=True)
class LoadedRun:
    summary: dict[str, Any]
    source: str                                   # the folder or "mlflow run <id>" the summary came from
    plots: dict[str, bytes] = field(default_factory=dict)   # "plots/<file>.png" -> bytes


def _read_plots(folder: Path) -> dict[str, bytes]:
    plots_dir = folder / "plots"
    if not plots_dir.is_dir():
        return {}
    # a run folder keeps its plots flat; MLflow keeps them in plots/<model>/ (file names are unique either way)
    return {f"plots/{path.name}": path.read_bytes() for path in sorted(plots_dir.rglob("*"), key=lambda p: p.name)
            if path.suffix.lower() in PLOT_SUFFIXES and path.is_file()}


def _read_summary(path: Path, source: str) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLookupError(f"{source}: summary.json is unreadable ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict) or not summary["models"]:
        raise ModelLookupError(f"{source}: summary.json records no models")
    return summary


def load_summary(run: str | Path, *, tracking_uri: str | None = None, with_plots: bool = False) -> LoadedRun:
    """A run folder (holding summary.json) or an MLflow run id -> its summary (and, if asked, its plots)."""
    path = Path(str(run))
    if path.is_dir():
        if not (path / "summary.json").is_file():
            raise ModelLookupError(f"{path} is not a run folder: it has no summary.json")
        return LoadedRun(_read_summary(path / "summary.json", str(path)), str(path),
                         _read_plots(path) if with_plots else {})
    return _load_from_mlflow(str(run), tracking_uri=tracking_uri, with_plots=with_plots)


def _load_from_mlflow(run_id: str, *, tracking_uri: str | None, with_plots: bool) -> LoadedRun:
    import mlflow
    from mlflow.exceptions import MlflowException

    store = tracking_uri or mlflow.get_tracking_uri()
    database = Path(store.removeprefix("sqlite:///")) if store.startswith("sqlite:///") else None
    if database is not None and not database.is_file():
        # reading must not create an empty tracking database as a side effect
        raise ModelLookupError(f"run {run_id} is neither a run folder nor a run in the tracking store {store} "
                               "(no such database)")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ModelLookupError(f"run {run_id} is neither a run folder nor a run in the tracking store {store}") \
            from None
    scratch = Path(tempfile.mkdtemp(prefix="mbi-card-"))
    try:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="summary.json",
                                                        dst_path=str(scratch), tracking_uri=tracking_uri)
        except (MlflowException, OSError):
            raise ModelLookupError(f"run {run_id} has no summary.json artifact (was it made by mbi-predict run?)") \
                from None
        summary = _read_summary(Path(local), f"run {run_id}")
        plots: dict[str, bytes] = {}
        if with_plots:
            try:
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="plots", dst_path=str(scratch),
                                                    tracking_uri=tracking_uri)
                plots = _read_plots(scratch)
            except (MlflowException, OSError):
                plots = {}  # a run without plots still gets a card, which says so
        return LoadedRun(summary, f"MLflow run {run_id}", plots)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def outcome_task(summary: dict[str, Any], model: str | None = None) -> str:
    """continuous | binary: recorded by the run, else read off the metric names (rmse only exists for continuous)."""
    models = [summary["models"][model]] if model else list(summary["models"].values())
    for recorded in [summary.get("outcome_type")] + [entry.get("outcome_type") for entry in models]:
        if recorded in ("continuous", "binary"):
            return recorded
    for entry in models:
        pooled = entry.get("pooled") or {}
        if "rmse" in pooled or "r2" in pooled:
            return "continuous"
        if "brier" in pooled or "c_statistic" in pooled:
            return "binary"
    return "unknown"


def primary_metric(summary: dict[str, Any]) -> tuple[str, bool]:
    """The metric models are ranked by, and whether lower is better.

    The run's own choice (``validation.primary_metric``) wins; otherwise the package's ``PRIMARY_METRIC``:
    RMSE for a continuous outcome and the Brier score for a binary one (a proper score that rewards calibration as
    well as discrimination; the c-statistic alone would prefer a badly calibrated model that ranks well).
    """
    from mbi_predict.validate.metrics import LOWER_IS_BETTER, PRIMARY_METRIC

    recorded = (summary.get("validation") or {}).get("primary_metric")
    metric = recorded or PRIMARY_METRIC.get(outcome_task(summary), "rmse")
    return metric, LOWER_IS_BETTER.get(metric, True)


def reference_models(summary: dict[str, Any]) -> set[str]:
    """The run's reference comparators: the model the others are compared with, and any ``reference`` estimator
    (the outcome on its own baseline: a yardstick, not a model to deploy)."""
    named = (summary.get("comparison_to_reference") or {}).get("reference_model")
    return {name for name, entry in summary["models"].items()
            if name == named or entry.get("estimator") == "reference"}


def select_model(summary: dict[str, Any], name: str | None = None) -> str:
    """The named model (checked to exist), or the best prognostic model by its pooled primary metric that is not
    the reference comparator (the reference itself only when it is the run's only prognostic model)."""
    models = summary["models"]
    if name is not None:
        if name not in models:
            raise ModelLookupError(f"the run has no model {name!r} (it has {', '.join(models)})")
        return name
    metric, lower = primary_metric(summary)
    references = reference_models(summary)
    scored = []
    for model_name, entry in models.items():
        if entry.get("task", "prognostic") != "prognostic":
            continue
        estimate = ((entry.get("pooled") or {}).get(metric) or {}).get("estimate")
        if isinstance(estimate, (int, float)) and math.isfinite(estimate):
            scored.append((model_name in references, estimate if lower else -estimate, model_name))
    if not scored:
        raise ModelLookupError(f"the run has no prognostic model with a pooled {metric}; name a model "
                               f"(it has {', '.join(models)})")
    return min(scored)[2]


# ------------------------------------------------------------------------------------- who benefits / verdict

NOT_RUN = "not run"
METHOD_LABELS = {"shap": "SHAP", "blp": "BLP", "interactions": "interactions"}


def _number(value: Any) -> float | None:
    """A finite float, else None (NaN and missing values in summary.json both mean 'no number')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _excludes_zero(row: dict[str, Any]) -> bool | None:
    low, high = _number(row.get("ci_low")), _number(row.get("ci_high"))
    if low is None or high is None:
        return None
    return bool(low > 0 or high < 0)


def _any_flag(flags: list[bool | None]) -> bool | None:
    if any(flag is True for flag in flags):
        return True
    return False if flags and all(flag is False for flag in flags) else None


def _shap_rows(entry: dict[str, Any]) -> tuple[dict[str, dict], dict[str, Any]]:
    shap = entry.get("shap") or {}
    ranking = shap.get("ranking") or []
    if not ranking:
        reason = shap.get("skipped") or ("the model was not explained" if not shap else "no ranking recorded")
        return {}, {"status": NOT_RUN, "note": reason}
    null = shap.get("null") or {}
    rows = {}
    for rank, record in enumerate(ranking, start=1):
        status = record.get("test_status") or record.get("null_status") or null.get("test_status") or \
            ("no_null" if not null else "tested")
        beats = record.get("beats_null")
        flag = bool(beats) if beats is not None and status == "tested" else None
        rows[str(record["feature"])] = {
            "rank": rank, "importance": _number(record.get("importance")), "ci_low": _number(record.get("ci_low")),
            "ci_high": _number(record.get("ci_high")), "null_p": _number(record.get("null_p")),
            "beats_null": flag, "test_status": "tested" if flag is not None else
            ("no_null" if status == "no_null" else "not_tested"),
            "reason": record.get("reason") or null.get("reason")}
    tested = any(r["test_status"] == "tested" for r in rows.values())
    note = shap.get("rule") or shap.get("null_note") or ("permutation null not run" if not null else None)
    return rows, {"status": "run", "tested": tested, "note": note}


def _blp_rows(summary: dict[str, Any], entry: dict[str, Any]) -> tuple[dict[str, list], dict[str, Any]]:
    candidates = [("model", entry.get("best_linear_projection")), ("run", summary.get("best_linear_projection"))]
    for source, block in candidates:
        if isinstance(block, dict) and block.get("terms"):
            rows: dict[str, list] = {}
            intercept = None
            for term in block["terms"]:
                cell = {"term": str(term.get("term")), **{k: _number(term.get(k)) for k in
                                                          ("estimate", "se", "ci_low", "ci_high", "pvalue")}}
                if cell["term"] == "intercept":
                    intercept = cell
                    continue
                rows.setdefault(cell["term"].split("=", 1)[0], []).append(cell)
            return rows, {"status": "run", "source": source, "intercept": intercept, "n": block.get("n"),
                          "n_clusters": block.get("n_clusters"), "df": block.get("df"),
                          "method": block.get("method"), "note": block.get("note")}
    note = next((b.get("note") for _, b in candidates if isinstance(b, dict) and b.get("note")), None)
    return {}, {"status": NOT_RUN, "note": note or "no best linear projection in this run"}


def _interaction_rows(summary: dict[str, Any]) -> tuple[dict[str, list], dict[str, Any]]:
    block = summary.get("classical_interactions")
    records = (block or {}).get("records") or []
    if not records:
        return {}, {"status": NOT_RUN, "note": (block or {}).get("note") or "no within-trial interactions in this run"}
    rows: dict[str, list] = {}
    for record in records:
        term = str(record.get("modifier"))
        variable = str(record.get("variable") or term.split("[", 1)[0])
        rows.setdefault(variable, []).append({"term": term, **{k: _number(record.get(k)) for k in
                                                               ("estimate", "ci_low", "ci_high", "pvalue")},
                                              "k": record.get("k")})
    return rows, {"status": "run", "method": block.get("method"), "note": block.get("note")}


def who_benefits(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """Three answers to "who benefits" per covariate, side by side, from the run's own records (aggregates only):
    the effect model's SHAP ranking with its permutation-null test, the best linear projection of the effect
    (`mbi_predict.validate.projection`) and the classical within-trial arm x covariate interactions.

    A covariate is *flagged* by SHAP when it beats the permutation null (None when not tested), by the BLP and the
    interactions when a 95%-type interval of a slope excludes 0. Missing blocks are marked "not run".
    """
    from mbi_predict.report.card_text import agreement_sentence

    entry = summary["models"][name]
    shap, shap_meta = _shap_rows(entry)
    blp, blp_meta = _blp_rows(summary, entry)
    inter, inter_meta = _interaction_rows(summary)
    covariates = list(dict.fromkeys([*shap, *blp, *inter]))
    rows = []
    for covariate in covariates:
        flags = {"shap": shap[covariate]["beats_null"] if covariate in shap else None,
                 "blp": _any_flag([_excludes_zero(c) for c in blp.get(covariate, [])]),
                 "interactions": _any_flag([_excludes_zero(c) for c in inter.get(covariate, [])])}
        rows.append({"covariate": covariate, "shap": shap.get(covariate), "blp": blp.get(covariate),
                     "interactions": inter.get(covariate), "flags": flags})
    methods = {"shap": shap_meta, "blp": blp_meta, "interactions": inter_meta}
    untested = ("shap",) if shap_meta["status"] == "run" and not shap_meta["tested"] else ()
    ran = [key for key, meta in methods.items() if meta["status"] == "run" and key not in untested]
    return {"rows": rows, "methods": methods, "agreement": agreement_sentence(rows, ran, untested),
            "note": "flags: SHAP = beats its permutation null (family-wise adjusted when the run says so); BLP and "
                    "interactions = the slope's interval excludes 0 (per covariate, not adjusted for "
                    "multiplicity). The three answer different questions: SHAP how much the model's predictions "
                    "lean on a covariate, the BLP the linear trend of the effect in it (others held fixed), the "
                    "interactions the within-trial trend pooled across trials."}


def run_heterogeneity(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The run's one heterogeneity verdict (``summary["heterogeneity"]``), or None for runs made before it."""
    block = summary.get("heterogeneity")
    if not isinstance(block, dict) or "verdict" not in block:
        return None
    models = {str(name): {key: (value if isinstance(value, (bool, str)) or value is None else _number(value))
                          for key, value in (model or {}).items()
                          if key in ("verdict", "p_value", "p_rate", "p_slope", "p_holm", "beats_constant",
                                     "calibrated")}
              for name, model in (block.get("models") or {}).items()}
    return {"verdict": str(block["verdict"]), "method": block.get("method"), "alpha": _number(block.get("alpha")),
            "rule": block.get("rule"), "primary_model": block.get("primary_model"), "models": models,
            "reason": block.get("reason")}


def model_heterogeneity(entry: dict[str, Any]) -> dict[str, Any] | None:
    """One effect model's own verdict and its tests, without the bulky inputs (per-trial interaction rows)."""
    block = entry.get("heterogeneity")
    if not isinstance(block, dict):
        return None
    keys = ("name", "metric", "estimate", "se", "ci_low", "ci_high", "p_value", "naive_p", "alpha", "passed",
            "decisive", "note")
    tests = [{key: (test.get(key) if isinstance(test.get(key), (bool, str)) or test.get(key) is None
                    else _number(test.get(key))) for key in keys} for test in block.get("tests") or []]
    rule = block.get("rule") or {}
    return {"verdict": block.get("verdict"), "reason": block.get("reason"), "method": block.get("method"),
            "p_value": _number(block.get("p_value")), "beats_constant": block.get("beats_constant"),
            "naive_verdict": block.get("naive_verdict"),
            "rule": {key: rule[key] for key in ("alpha", "rate_metric", "slope_metric", "interaction_role",
                                                 "min_trials", "require_beats_constant") if key in rule},
            "tests": tests}
