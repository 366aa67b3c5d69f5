"""Readers for raw trial files and for the harmonised IPD table.

Raw files are read as faithfully as their format allows and never written to: CSV/TSV as text (so the spec's
missing-value codes, not pandas' guesses, decide what is missing), SPSS and Stata through pyreadstat with value labels
applied as pandas categories (the labels are what the trial team saw and what a spec names), Excel through openpyxl
with every cell as stored (no type guessing, so a text id `007` stays `007`), parquet through pyarrow. Any failure
becomes one line naming the file. Two columns of one name (pandas would quietly rename the second `x.1`) and a file
without data rows are errors. Participant ids are text everywhere (`id_text`): never parsed as numbers, so `007` and
`7` stay two ids and `0012001` keeps its zeros; an id a format stores as a number is written without loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict.data.schema import NUMBER_RE, check_ipd, id_text, parse_number  # noqa: F401 - id_text: API
from mbi_predict.errors import DataError

RAW_FORMATS = ("csv", "tsv", "sav", "dta", "xlsx", "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".sav": "sav", ".zsav": "sav",
                   ".dta": "dta", ".xlsx": "xlsx", ".xlsm": "xlsx", ".parquet": "parquet", ".pq": "parquet"}


def infer_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIX_FORMATS[suffix]
    except KeyError:
        raise DataError(f"cannot tell the format from the suffix {suffix!r}; declare one of "
                        f"{', '.join(RAW_FORMATS)}", file=str(path)) from None


def read_raw(path: str | os.PathLike[str], *, format: str | None = None,
             sheet: str | int | None = None) -> pd.DataFrame:
    """Read one raw trial file into a DataFrame without modifying it.

    Delimited text comes back as strings (empty cells as ""), so that "NA", " " and -99 stay visible to the spec's
    missing-value codes; labelled SPSS/Stata variables come back as categories of their labels (a code without a
    label keeps its value).
    """
    frame, value_labels = read_raw_coded(path, format=format, sheet=sheet)
    for column, labels in value_labels.items():
        frame[column] = apply_value_labels(frame[column], labels)
    return frame


def read_raw_coded(path: str | os.PathLike[str], *, format: str | None = None,
                   sheet: str | int | None = None) -> tuple[pd.DataFrame, dict[str, dict[Any, str]]]:
    """The values as stored plus the value labels ({} outside SPSS/Stata).

    Harmonisation needs both: labels for arms and covariates (what the spec names), the stored codes for item and
    total scores (Likert items are often labelled "Not at all" ... "Nearly every day" but scored by their codes).
    """
    path = Path(path)
    fmt = format or infer_format(path)
    if fmt not in RAW_FORMATS:
        raise DataError(f"unsupported format {fmt!r}; use one of {', '.join(RAW_FORMATS)}", file=str(path))
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        frame, value_labels = _READERS[fmt](path, sheet)
    except DataError:
        raise
    except Exception as exc:  # every library raises its own types; the user needs the file and the reason
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise DataError(f"cannot read as {fmt}: {reason}", file=str(path)) from None
    frame.columns = [str(c) for c in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise DataError("two columns have this name; rename one", file=str(path), column=duplicated[0])
    if frame.empty:
        raise DataError("the file has no data rows", file=str(path))
    return frame, {str(k): v for k, v in value_labels.items() if str(k) in frame.columns}


def to_numbers(values: pd.Series, missing: set[str] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """A raw column as floats (a new, writable array) plus the mask of cells that are not numbers.

    Blank cells and declared missing codes (canonical label text, see `spec.label_key`) become NaN. A number is
    plain decimal notation (`3`, ` 2.5 `, `1e3`, `-0.5`); `NaN`, `inf`, `1_0`, `0x1F` and other text are not, and
    neither is an infinite value a binary format stores: those cells are flagged, for the caller to name.
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numbers = np.array(values.to_numpy(dtype=float, na_value=np.nan), dtype=float, copy=True)
        bad = np.isinf(numbers)
    else:  # vectorised: harmonising reads ~10^5 cells per trial
        cells = values.astype(object)
        absent = cells.isna().to_numpy()
        text = cells.where(~absent, "").astype(str).str.strip()
        number = text.str.fullmatch(NUMBER_RE.pattern).to_numpy(dtype=bool)
        numbers = np.full(len(values), np.nan)
        numbers[number] = text[number].astype(float).to_numpy()
        blank = absent | (text == "").to_numpy()
        bad = ~blank & ~number & ~text.isin(missing).to_numpy()
        bad |= np.isinf(numbers)  # "1e400" is decimal notation, but not a finite number
    if missing:
        coded = [float(k) for k in missing if parse_number(k) is not None]
        numbers[np.isin(numbers, coded)] = np.nan
    return numbers, bad


def apply_value_labels(values: pd.Series, labels: dict[Any, str]) -> pd.Series:
    """Codes -> their labels as a categorical; unlabelled codes keep their value, missing stays missing."""
    mapped = [None if pd.isna(v) else labels.get(v, v) for v in values]
    return pd.Series(pd.Categorical(mapped), index=values.index, name=values.name)


def _read_delimited(path: Path, sep: str) -> tuple[pd.DataFrame, dict]:
    # header=None: the header row is read as data, so duplicate names stay visible (pandas would rename them x.1)
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                        header=None)
    return _first_row_as_header(frame), {}


def _first_row_as_header(frame: pd.DataFrame) -> pd.DataFrame:
    # an empty header cell (a trailing comma, an unused spreadsheet column) is named as pandas would name it
    header = [f"Unnamed: {i}" if v is None or (isinstance(v, float) and v != v) or str(v) == "" else str(v)
              for i, v in enumerate(frame.iloc[0].tolist())]
    body = frame.iloc[1:].reset_index(drop=True)
    body.columns = header
    return body


def _read_spss(path: Path, _sheet: object) -> tuple[pd.DataFrame, dict]:
    import pyreadstat

    frame, meta = pyreadstat.read_sav(str(path))
    return frame, dict(meta.variable_value_labels)


def _read_stata(path: Path, _sheet: object) -> tuple[pd.DataFrame, dict]:
    import pyreadstat

    frame, meta = pyreadstat.read_dta(str(path))
    return frame, dict(meta.variable_value_labels)


def _read_excel(path: Path, sheet: str | int | None) -> tuple[pd.DataFrame, dict]:
    # dtype=object: cells as stored (no guessing that text "007" is the number 7); header=None as for CSV
    frame = pd.read_excel(path, sheet_name=0 if sheet is None else sheet, engine="openpyxl", header=None,
                          dtype=object)
    if frame.empty:
        raise DataError("the sheet is empty", file=str(path))
    return _first_row_as_header(frame), {}


def _read_parquet(path: Path, _sheet: object) -> tuple[pd.DataFrame, dict]:
    return pd.read_parquet(path), {}


_READERS = {
    "csv": lambda path, _sheet: _read_delimited(path, ","),
    "tsv": lambda path, _sheet: _read_delimited(path, "\t"),
    "sav": _read_spss,
    "dta": _read_stata,
    "xlsx": _read_excel,
    "parquet": _read_parquet,
}


def load_ipd(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a harmonised IPD table (parquet, or CSV) and check it against the contract (`check_ipd`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            # participant ids stay text ("007" is not 7); everything else is inferred
            frame = pd.read_csv(path, dtype={"trial_id": str, "participant_id": str, "control_type": str})
        else:
            raise DataError(f"an IPD table must be .parquet or .csv, not {suffix or 'no suffix'}", file=str(path))
    except DataError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise DataError(f"cannot read the IPD table: {reason}", file=str(path)) from None
    if suffix in (".csv", ".txt"):
        # pandas renames a repeated header to `name.1`; read as data (as `_read_delimited` does), it stays visible
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, encoding="utf-8-sig").iloc[0].astype(str)
        repeated = header[header.duplicated()].tolist()
        if repeated:
            raise DataError("the header names this column more than once", file=str(path), column=repeated[0])
    if frame.empty:
        raise DataError("the IPD table has no rows (a header only?)", file=str(path))
    return check_ipd(frame, source=str(path))
