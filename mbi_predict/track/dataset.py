"""The analysed IPD as an MLflow dataset input: name, digest, schema and a profile of counts. Never rows.

``mlflow.data.from_pandas`` keeps the DataFrame in the Python object (it is not written to the store, but its
digest is computed from the rows and the source would point at the IPD file) and its profile is just
``num_rows``/``num_elements``. A `MetaDataset` holds metadata only, so the dataset here is a small subclass of it
that adds a profile of counts (rows, trials, analysed participants, missing values per column), takes its
schema from an EMPTY frame (column names and dtypes, zero rows) and its digest from the summary's data sha256.

MLflow caps a dataset digest at 36 characters: the digest is the first 32 hex digits of the sha256; the full
hash is in the profile and on the parent run (tag ``mbi_predict.data_sha256``).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

DIGEST_LENGTH = 32


class IPDSource(DatasetSource):
    """Where the IPD came from, as the summary records it (``simulated``, a harmonised file's name, a DataFrame)
    and no more: a path on the analyst's machine is not useful to a reader and may itself be sensitive."""

    def __init__(self, kind: str, detail: dict[str, Any] | None = None) -> None:
        self.kind, self.detail = kind, detail or {}

    @staticmethod
    def _get_source_type() -> str:
        return "mbi_predict"

    def load(self, **kwargs):  # pragma: no cover - the tracking store holds no rows to load
        raise NotImplementedError("the IPD is not stored in MLflow; this source only describes where it came from")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> IPDSource:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.detail}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> IPDSource:
        detail = dict(source_dict)
        return cls(str(detail.pop("kind", "unknown")), detail)


class ProfiledDataset(MetaDataset):
    """A metadata-only dataset with a profile (a dict of counts)."""

    def __init__(self, source: DatasetSource, *, name: str, digest: str, schema: Any, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        config = super().to_dict()
        config["profile"] = json.dumps(self._profile, sort_keys=True)
        return config


def _schema(columns: pd.DataFrame | None):
    if columns is None:
        return None
    from mlflow.types.utils import _infer_schema

    empty = columns.iloc[:0].copy()  # dtypes only: not one row leaves this function
    for column in empty.columns:
        dtype = empty[column].dtype
        if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
            empty[column] = empty[column].astype(object)  # categoricals, pandas strings -> MLflow 'string'
    try:
        with warnings.catch_warnings():  # the hint about integer columns and missing values is for model inputs
            warnings.simplefilter("ignore")
            return _infer_schema(empty)
    except Exception:  # pragma: no cover - an exotic dtype: fall back to names as strings
        from mlflow.types import ColSpec, DataType, Schema

        return Schema([ColSpec(DataType.string, str(c)) for c in columns.columns])


def dataset_profile(summary: dict[str, Any]) -> dict[str, Any]:
    """Counts only, from the summary: rows, trials, analysed rows/trials, missing outcome, missing per column."""
    data = summary["data"]
    n = int(data["n_participants"])
    analysed = data.get("analysed") or {}
    profile: dict[str, Any] = {"num_rows": n, "n_trials": int(data["n_trials"]), "sha256": data["sha256"]}
    if analysed:
        profile.update({"n_analysed": int(analysed["n_participants"]), "n_trials_analysed": int(analysed["n_trials"]),
                        "n_missing_outcome": int(analysed["n_missing_outcome"])})
    # the summary keeps missingness as shares of the n rows (4 decimals): back to counts
    shares = data.get("missingness") or {}
    profile["n_missing"] = {str(c): int(round(float(share) * n)) for c, share in shares.items()}
    return profile


def build_dataset(summary: dict[str, Any], columns: pd.DataFrame | None = None,
                  name: str | None = None) -> ProfiledDataset:
    """The run's dataset: ``columns`` is any frame with the IPD's columns and dtypes (rows are dropped here)."""
    data = summary["data"]
    kind = str(data.get("source", "unknown"))
    detail = {k: v for k, v in data.items() if k == "simulate" or k == "file_name"}
    name = name or f"{summary['experiment']}:{summary['outcome']}"
    return ProfiledDataset(IPDSource(kind, detail), name=name, digest=str(data["sha256"])[:DIGEST_LENGTH],
                           schema=_schema(columns), profile=dataset_profile(summary))
