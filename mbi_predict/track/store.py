"""The tracking store: reachability checks (one line, before any fitting), a client that never touches MLflow's
global state, race-safe store and experiment creation, and the git facts a run is tagged with.

Two experiment runs that start together on a new sqlite store both find no tables and both run MLflow's schema
migrations; one of them then fails half-way. The first access to an sqlite store therefore happens under an
exclusive ``fcntl.flock`` on ``<db>.lock`` (beside the database), and creating an experiment that another process
created a moment earlier is caught and re-read. A new store is migrated under a hidden name and renamed into place
when complete, so a process stopped while creating it (Ctrl-C, SIGTERM, SIGKILL) never leaves a store that no later
run can open.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from mbi_predict.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_INITIALISED: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on ``<db>.lock`` for an sqlite store (a no-op for other stores or off POSIX)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock, and no concurrent runs to protect against
        yield
        return
    lock_path = db.with_name(db.name + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def client(uri: str, registry_uri: str | None = None):
    """An ``MlflowClient`` on ``uri`` (MLflow's global tracking URI and active run are left alone). The first use
    of an sqlite store in this process happens under `store_lock`; a store that does not exist yet is created
    whole (`_create_sqlite_store`)."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    if db is None or uri in _INITIALISED:
        return MlflowClient(tracking_uri=uri, registry_uri=registry_uri or uri)
    with store_lock(uri):  # the store (and its schema) is made on first use, one process at a time
        _remove_unfinished_stores(db)
        if not db.exists() or db.stat().st_size == 0:
            _create_sqlite_store(db)
        made = MlflowClient(tracking_uri=uri, registry_uri=registry_uri or uri)
        made.search_experiments(max_results=1)
        made.search_registered_models(max_results=1)
    _INITIALISED.add(uri)
    return made


_UNFINISHED = ".creating-"


def _create_sqlite_store(db: Path) -> None:
    """Create a new sqlite store beside ``db`` under a hidden name, run MLflow's schema migrations there, and only
    then rename it to ``db`` (atomic). MLflow migrates a new database in dozens of steps; a process stopped half-way
    (Ctrl-C, SIGTERM, SIGKILL) used to leave a store no later run could open ("table _alembic_tmp_tags already
    exists"). Now the store is either absent or complete; an unfinished file is removed by the next process
    (`_remove_unfinished_stores`, under the store's lock). Called under `store_lock`."""
    from mlflow.tracking import MlflowClient

    from mbi_predict.io import sigterm_interrupts

    temporary = db.with_name(f".{db.name}{_UNFINISHED}{os.getpid()}")
    temporary_uri = f"sqlite:///{temporary}"
    with sigterm_interrupts():  # SIGTERM, like Ctrl-C, removes the unfinished file on its way out
        try:
            made = MlflowClient(tracking_uri=temporary_uri, registry_uri=temporary_uri)
            made.search_experiments(max_results=1)
            made.search_registered_models(max_results=1)
            _dispose_engines(temporary_uri)
            os.replace(temporary, db)
        finally:
            _dispose_engines(temporary_uri)
            for leftover in (temporary, temporary.with_name(temporary.name + "-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _remove_unfinished_stores(db: Path) -> None:
    """Remove the hidden half-created stores of processes that were stopped while creating ``db`` (only ever called
    under `store_lock`, so none of them is in use)."""
    for leftover in db.parent.glob(f".{db.name}{_UNFINISHED}*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def _dispose_engines(uri: str) -> None:
    """Close the connections MLflow keeps (per URI, class-wide) to a database, so the file can be renamed or
    removed and no engine is left pointing at it."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for store in (TrackingStore, RegistryStore):
        engines = getattr(store, "_engine_map", None)
        if isinstance(engines, dict):
            engine = engines.pop(uri, None)
            if engine is not None:
                engine.dispose()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _http_get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the user's own tracking server
        if response.status >= 400:
            raise ConfigError(f"HTTP {response.status}")


def check_tracking_uri(uri: str | None, *, registry: bool = False) -> str:
    """Fail fast, before any model is fitted, with one line if the tracking store (and, with ``registry``, its
    Model Registry) cannot be reached. Returns the URI to use."""
    uri = uri or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent if str(db.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"tracking URI {uri} is unreachable: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking URI {uri} is unreachable: folder {folder} is not writable")
    elif uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        try:
            _http_get(base + "/health")
        except ConfigError as exc:
            raise ConfigError(f"tracking URI {uri} is unreachable: {exc}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConfigError(f"tracking URI {uri} is unreachable: {getattr(exc, 'reason', exc)}") from None
    try:
        made = client(uri)
        made.search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as exc:  # MLflow raises many types (MlflowException, OperationalError, ...)
        raise ConfigError(f"tracking URI {uri} is unusable: {_one_line(exc)}") from None
    if registry:
        try:
            made.search_registered_models(max_results=1)
        except Exception as exc:
            raise ConfigError(f"model registry at {uri} is unusable: {_one_line(exc)}") from None
    return uri


def experiment_id(made, name: str, uri: str) -> str:
    """The id of experiment ``name``, created if absent (artifacts beside an sqlite database, never in whatever the
    working directory happens to be). Safe when another process creates the same experiment at the same time."""
    from mlflow.exceptions import MlflowException

    for attempt in range(5):
        existing = made.get_experiment_by_name(name)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                raise ConfigError(f"MLflow experiment {name!r} at {uri} is deleted: restore it "
                                  f"(mlflow experiments restore) or choose another tracking.experiment")
            return existing.experiment_id
        db = sqlite_path(uri)
        location = (db.resolve().parent / "mlartifacts" / name.replace("/", "_")).as_uri() if db is not None else None
        try:
            with store_lock(uri):
                if made.get_experiment_by_name(name) is None:
                    return made.create_experiment(name, artifact_location=location)
        except MlflowException as exc:  # RESOURCE_ALREADY_EXISTS or a unique-constraint race on a server: re-read
            if attempt == 4:
                raise ConfigError(f"cannot create MLflow experiment {name!r} at {uri}: {_one_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
    raise ConfigError(f"cannot create MLflow experiment {name!r} at {uri}")  # pragma: no cover


def git_commit() -> str | None:
    """The commit of the working tree the package runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
