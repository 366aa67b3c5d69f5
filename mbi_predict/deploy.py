"""The final model as an MLflow pyfunc, and predictions for new participants from a file.

Why a pyfunc wrapper rather than logging the sklearn pipeline with ``mlflow.sklearn``:

* one artefact serves both kinds of model: a prognostic pipeline (``prediction``: the predicted outcome, or the
  predicted probability for a 0/1 outcome) and a CATE model with its fold-style preprocessing (``cate``,
  ``cate_low``, ``cate_high``: MBI minus control in outcome units, so for an outcome where higher is worse a
  negative CATE is a benefit);
* every prediction carries ``out_of_distribution`` and ``ood_reasons``, computed against the training envelope
  (numeric covariate ranges and categorical levels seen in the training trials). A model validated on
  university students aged 18-30 says so when asked about a 70-year-old, both through ``predict_file`` and when
  served with ``mlflow models serve``.

The signature and input example are built from the envelope (midpoints, first seen level), never from a real
participant's row: an MLflow model folder is often shared more widely than the IPD it was trained on.

Numeric inputs are declared as ``double``: MLflow refuses to convert int64 columns to double ("can not safely
convert"), so ``predict_file`` casts them, and a client of a served model should send numbers as floats.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any, Literal

# MBIPyfuncModel.predict has no type hints on purpose (see there); MLflow warns about that when the class is defined,
# i.e. on every import of this module, inside its own `catch_warnings(); simplefilter("once")`, which outranks any
# process-wide filter. The class therefore opts out of the check it would only warn from
# (`_skip_type_hint_validation`); the filter below covers the same nudge where MLflow raises it outside that context.
TYPE_HINT_WARNING = r".*Add type hints to the `predict` method"
warnings.filterwarnings("ignore", message=TYPE_HINT_WARNING, category=UserWarning)

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mbi_predict.errors import DataError, MBIError  # noqa: E402

Kind = Literal["prognostic", "effect"]
PROGNOSTIC_OUTPUTS = ("prediction",)
EFFECT_OUTPUTS = ("cate", "cate_low", "cate_high")
OOD_OUTPUTS = ("out_of_distribution", "ood_reasons")
ID_COLUMN = "participant_id"
_NUMERIC_TYPES = {"double", "float", "long", "integer"}
#: The envelope's numeric bounds are rounded outward to a step of about 1/ENVELOPE_GRID of the observed range.
ENVELOPE_GRID = 20


class ModelLookupError(MBIError):
    """A run, run folder or model that was asked for does not exist (or has no such model)."""


# -------------------------------------------------------------------------------------------- the envelope

def envelope_from_training(X_frame: pd.DataFrame, *, grid: int = ENVELOPE_GRID) -> dict[str, Any]:
    """Numeric bounds and categorical levels seen in the training rows: where the model has evidence.

    Aggregates only (no row is kept). The numeric bounds are NOT the extreme participants' values: they are rounded
    outward (`rounded_bounds`) to a "nice" step of at least 1/``grid`` of the observed range, strictly beyond the
    observed min and max, so the model folder (often shared more widely than the IPD) stores no participant's exact
    value. Missing values are ignored: they are imputed by the model, so missingness is not by itself out of
    distribution. A numeric column never observed gets ``min = max = None``.
    """
    numeric: dict[str, dict[str, float | None]] = {}
    categorical: dict[str, list[str]] = {}
    for column in X_frame.columns:
        values = X_frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            observed = pd.to_numeric(values, errors="coerce").dropna()
            low, high = rounded_bounds(observed.to_numpy(dtype=float), grid) if len(observed) else (None, None)
            numeric[str(column)] = {"min": low, "max": high}
        else:
            categorical[str(column)] = sorted({str(v) for v in values.dropna()})
    return {"columns": [str(c) for c in X_frame.columns], "numeric": numeric, "categorical": categorical}


def rounded_bounds(values: np.ndarray, grid: int = ENVELOPE_GRID) -> tuple[float, float]:
    """(low, high) on a grid of step 1, 2 or 5 x 10^k (the smallest such step >= range / grid), strictly outside
    [min, max]: low < every value < high, so neither bound is any participant's value."""
    if grid < 1:
        raise ValueError("grid must be a positive number of steps")
    low, high = float(np.min(values)), float(np.max(values))
    span = high - low if high > low else max(abs(low), 1.0)
    target = span / grid
    exponent = math.floor(math.log10(target))
    step = next(m * 10.0 ** exponent for m in (1, 2, 5, 10) if m * 10.0 ** exponent >= target * (1 - 1e-12))
    digits = max(0, -exponent + 1)
    k_low, k_high = math.floor(low / step), math.ceil(high / step)
    while round(k_low * step, digits) >= low:
        k_low -= 1
    while round(k_high * step, digits) <= high:
        k_high += 1
    return round(k_low * step, digits), round(k_high * step, digits)


def synthetic_example(envelope: dict[str, Any], features: list[str]) -> pd.DataFrame:
    """One made-up row inside the envelope: numeric midpoints, the first level seen of each categorical."""
    row: dict[str, Any] = {}
    for column in features:
        if column in envelope["numeric"]:
            bounds = envelope["numeric"][column]
            low, high = bounds["min"], bounds["max"]
            row[column] = 0.0 if low is None else float((low + high) / 2)
        elif column in envelope["categorical"]:
            levels = envelope["categorical"][column]
            row[column] = levels[0] if levels else "unknown"
        else:
            raise ValueError(f"feature {column!r} is not in the training envelope")
    frame = pd.DataFrame([row], columns=list(features))
    for column in features:
        frame[column] = frame[column].astype(float if column in envelope["numeric"] else object)
    return frame


def _format_number(value: float) -> str:
    return f"{value:.4g}"


def out_of_distribution(frame: pd.DataFrame, envelope: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Flag rows with a value outside the training envelope; the reasons name the column, value and range."""
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    for column, bounds in envelope["numeric"].items():
        if column not in frame.columns or bounds["min"] is None:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        outside = np.isfinite(values) & ((values < bounds["min"]) | (values > bounds["max"]))
        for i in np.flatnonzero(outside):
            reasons[i].append(f"{column} {_format_number(values[i])} outside "
                              f"{_format_number(bounds['min'])}-{_format_number(bounds['max'])} seen in training")
    for column, levels in envelope["categorical"].items():
        if column not in frame.columns:
            continue
        seen = set(levels)
        for i, value in enumerate(frame[column].tolist()):
            if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
                continue
            if str(value) not in seen:
                reasons[i].append(f"{column} {str(value)!r} unseen in training")
    flags = np.array([bool(r) for r in reasons], dtype=bool)
    return flags, ["; ".join(r) for r in reasons]


# ------------------------------------------------------------------------------------------- the pyfunc model

def _used_columns(transformer: Any) -> set[str]:
    """The input columns a fitted ColumnTransformer actually reads (dropped ones excluded)."""
    used: set[str] = set()
    for _, step, columns in getattr(transformer, "transformers_", []):
        if step == "drop" or isinstance(columns, slice):
            continue
        names = np.asarray(getattr(transformer, "feature_names_in_", []))
        for column in np.atleast_1d(columns):
            used.add(str(names[column]) if isinstance(column, (int, np.integer)) and names.size else str(column))
    return used


class MBIPyfuncModel(mlflow.pyfunc.PythonModel):
    """A fitted prognostic pipeline or CATE model, plus its training envelope, as one pyfunc model."""

    # no type-hint validation: predict takes no type hints (see there), and MLflow's check would only warn about it,
    # twice on stderr before any command's output; without hints MLflow's wrapper is a pass-through anyway
    _skip_type_hint_validation = True

    def __init__(self, *, kind: Kind, fitted: Any, features: list[str], task: str, envelope: dict[str, Any],
                 preprocess: Any = None, alpha: float = 0.05) -> None:
        if kind not in ("prognostic", "effect"):
            raise ValueError(f"kind must be 'prognostic' or 'effect', not {kind!r}")
        if kind == "effect" and preprocess is None:
            raise ValueError("an effect model needs the fitted preprocessing it was trained behind (preprocess=)")
        self.kind, self.fitted, self.features, self.task = kind, fitted, list(features), task
        self.envelope, self.preprocess, self.alpha = envelope, preprocess, float(alpha)
        transformer = preprocess if kind == "effect" else fitted.named_steps.get("features")
        self._fitted_columns = [str(c) for c in getattr(transformer, "feature_names_in_", features)]
        unknown = sorted(_used_columns(transformer) - set(self.features)) if transformer is not None else []
        if unknown:
            raise ValueError(f"features misses columns the model reads: {', '.join(unknown)}")

    @property
    def outputs(self) -> tuple[str, ...]:
        return (PROGNOSTIC_OUTPUTS if self.kind == "prognostic" else EFFECT_OUTPUTS) + OOD_OUTPUTS

    def _model_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns the fitted transformer was fitted on, numeric as float and categoricals as object/NaN.

        Columns it saw but does not read (e.g. the arm behind a control-only risk model) are filled with NaN.
        """
        out = pd.DataFrame(index=range(len(frame)))
        for column in self._fitted_columns:
            if column not in frame.columns:
                out[column] = np.nan
            elif column in self.envelope["numeric"]:
                out[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            else:
                values = frame[column].astype(object).to_numpy()
                out[column] = pd.Series(values, dtype=object).where(pd.notna(values), np.nan)
        return out

    # no type hints on predict: MLflow 3 would turn them into a second, conflicting input schema
    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        X = self._model_frame(frame)
        if self.kind == "prognostic":
            from mbi_predict.models.prognostic import predict_outcome

            result = pd.DataFrame({"prediction": predict_outcome(self.fitted, X, self.task)})
        else:
            result = self._predict_effect(X)
        flags, reasons = out_of_distribution(frame, self.envelope)
        result["out_of_distribution"] = flags
        result["ood_reasons"] = pd.Series(reasons, dtype=object)
        return result

    def _predict_effect(self, X: pd.DataFrame) -> pd.DataFrame:
        from mbi_predict.errors import ConfigError

        design = self.preprocess.transform(X)
        cate = np.asarray(self.fitted.effect(design), dtype=float).reshape(-1)
        try:
            low, high = self.fitted.effect_interval(design, alpha=self.alpha)
            low, high = np.asarray(low, float).reshape(-1), np.asarray(high, float).reshape(-1)
        except ConfigError:
            # estimators without a defensible pointwise interval refuse; NaN says "no interval", not "zero width"
            low = high = np.full(cate.shape, np.nan)
        return pd.DataFrame({"cate": cate, "cate_low": low, "cate_high": high})


#: the distributions a logged model needs at load time, beside the package code it ships with (``code_paths``):
#: unpickling the model and importing ``mbi_predict`` (config, schema, models) need exactly these
_RUNTIME_DISTRIBUTIONS = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn", "scipy", "pydantic", "pyyaml")


def _requirements(python_model: Any = None) -> list[str]:
    """pip requirements pinned to what is installed here (``importlib.metadata``), so a fresh environment built
    from the model's requirements.txt rebuilds the same model.

    ``mbi-predict`` itself is NOT pinned (it is on no package index): its code ships with the model through
    ``code_paths``. xgboost is pinned as the distribution actually installed (``xgboost-cpu`` on Linux, else
    ``xgboost``) and, like econml, only when the pickled model refers to it.
    """
    from importlib.metadata import PackageNotFoundError, version

    def pinned(*names: str) -> str | None:
        for name in names:
            try:
                return f"{name}=={version(name)}"
            except PackageNotFoundError:
                continue
        return None

    needs: set[str] = set()
    if python_model is not None:
        import cloudpickle

        blob = cloudpickle.dumps(python_model)
        needs = {module for module in ("xgboost", "econml") if module.encode() in blob}
    pins = [pinned(name) for name in _RUNTIME_DISTRIBUTIONS]
    if "xgboost" in needs:
        pins.append(pinned("xgboost-cpu", "xgboost"))
    if "econml" in needs:
        pins.append(pinned("econml"))
    return [pin for pin in pins if pin]


def _package_code(folder: Path) -> Path:
    """A copy of the ``mbi_predict`` package (sources and resources, no caches) under ``folder``, for
    ``code_paths``: the model then loads wherever its requirements are installed, without mbi-predict."""
    import shutil

    import mbi_predict

    target = folder / "mbi_predict"
    shutil.copytree(Path(mbi_predict.__file__).resolve().parent, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*"))
    return target


def log_final_model(fitted: Any, *, kind: Kind, features: list[str], task: str, envelope: dict[str, Any],
                    name: str, preprocess: Any = None, alpha: float = 0.05, tags: dict[str, str] | None = None,
                    params: dict[str, Any] | None = None) -> str:
    """Log the final (all-trials) model inside the active MLflow run; return its model URI.

    ``fitted``: a fitted prognostic Pipeline (kind="prognostic") or a fitted CATE estimator (kind="effect", with
    ``preprocess`` the fitted ColumnTransformer its X came through). ``features``: the input columns a user must
    give (the covariates, plus ``arm`` for prognostic models that use it). ``envelope``: from
    `envelope_from_training` on the training frame. The signature is inferred on a synthetic example.

    The model ships the ``mbi_predict`` package (``code_paths``) and pins the installed versions of its runtime
    dependencies (`_requirements`), so it loads and serves in a fresh environment built from its own
    requirements.txt. ``tags``/``params`` go to the MLflow 3 LoggedModel.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    import mbi_predict

    if mlflow.active_run() is None:
        raise RuntimeError("log_final_model must be called inside an active MLflow run (the experiment's parent run)")
    python_model = MBIPyfuncModel(kind=kind, fitted=fitted, features=features, task=task, envelope=envelope,
                               preprocess=preprocess, alpha=alpha)
    example = synthetic_example(envelope, list(features))
    signature = infer_signature(example, python_model.predict(None, example))
    metadata = {"mbi_predict_version": mbi_predict.__version__, "kind": kind, "task": task,
                "features": list(features), "outputs": list(python_model.outputs)}
    with _quiet_mlflow(), tempfile.TemporaryDirectory(prefix="mbi-code-") as tmp:
        info = mlflow.pyfunc.log_model(name=name, python_model=python_model, signature=signature,
                                       input_example=example, pip_requirements=_requirements(python_model),
                                       code_paths=[str(_package_code(Path(tmp)))], metadata=metadata,
                                       tags={"mbi_predict.model_kind": kind, **(tags or {})},
                                       params={k: v for k, v in (params or {}).items() if v not in (None, "")}
                                       or None)
    return info.model_uri


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow warns on every log_model that a Python object is pickled with CloudPickle (deliberate here: the model
    object is ours and loads with the same package version, shipped with it), nudges about type hints on `predict`
    (deliberately absent, see MBIPyfuncModel.predict) and reports the requirements it validates; per model, that is
    noise in a run's log."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("mlflow.pyfunc", "mlflow.models", "mlflow.utils.requirements_utils",
                                                    "mlflow.utils.environment")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# --------------------------------------------------------------------------------------------- prediction

def resolve_model_uri(model_uri_or_run: str, *, model_name: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """A model URI from: a model URI (``runs:/``, ``models:/``), a local MLflow model folder, a run folder
    (summary.json) or a run id. Without ``model_name`` a run's best prognostic model is used, as the card does."""
    text = str(model_uri_or_run)
    if ":/" in text:
        return text
    path = Path(text)
    if (path / "MLmodel").is_file():
        return str(path.resolve())
    from mbi_predict.report.card_source import load_summary, select_model

    loaded = load_summary(text, tracking_uri=tracking_uri)
    name = select_model(loaded.summary, model_name)
    entry = loaded.summary["models"][name]
    if entry.get("final_model_uri"):
        return str(entry["final_model_uri"])
    run_id = loaded.summary.get("mlflow_run_id")
    if not run_id:
        raise ModelLookupError(f"run {text} records no MLflow run id, so its final model {name!r} cannot be found")
    return f"runs:/{run_id}/{name}"


def load_final_model(model_uri: str, *, tracking_uri: str | None = None):
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ModelLookupError(f"cannot load model {model_uri}: {first}") from None


def read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise DataError("unsupported file type; use .csv or .parquet", file=str(path))
    try:
        if suffix == ".csv":  # ids are text: 007 is not 7
            frame = pd.read_csv(path, dtype={ID_COLUMN: str})
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pandas' EmptyDataError and ParserError are ValueErrors
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(f"cannot read the table: {reason}", file=str(path)) from None
    if frame.empty:
        raise DataError("the table has no rows to predict for", file=str(path))
    return frame


def check_against_signature(frame: pd.DataFrame, schema: Any, *, file: str) -> pd.DataFrame:
    """The model's input columns, in order and with the types its signature declares; one DataError otherwise."""
    expected = {spec.name: str(spec.type.name if hasattr(spec.type, "name") else spec.type)
                for spec in schema.inputs}
    present = [c for c in frame.columns if c != ID_COLUMN]
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in present if c not in expected]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(map(str, extra))}"] if extra else [])
        raise DataError(f"columns do not match the model's signature: {'; '.join(parts)} "
                        f"(the model takes {ID_COLUMN} plus {', '.join(expected)})", file=file)
    out = pd.DataFrame(index=frame.index)
    for column, kind in expected.items():
        values = frame[column]
        if kind in _NUMERIC_TYPES:
            numbers = pd.to_numeric(values, errors="coerce")
            bad = (values.notna() & numbers.isna()) | np.isinf(numbers.to_numpy(dtype=float, na_value=np.nan))
            if bad.any():
                raise DataError(f"expected finite numbers in {int(bad.sum())} row(s) (first at data row "
                                f"{int(np.flatnonzero(bad.to_numpy())[0]) + 1})", file=file, column=column)
            out[column] = numbers.astype(float if kind in ("double", "float") else "Int64")
        elif kind == "string":
            if pd.api.types.is_numeric_dtype(values) and values.notna().any():
                raise DataError("expected text categories, found numbers", file=file, column=column)
            text = values.astype(object)
            out[column] = text.where(text.notna(), None)
        else:
            raise DataError(f"the model's signature declares an unsupported type {kind}", file=file, column=column)
    return out


def predict_file(model_uri_or_run: str, data_path: str | Path, out_path: str | Path, *,
                 model_name: str | None = None, tracking_uri: str | None = None) -> Path:
    """Predict for the participants in ``data_path`` (csv/parquet); write them, keyed by participant_id, to
    ``out_path`` (csv/parquet, atomically) with ``out_of_distribution`` and ``ood_reasons``."""
    from mlflow.exceptions import MlflowException

    from mbi_predict.data.schema import id_text
    from mbi_predict.io import atomic_path

    data_path, out_path = Path(data_path), Path(out_path)
    if out_path.suffix.lower() not in (".csv", ".parquet"):
        raise DataError("unsupported output type; use .csv or .parquet", file=str(out_path))
    frame = read_table(data_path)
    if ID_COLUMN not in frame.columns:
        raise DataError(f"no {ID_COLUMN} column: predictions are keyed by it", file=str(data_path))
    ids = id_text(frame[ID_COLUMN]).astype(str)  # text, also when a parquet file stores them as numbers
    if frame[ID_COLUMN].isna().any():
        raise DataError(f"{ID_COLUMN} is empty in {int(frame[ID_COLUMN].isna().sum())} row(s)", file=str(data_path))
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise DataError(f"{ID_COLUMN} duplicated: {len(duplicated)} repeat(s)", file=str(data_path))
    uri = resolve_model_uri(model_uri_or_run, model_name=model_name, tracking_uri=tracking_uri)
    model = load_final_model(uri, tracking_uri=tracking_uri)
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelLookupError(f"model {uri} has no input signature; it was not logged by log_final_model")
    inputs = check_against_signature(frame, schema, file=str(data_path))
    try:
        predictions = pd.DataFrame(model.predict(inputs)).reset_index(drop=True)
    except MlflowException as exc:
        raise DataError(f"the model refused the input: {' '.join(str(exc).split())[:300]}",
                        file=str(data_path)) from None
    result = pd.concat([pd.DataFrame({ID_COLUMN: ids.to_numpy()}), predictions], axis=1)
    with atomic_path(out_path) as tmp:
        if out_path.suffix.lower() == ".csv":
            result.to_csv(tmp, index=False)
        else:
            result.to_parquet(tmp, index=False)
    return out_path
