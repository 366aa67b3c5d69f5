"""File output that never leaves a half-written file behind, and content hashes for provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic on POSIX.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> Path:
    return write_text_atomic(target, to_json(obj, indent=2) + "\n")


def to_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON: NaN and infinities become null (JSON has no NaN), numpy scalars become numbers."""
    return json.dumps(json_safe(obj), default=_json_default, allow_nan=False, **kwargs)


def json_safe(obj: Any) -> Any:
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_parquet_atomic(target: str | os.PathLike[str], frame: Any, **kwargs: Any) -> Path:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, **kwargs)
    return Path(target)


def save_figure_atomic(target: str | os.PathLike[str], figure: Any, **kwargs: Any) -> Path:
    target = Path(target)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format=target.suffix.lstrip(".") or "png", bbox_inches="tight", **kwargs)
    return target


def parse_yaml(text: str, *, source: str, error: type[Exception], message: str = "malformed YAML") -> Any:
    """YAML text -> Python data; a syntax error becomes one line naming the file, line and column.

    One place for the specs, the instrument registry and the experiment configs, so every YAML error reads alike.
    ``error`` is the package error type of the caller (SpecError, ConfigError), called with ``file=source``.
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise error(f"{message}{where}: {problem}", file=source) from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
