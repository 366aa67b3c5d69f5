"""Where fold jobs run: joblib's local (loky) workers, or a Dask cluster through joblib's dask backend.

Why a context manager around joblib rather than a scheduler of our own (docs/DESIGN.md, "Scale"): the fold jobs are
already plain ``joblib.Parallel`` calls (`validate.loto.run_jobs`), and joblib's ``parallel_config(backend="dask")``
sends exactly those calls to a ``distributed`` cluster. So the runner only chooses a backend and an ``n_jobs``;
results are the same whichever backend, because every job's randomness comes from its own derived seed.

``execution_backend("dask", "tcp://host:8786")`` connects a ``distributed.Client`` (or uses a Client passed in),
yields ``n_jobs=-1`` (one job per Dask worker thread, the scheduler balances them) and closes only what it opened.
Unknown backends and unreachable schedulers are one-line `ConfigError`s, raised before any fitting starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from mbi_predict.errors import ConfigError

BACKENDS = ("local", "dask")
#: Seconds to wait for a Dask scheduler before calling it unreachable (short: a typo should fail fast).
CONNECT_TIMEOUT = 5.0


def _connect(scheduler: Any, timeout: float) -> tuple[Any, bool]:
    """(client, opened_here). ``scheduler`` is an address string or an existing ``distributed.Client``."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("validation.backend: dask needs the 'distributed' package (pip install "
                          "'mbi-predict[dev]' or 'distributed')") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ConfigError(f"validation.scheduler: expected a scheduler address such as tcp://127.0.0.1:8786 or a "
                          f"distributed.Client, got {scheduler!r}")
    try:
        client = Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ConfigError(f"validation.scheduler: cannot reach the Dask scheduler at {scheduler} within "
                          f"{timeout:g} s ({reason})") from None
    return client, True


def run_in_order(calls: Iterable[tuple[Callable[..., Any], tuple]], n_jobs: int,
                 on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """``[function(*args) for function, args in calls]``, through joblib's ``Parallel`` in whichever backend is
    active when ``n_jobs != 1``; the results come back in the calls' order and ``on_result`` (a progress bar) hears
    of each as it arrives. One loop for the fold jobs, the run-level batch and the verdict's null refits."""
    if n_jobs == 1:
        results: Iterable[Any] = (function(*args) for function, args in calls)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(function)(*args) for function, args in calls)
    outputs = []
    for output in results:
        outputs.append(output)
        if on_result is not None:
            on_result(output)
    return outputs


def local_workers(n_jobs: int) -> int:
    """``n_jobs`` for local processes, never more than the cores this process may use (-1 stays -1: all)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return n_jobs if n_jobs < 0 else max(1, min(int(n_jobs), cores))


@contextmanager
def execution_backend(backend: str = "local", scheduler: Any = None, n_jobs: int = 1, *,
                      timeout: float = CONNECT_TIMEOUT) -> Iterator[int]:
    """Run the ``joblib.Parallel`` calls inside the block on ``backend``; yield the ``n_jobs`` to give them.

    * ``local``: joblib's default backend (loky processes); yields ``n_jobs`` capped at the machine's cores
      (`local_workers`: asking for 1000 workers on 2 cores spawned dozens of processes for no gain).
    * ``dask``: connects to ``scheduler`` (address, or an existing ``distributed.Client``, which is left open),
      and runs the block inside ``joblib.parallel_config(backend="dask")``; yields ``-1``.
    """
    if backend == "local":
        from mbi_predict.workers import start_workers_without_ctrl_c

        start_workers_without_ctrl_c()  # before the first pool starts: workers leave Ctrl-C to this process
        yield local_workers(n_jobs)
        return
    if backend != "dask":
        raise ConfigError(f"validation.backend: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if scheduler is None:
        raise ConfigError("validation.scheduler: the dask backend needs a scheduler address (e.g. "
                          "tcp://127.0.0.1:8786) or a distributed.Client")
    client, opened = _connect(scheduler, timeout)
    try:
        from joblib import parallel_config

        # joblib's dask backend finds the client through distributed's "current client"; make it ours for the block
        with client.as_current(), parallel_config(backend="dask", client=client):
            yield -1
    finally:
        if opened:
            client.close()
