"""Interrupts and staging folders: how a process that writes outputs survives Ctrl-C, SIGTERM and SIGKILL cleanly.

* `Terminated`: SIGTERM raised like Ctrl-C (`sigterm_interrupts` installs it for a block), so every ``finally``
  removes what it staged; `interrupt_in_chain` finds the interrupt behind an error raised during that cleanup.
* `deferred_interrupts`: hold SIGINT and SIGTERM for the few renames that publish a set of files (or the calls that
  end a tracked run), so an interrupt cannot split them; `InterruptsHeld` holds them for every call of an object (the
  MLflow client of a run: an interrupt raised inside SQLAlchemy's session and connection handling could leave a
  connection mid-transaction and MLflow logging the resulting database error, traceback and all, on stderr).
* `redelivered_interrupts`: an interrupt raised inside a finaliser or weak-reference callback (which the garbage
  collector may run at any line, SQLAlchemy's registry cleanup for one) is swallowed by Python with an "Exception
  ignored in" traceback, and the command would go on as if Ctrl-C had never been pressed. For the block, such an
  interrupt is not printed but delivered again, as its signal, so it surfaces at the next line that can raise it.
* Staging folders name their owner (`staging_prefix`: host and pid), so the next writer removes the ones a SIGKILLed
  process left (`remove_stale_staging`, `process_alive`).

Split out of ``io`` (whose atomic writers use it, and which re-exports every name: ``from mbi_predict.io import
Terminated, ...`` keeps working); standard library only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while outputs were staged: raised like Ctrl-C, so every ``finally`` removes what it staged and
    the command ends with its one "interrupted" line instead of being cut off mid-write."""


#: SIGTERMs this process has turned into exceptions (`note_sigterm`): a library that swallows the exception (an
#: import cut off mid-way that later fails with an AttributeError, say) must not turn the stop into a wrong error
_SIGTERMS: list[int] = []


def note_sigterm(signum: int) -> None:
    """Record that SIGTERM arrived (every handler that raises on SIGTERM calls this first)."""
    _SIGTERMS.append(int(signum))


def forget_sigterms() -> None:
    """Start a command with no SIGTERM on record (a process may run several commands, as tests do)."""
    _SIGTERMS.clear()


def sigterm_received() -> bool:
    """Whether SIGTERM arrived in this process while a handler of this package was installed."""
    return bool(_SIGTERMS)


def interrupt_in_chain(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The interrupt that ended a block: the exception itself, or one it was raised while handling (an error from
    cleanup code that ran because of Ctrl-C or SIGTERM - a worker pool broken by the same Ctrl-C, say, or a thread
    joined before it started - is the interrupt's consequence, not a separate failure). Both links of the chain are
    followed: an exception raised ``from`` another still records the interrupt it replaced as its context."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
    return None


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """For the block, SIGTERM raises `Terminated` in the main thread instead of ending the process at once (so
    staging folders are removed). Installed only where SIGTERM would otherwise end the process without any cleanup
    (the default action, in the main thread); a handler already installed (an experiment run's) is left alone."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        note_sigterm(signum)
        raise Terminated(f"signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def deferred_interrupts(restore: dict[int, Any] | None = None) -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block and deliver the first that arrived when it ends, to the
    handlers in place before the block (or those in ``restore``): for the few renames that publish a set of files,
    or the calls that end a tracked run, so that an interrupt cannot split them. Main thread only (elsewhere a
    no-op: Python runs signal handlers in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous.update(restore or {})
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if pending:
            signal.raise_signal(pending[0])


class InterruptsHeld:
    """A stand-in for ``target`` whose method calls run with SIGINT and SIGTERM held (`deferred_interrupts`): an
    interrupt that arrives during a call is raised when the call has returned. Attributes that are not callable
    are passed through; the target itself is ``.target``."""

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "target", target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.target, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def held(*args: Any, **kwargs: Any) -> Any:
            with deferred_interrupts():
                return value(*args, **kwargs)

        return held


def _signal_of(interrupt: BaseException) -> int:
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


def _send_later(sig: int, delay: float = 0.02) -> None:
    """Send ``sig`` to this process from a short-lived thread after ``delay`` seconds: raised at once, inside the
    unraisable hook, the handler's exception would be swallowed again."""
    def send() -> None:
        time.sleep(delay)
        os.kill(os.getpid(), sig)

    threading.Thread(target=send, name="mbi-redeliver-interrupt", daemon=True).start()


@contextlib.contextmanager
def redelivered_interrupts() -> Iterator[None]:
    """For the block, an interrupt (KeyboardInterrupt, `Terminated`) that Python could not raise because it arrived
    in a finaliser or callback (``sys.unraisablehook``) is sent again as its signal (SIGINT, SIGTERM), silently, from
    a short-lived thread: the handler in place then raises it in the main thread within moments, in ordinary code
    (were it cut off by another finaliser, the same happens again). Other unraisable exceptions (and an interrupt
    whose signal has no Python handler any more) go to the hook that was in place. Main thread only (elsewhere a
    no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        sig = _signal_of(unraisable.exc_value)
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and callable(signal.getsignal(sig)):
            for _ in range(10):
                try:
                    _send_later(sig)
                    return
                except KeyboardInterrupt:  # it came back while this hook still ran (a stalled main thread)
                    continue
                except RuntimeError:  # no new thread at interpreter shutdown: nothing left to interrupt anyway
                    break
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


_STAGING = ".mbi-staging."


def _host_label() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:60] or "host"


def staging_prefix() -> str:
    """``.mbi-staging.<host>.<pid>.``: a staging folder names the process that owns it, so a later process on the
    same host can tell one left behind by a killed process from one still in use."""
    return f"{_STAGING}{_host_label()}.{os.getpid()}."


def remove_stale_staging(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders in ``folder`` whose owner (this host, a pid) is no longer running: what a SIGKILL
    leaves. Folders of other hosts, of live processes, or without an owner in their name are left alone."""
    folder = Path(folder)
    pattern = re.compile(rf"^{re.escape(_STAGING)}(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and match["host"] == _host_label() and entry.is_dir() and not entry.is_symlink() \
                and not process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """True if process ``pid`` of this machine (and PID namespace) exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
