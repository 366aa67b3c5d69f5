"""Predictions for new participants from a file: the model found from a model URI, a model folder, a run folder
or a run id (`resolve_model_uri`), the table checked against the model's signature (one-line errors naming the
file, row and column), and the predictions written atomically, keyed by participant_id, with the out-of-distribution
flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.errors import DataError, ModelLookupError

ID_COLUMN = "participant_id"
_NUMERIC_TYPES = {"double", "float", "long", "integer"}


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
        child = _child_run_uri(model_uri)
        if child is not None:
            try:
                return mlflow.pyfunc.load_model(child)
            except (MlflowException, OSError):
                pass
        first = " ".join(str(exc).split())[:300]
        raise ModelLookupError(f"cannot load model {model_uri}: {first}") from None


def _child_run_uri(model_uri: str) -> str | None:
    """``runs:/<experiment run>/<model>``: a final model lives in its model's child run (named by the model, the
    layout the MLflow UI compares), so the experiment run's id and the model's name find it there."""
    if not model_uri.startswith("runs:/"):
        return None
    run_id, _, name = model_uri.removeprefix("runs:/").partition("/")
    if not run_id or not name or "/" in name or "'" in name:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        experiment = client.get_run(run_id).info.experiment_id
        children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}' and "
                                                                  f"attributes.run_name = '{name}'", max_results=2)
    except MlflowException:
        return None
    return f"runs:/{children[0].info.run_id}/{name}" if len(children) == 1 else None


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


def _refuse_implausible(frame: pd.DataFrame, *, file: str) -> None:
    """The IPD contract's plausible ranges (`schema.plausible_ranges`: age 10-110, ...) hold for new participants
    too: an age of 250 is a data error, not a participant outside the training envelope. Counts and row
    numbers only, never the values."""
    import numpy as np

    from mbi_predict.data.schema import plausible_ranges

    for column, (low, high) in plausible_ranges(frame).items():
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        # non-finite values are the signature check's ("expected finite numbers"); here the finite ones out of range
        bad = np.flatnonzero(np.isfinite(values) & ((values < low) | (values > high)))
        if len(bad):
            raise DataError(f"{len(bad)} value(s) outside the plausible range {low:g} to {high:g} (first in data "
                            f"row {int(bad[0]) + 1})", file=file, column=column)


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
    _refuse_implausible(frame, file=str(data_path))
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
