"""Worker processes that leave Ctrl-C to their parent.

Ctrl-C in a terminal (and a batch scheduler's stop of the process group) reaches every process of the group: the
CLI and its loky worker processes. The CLI turns it into its one "interrupted" line and ends the workers itself,
but a worker that receives SIGINT prints its own KeyboardInterrupt traceback on the shared stderr, and when the
signal lands while the worker is still starting (importing joblib's modules in ``python -m ...popen_loky_posix``)
nothing can catch it: no initializer has run yet. A disposition set in the worker comes too late; only one it
inherits comes early enough.

So worker processes are started with SIGINT *blocked*: the signal mask is inherited through fork and kept through
exec, so the worker never sees a Ctrl-C from its first instruction on, and the parent, which still receives it,
shuts the pool down. SIGTERM is left alone (a scheduler's stop ends the workers as before). The mask is set only
for the call that starts workers, in the thread that makes it, so the parent's own Ctrl-C handling is unchanged
(a process-directed SIGINT is delivered to a thread that does not block it, and Python runs its handler in the
main thread in any case).

Why a patch of loky rather than an option: neither joblib nor loky offers a hook that runs before the worker's
interpreter starts importing (``initializer`` runs after); ``ProcessPoolExecutor._adjust_process_count`` is the one
place loky starts worker processes, at the pool's start and when it replaces a worker, and the resource trackers'
``ensure_running`` the place their helper processes start (joblib may start them before any worker, when it
registers its temporary folder; a Ctrl-C that landed there printed "Fatal Python error: init_import_site"). The patch is applied once,
where local jobs start (`parallel.execution_backend`; not at the CLI's start-up, where importing loky cost about
0.13 s that a command without workers need not pay); if loky's internals change it is skipped (and the traceback
may come back), never an error.
"""

from __future__ import annotations

import functools
import signal
from typing import Any

_PATCHED = "_mbi_sigint_blocked"


def _with_sigint_blocked(owner: type, name: str) -> bool:
    """Wrap ``owner.name`` so the processes it starts inherit a blocked SIGINT; True if the wrapper is in place."""
    original = getattr(owner, name, None)
    if original is None:
        return False
    if getattr(original, _PATCHED, False):
        return True

    @functools.wraps(original)
    def blocked(self: Any, *args: Any, **kwargs: Any) -> Any:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return original(self, *args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    setattr(blocked, _PATCHED, True)
    setattr(owner, name, blocked)
    return True


def start_workers_without_ctrl_c() -> bool:
    """Start loky's worker processes, and the resource-tracker processes loky and multiprocessing start beside them
    (joblib may start those first, when it registers its temporary folder), with SIGINT blocked (see the module
    docstring); True if the worker patch is in place."""
    if not hasattr(signal, "pthread_sigmask"):
        return False
    try:
        from joblib.externals.loky.process_executor import ProcessPoolExecutor
    except ImportError:  # pragma: no cover - joblib is a dependency
        return False
    try:  # the trackers: a Ctrl-C while one starts printed "Fatal Python error: init_import_site" and a traceback
        import multiprocessing.resource_tracker as mp_tracker

        from joblib.externals.loky.backend import resource_tracker as loky_tracker

        _with_sigint_blocked(loky_tracker.ResourceTracker, "ensure_running")
        _with_sigint_blocked(mp_tracker.ResourceTracker, "ensure_running")
    except (ImportError, AttributeError):  # pragma: no cover - internals moved: the traceback may come back
        pass
    return _with_sigint_blocked(ProcessPoolExecutor, "_adjust_process_count")
