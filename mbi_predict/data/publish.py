"""Writing a harmonisation: the table, its JSON sidecar, the missingness table and the report, as ONE set.

Guarantee (`write_harmonised`): every file is first written into a hidden staging folder inside its destination
folder, and only when all of them are complete are they published, each by one atomic rename, in this order: the
report pages, the missingness table, the sidecar, and the table LAST. So

* a reader who sees the table (new or replaced) also sees its sidecar and missingness table from the same run:
  killing the process (even with SIGKILL) at any point never leaves the table without them, nor beside the
  sidecar of another run (a previous table is moved aside just before the first rename);
* on any error, on Ctrl-C and on SIGTERM nothing at all is published and the staging folders are removed; an
  interrupt that arrives during the renames is held until they are done, so it never splits the set (after a
  SIGKILL a hidden ``.mbi-staging.<host>.<pid>.*`` folder may be left behind, never a partial or unaccompanied
  output, and the next harmonisation into that folder removes it);
* the table is the commit point: if an error stops the set before publishing, the previous table (if any) is still
  there whole. Only a SIGKILL in the instant between the first rename and the table's leaves the new report pages,
  missingness table and sidecar without a table (never with the old one). A parquet table also carries the
  metadata inside itself, so it can never disagree with itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mbi_predict import io
from mbi_predict.errors import SpecError

if TYPE_CHECKING:
    from mbi_predict.data.harmonise import HarmonisedData

PARQUET_METADATA_KEY = b"mbi_predict.harmonisation"


def sidecar_path(out_path: str | os.PathLike[str]) -> Path:
    """`ipd.parquet` -> `ipd.meta.json`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".meta.json")


def missingness_path(out_path: str | os.PathLike[str]) -> Path:
    """`ipd.parquet` -> `ipd.missingness.csv`."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + ".missingness.csv")


def harmonised_paths(out_path: str | os.PathLike[str],
                     report_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every file `write_harmonised` writes, in publishing order (the table last)."""
    from mbi_predict.data.report import report_paths

    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SpecError(f"the IPD table is written as .parquet or .csv, not {suffix or 'no suffix'}",
                        file=str(out_path))
    report = report_paths(Path(report_dir) if report_dir is not None else out_path.parent)
    return [*report, missingness_path(out_path), sidecar_path(out_path), out_path]


def write_harmonised(result: HarmonisedData, out_path: str | os.PathLike[str], *,
                     report_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the table (parquet with the metadata embedded, or CSV), its JSON sidecar, the missingness table and the
    harmonisation report as one set (see the module docstring for the guarantee). Returns the paths, table first."""
    from mbi_predict.data.report import render_report

    targets = harmonised_paths(out_path, report_dir)
    *report_targets, missing_target, sidecar_target, table_target = targets
    metadata_json = io.to_json(result.metadata, sort_keys=True)
    pages = render_report(result.ipd, result.metadata, result.missingness)
    with io.output_set(targets) as temps:
        *report_temps, missing_tmp, sidecar_tmp, table_tmp = temps
        for target, tmp in zip(report_targets, report_temps):
            tmp.write_text(pages[target.name], encoding="utf-8")
        result.missingness.to_csv(missing_tmp, index=False)
        sidecar_tmp.write_text(io.to_json(json.loads(metadata_json), indent=2) + "\n", encoding="utf-8")
        _write_table(result, table_tmp, table_target.suffix.lower(), metadata_json)
    return [table_target, sidecar_target, missing_target, *report_targets]


def _write_table(result: HarmonisedData, tmp: Path, suffix: str, metadata_json: str) -> None:
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(result.ipd, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               PARQUET_METADATA_KEY: metadata_json.encode("utf-8")})
        pq.write_table(table, tmp)
    else:
        result.ipd.to_csv(tmp, index=False)


def read_parquet_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The harmonisation metadata embedded in a parquet file written by `write_harmonised` ({} if none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(PARQUET_METADATA_KEY)
    return json.loads(raw) if raw else {}
