"""File output that never leaves a half-written file (or half a set of files) behind - not on an error, not on
Ctrl-C or SIGTERM (`sigterm_interrupts`, `deferred_interrupts`), and after a SIGKILL only a hidden staging folder that
names its process, removed by the next writer (`remove_stale_staging`) - never overwrites an input
(`check_outputs_apart`) and follows the user's umask; the one YAML reader (YAML 1.2 scalars, bounded aliases); content
hashes and installed versions for provenance. The interrupt and staging-folder helpers are in
`mbi_predict.interrupts`, re-exported here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mbi_predict.errors import DataError
from mbi_predict.interrupts import (Terminated, deferred_interrupts, interrupt_in_chain,  # noqa: F401
                                    process_alive, remove_stale_staging, sigterm_interrupts, staging_prefix)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; move it into place only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic on POSIX. It is given the
    permissions an ordinary `open()` would give under the user's umask (mkstemp makes it 0600), so a shared project
    folder stays readable by whoever the umask allows. A target that is a folder, or a folder that cannot be
    created or written, is a one-line `DataError` naming the path, with nothing written.
    """
    target = Path(target)
    if target.is_dir():
        raise DataError("the output path is a folder; give a file name", file=str(target))
    tmp: Path | None = None
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with deferred_interrupts():  # created and bound as one step, so the finally below always removes it
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
                os.close(fd)
                tmp = Path(tmp_name)
        except OSError as exc:
            raise DataError(f"cannot write here: {exc.strerror or type(exc).__name__}", file=str(target)) from None
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, target)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def files_under(folder: str | os.PathLike[str]) -> list[Path]:
    """Every file under `folder` ([] if not a folder): the inputs of a command that reads a model or run folder."""
    folder = Path(folder)
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@contextlib.contextmanager
def output_set(targets: Sequence[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """Stage several files and publish them as one set; yields one temporary path per target, in order.

    Each temporary file lives in a hidden staging folder inside its target's folder (same file system, so each
    publish is an atomic `os.replace`). Only when the block succeeds are the files published, one rename each, in
    the order given: put the file whose presence means "the set is complete" (a table) LAST, so that a reader who
    sees it also sees every other file of the set, even if the process is killed between two renames. A previous
    file at that last target is moved into the staging folder before the first rename, so a kill between two
    renames never pairs the old table with the new set's other files. On an error nothing is published and the
    staging folders are removed; so too on Ctrl-C and on SIGTERM (which raises `Terminated` for the duration, where
    it would otherwise end the process on the spot), and an interrupt during the renames waits until they are
    done. After a SIGKILL at most a hidden ``.mbi-staging.*`` folder is left, never a partial target, and the next
    set written into that folder removes it. Permissions follow the umask as in `atomic_path`.
    """
    paths = [Path(t) for t in targets]
    if len({p.resolve() for p in paths}) != len(paths):
        raise DataError("two outputs of this command would be the same file", file=str(paths[0]))
    for path in paths:
        if path.is_dir():
            raise DataError("the output path is a folder; give a file name", file=str(path))
    staging: dict[Path, Path] = {}
    created = [folder for p in paths for folder in (p.parent, *p.parent.parents) if not folder.exists()]
    published = False
    with sigterm_interrupts():
        try:
            try:
                for parent in dict.fromkeys(p.parent for p in paths):
                    parent.mkdir(parents=True, exist_ok=True)
                    remove_stale_staging(parent)
                    with deferred_interrupts():  # created and recorded as one step (see the finally below)
                        staging[parent] = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=parent))
            except OSError as exc:
                raise DataError(f"cannot write here: {exc.strerror or type(exc).__name__}",
                                file=str(exc.filename or paths[0])) from None
            temps = [staging[p.parent] / p.name for p in paths]
            yield temps
            mode = 0o666 & ~current_umask()
            for tmp in temps:
                os.chmod(tmp, mode)
            with deferred_interrupts():  # the renames are one step for Ctrl-C and SIGTERM
                commit = paths[-1]
                previous = staging[commit.parent] / f".previous.{commit.name}"
                if commit.exists():
                    os.replace(commit, previous)
                try:
                    for tmp, path in zip(temps, paths):
                        os.replace(tmp, path)
                except BaseException:
                    if previous.exists() and not commit.exists():
                        os.replace(previous, commit)
                    raise
                published = True
        finally:
            for folder in staging.values():
                shutil.rmtree(folder, ignore_errors=True)
            if not published:  # folders made for this set go too: a failed command leaves nothing behind
                for folder in sorted(set(created), key=lambda f: len(f.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def current_umask() -> int:
    """The process umask, read without a window in which it is changed (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    """True if two paths name one file: equal once resolved (symlinks followed) or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_apart(outputs: Iterable[str | os.PathLike[str] | None],
                        inputs: Iterable[str | os.PathLike[str] | None], *,
                        folder: str | os.PathLike[str] | None = None,
                        replaced: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse, before anything is written, an output path that names one of the command's inputs.

    Compared resolved (symlinks followed, `..` folded) and by inode (a hard link is the same file), so no spelling
    of an input can be overwritten. Every CLI command that writes calls this with its outputs and its inputs; the
    error is one line naming the path, and the input is left as it was. ``folder``: the command's output folder,
    which must not be an existing file. ``replaced``: folders the command replaces as a whole (``run`` retires a
    previous run's ``plots/``), so no input may lie inside them.
    """
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise DataError("--out must name a folder, and this is a file", file=str(folder))
    ins = [Path(p) for p in inputs if p is not None]
    for out in (Path(p) for p in outputs if p is not None):
        for source in ins:
            if _same_file(out, source):
                raise DataError("the output would overwrite an input of this command; choose another path",
                                file=str(out))
    for whole in (Path(p) for p in replaced):
        for source in ins:
            try:
                inside = source.resolve().is_relative_to(whole.resolve())
            except OSError:
                inside = False
            if inside:
                raise DataError(f"this input lies in {whole}, which the command replaces as a whole; move it or "
                                "choose another --out", file=str(source))


def remove_stale_figures(folder: str | os.PathLike[str], keep: Iterable[str | os.PathLike[str]]) -> None:
    """Remove from a figures folder the images an earlier write left that this one did not write (a page must not
    sit beside another run's or model's figures). Only image files (png, svg, pdf) are touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    kept = {Path(p).name for p in keep}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in (".png", ".svg", ".pdf") and path.name not in kept:
            path.unlink(missing_ok=True)


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
    The loader is `load_yaml12` (safe, YAML 1.2 scalars: only true/false are booleans, so an arm labelled
    `Yes` or `off` stays that text; aliases bounded, so an alias bomb fails at once).
    """
    import yaml

    try:
        return load_yaml12(text)
    except YAMLLimitError as exc:
        raise error(f"{message}: {exc}", file=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise error(f"{message}{where}: {problem}", file=source) from None


#: Most nodes a YAML document may hold once its aliases are expanded (a spec of 50 trials has a few 10^4).
YAML_MAX_NODES = 200_000


class YAMLLimitError(ValueError):
    """A YAML document that would expand beyond `YAML_MAX_NODES` nodes, or refers to itself through an alias."""


def load_yaml12(text: str, *, max_nodes: int = YAML_MAX_NODES) -> Any:
    """Safe-load one YAML document with YAML 1.2 core-schema scalars and a bound on alias expansion.

    * Only `true`/`false` (any case form the 1.2 core schema allows) are booleans: `yes`, `No`, `on`, `off`, `y`
      stay text, so an arm or recode label is what the file says. No sexagesimal or underscore numbers, no octal
      by a leading zero (`007` is 7, `0012001` is 12001), no implicit timestamps.
    * A mapping that repeats a key is refused (`_refuse_duplicate_keys`), never resolved to its last value.
    * The composed node graph is measured with aliases expanded (memoised, so measuring is linear in the document)
      before any Python object is built: a billion-laughs document fails at once instead of growing without bound
      in whatever walks the result later, and a self-referencing alias is refused.
    """
    loader = _YAML12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes)
        _refuse_duplicate_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(root: Any) -> None:
    """A mapping that names a key twice is an error (PyYAML keeps the last silently: a spec listing trial T03
    twice would drop one trial's mapping, a config with two ``seed:`` would run with the second)."""
    import yaml

    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, Any] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key.value!r} (first at line {keys[key.value].line + 1})",
                            key.start_mark)
                    keys[key.value] = key.start_mark
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _expanded_size(root: Any, limit: int) -> int:
    import yaml

    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLLimitError("an alias refers to the node that contains it")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > limit:
            raise YAMLLimitError(f"the document expands to more than {limit} nodes (aliases multiply it); "
                                 "write it out without nested aliases")
        sizes[key] = total
        return total

    return size(root)


def _make_yaml12_loader() -> type:
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
               "tag:yaml.org,2002:timestamp"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                 list("-+0123456789"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def construct_bool(loader: Any, node: Any) -> bool:
        return loader.construct_scalar(node).lower() == "true"

    def construct_int(loader: Any, node: Any) -> int:
        text = loader.construct_scalar(node)
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)

    def construct_float(loader: Any, node: Any) -> float:
        text = loader.construct_scalar(node).lower()
        return float(text.replace(".inf", "inf").replace(".nan", "nan"))

    Loader.add_constructor("tag:yaml.org,2002:bool", construct_bool)
    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return Loader


class _LazyLoader:
    cls: type | None = None

    def __call__(self, text: str) -> Any:
        if _LazyLoader.cls is None:
            _LazyLoader.cls = _make_yaml12_loader()
        return _LazyLoader.cls(text)


_YAML12Loader = _LazyLoader()


def installed_distribution(*names: str) -> tuple[str, str] | None:
    """(name, version) of the first of ``names`` installed here, None when none is: a library under each name it
    is distributed as (xgboost is ``xgboost-cpu`` on Linux machines without a GPU)."""
    from importlib.metadata import PackageNotFoundError, version

    for name in names:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


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
