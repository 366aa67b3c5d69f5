"""Shared helpers of the benchmarks: wall clock, peak memory, machine line. Not part of the package."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from contextlib import contextmanager

GIB = 1024 ** 3


def peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    """Peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


@contextmanager
def stopwatch():
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    out = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


class TreeMemory:
    """Peak RSS of this process plus all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        try:
            import psutil
            self._proc = psutil.Process()
        except ImportError:
            self._proc = None

    def sample(self) -> None:
        if self._proc is None:
            return
        total = 0
        try:
            procs = [self._proc] + self._proc.children(recursive=True)
        except Exception:  # noqa: BLE001 - a process may vanish while we list it
            return
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except Exception:  # noqa: BLE001
                pass
        self.peak = max(self.peak, total)

    def __enter__(self) -> TreeMemory:
        def loop():
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.every)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def machine() -> str:
    mem = ""
    try:
        import psutil
        mem = f", {psutil.virtual_memory().total / GIB:.0f} GiB RAM"
    except ImportError:
        pass
    load = ", load average %.1f %.1f %.1f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{platform.platform()}, python {platform.python_version()}, {os.cpu_count()} cores{mem}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}{load}")


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table of dicts (floats to 3 significant decimals)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (statsmodels' ``proportion_confint``); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=1 - level, method="wilson")
    return float(low), float(high)
