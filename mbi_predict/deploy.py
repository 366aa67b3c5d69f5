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
from pathlib import Path
from typing import Any, Literal

import mlflow.pyfunc
import numpy as np
import pandas as pd

from mbi_predict.errors import DataError, MBIError

Kind = Literal["prognostic", "effect"]
PROGNOSTIC_OUTPUTS = ("prediction",)
EFFECT_OUTPUTS = ("cate", "cate_low", "cate_high")
OOD_OUTPUTS = ("out_of_distribution", "ood_reasons")
ID_COLUMN = "participant_id"
_NUMERIC_TYPES = {"double", "float", "long", "integer"}


class ModelLookupError(MBIError):
    """A run, run folder or model that was asked for does not exist (or has no such model)."""


# -------------------------------------------------------------------------------------------- the envelope

def envelope_from_training(X_frame: pd.DataFrame) -> dict[str, Any]:
    """Numeric min/max and categorical levels seen in the training rows: where the model has evidence.

    Aggregates only (no row is kept). Missing values are ignored: they are imputed by the model, so missingness is
    not by itself out of distribution. A numeric column never observed gets ``min = max = None``.
    """
    numeric: dict[str, dict[str, float | None]] = {}
    categorical: dict[str, list[str]] = {}
    for column in X_frame.columns:
        values = X_frame[column]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            observed = pd.to_numeric(values, errors="coerce").dropna()
            numeric[str(column)] = ({"min": float(observed.min()), "max": float(observed.max())}
                                    if len(observed) else {"min": None, "max": None})
        else:
            categorical[str(column)] = sorted({str(v) for v in values.dropna()})
    return {"columns": [str(c) for c in X_frame.columns], "numeric": numeric, "categorical": categorical}


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


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    import mbi_predict

    pins = [f"mbi-predict=={mbi_predict.__version__}"]
    for package in ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "xgboost", "econml"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_final_model(fitted: Any, *, kind: Kind, features: list[str], task: str, envelope: dict[str, Any],
                    name: str, preprocess: Any = None, alpha: float = 0.05) -> str:
    """Log the final (all-trials) model inside the active MLflow run; return its model URI.

    ``fitted``: a fitted prognostic Pipeline (kind="prognostic") or a fitted CATE estimator (kind="effect", with
    ``preprocess`` the fitted ColumnTransformer its X came through). ``features``: the input columns a user must
    give (the covariates, plus ``arm`` for prognostic models that use it). ``envelope``: from
    `envelope_from_training` on the training frame. The signature is inferred on a synthetic example.
    """
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
    with _quiet_mlflow():
        info = mlflow.pyfunc.log_model(name=name, python_model=python_model, signature=signature,
                                       input_example=example, pip_requirements=_requirements(), metadata=metadata)
    return info.model_uri


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow warns on every log_model that a Python object is pickled with CloudPickle (deliberate here: the model
    object is ours and loads with the same package version) and nudges about type hints on `predict` (deliberately
    absent, see MBIPyfuncModel.predict); per model, that is noise in a run's log."""
    import logging
    import warnings

    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            yield
    finally:
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
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read the table: {exc}", file=str(path)) from None
    raise DataError("unsupported file type; use .csv or .parquet", file=str(path))


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
            bad = values.notna() & numbers.isna()
            if bad.any():
                raise DataError(f"expected numbers, found {values[bad].iloc[0]!r} in {int(bad.sum())} row(s)",
                                file=file, column=column)
            out[column] = numbers.astype(float if kind in ("double", "float") else "Int64")
        elif kind == "string":
            if pd.api.types.is_numeric_dtype(values) and values.notna().any():
                raise DataError(f"expected text categories, found numbers such as {values.dropna().iloc[0]!r}",
                                file=file, column=column)
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

    from mbi_predict.io import atomic_path

    data_path, out_path = Path(data_path), Path(out_path)
    if out_path.suffix.lower() not in (".csv", ".parquet"):
        raise DataError("unsupported output type; use .csv or .parquet", file=str(out_path))
    frame = read_table(data_path)
    if ID_COLUMN not in frame.columns:
        raise DataError(f"no {ID_COLUMN} column: predictions are keyed by it", file=str(data_path))
    ids = frame[ID_COLUMN].astype(str)
    if frame[ID_COLUMN].isna().any():
        raise DataError(f"{ID_COLUMN} is empty in {int(frame[ID_COLUMN].isna().sum())} row(s)", file=str(data_path))
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise DataError(f"{ID_COLUMN} duplicated: {len(duplicated)} repeat(s), e.g. {duplicated.iloc[0]!r}",
                        file=str(data_path))
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
