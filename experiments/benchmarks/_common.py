"""Shared helpers of the benchmarks: wall clock, peak memory, machine line, the provenance every raw row carries.
Not part of the package."""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

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


#: the simulator's outcome and its true individual effect, scored by the effect-learner benchmarks
OUTCOME = "distress_fu1_6"
TRUTH = "true_effect_passive_distress_fu1_6"


def simulated_folds(scenario: str, seed: int, max_folds: int | None = None):
    """Leave-one-trial-out folds of one simulated consortium (13 trials, 2,371 participants; MBI vs passive
    control), as an effect learner sees them: ``(train rows' encoded covariates, held-out rows' encoded covariates,
    y, arm and trial of the training rows with an observed outcome, the held-out rows' true effects)`` per fold.
    The covariates go through the toolkit's fold-fitted transformer, fitted on the training rows only."""
    import numpy as np

    from mbi_predict.data.schema import check_ipd
    from mbi_predict.data.simulate import simulate_latent
    from mbi_predict.models.preprocess import make_preprocessor
    from mbi_predict.validate.loto import plan_folds, prepare_data

    consortium = simulate_latent(scenario, seed=seed, n_trials=13, n=2371)
    data = prepare_data(check_ipd(consortium.ipd), outcome=OUTCOME, covariates="all", control_type="passive")
    truth = consortium.truth.set_index("participant_id")[TRUTH].reindex(data.participant).to_numpy(dtype=float)
    plan = plan_folds(data, scheme="loto", min_trial_size=20, seed=seed)
    for fold in plan.folds[:max_folds] if max_folds else plan.folds:
        train = fold.train[np.isfinite(data.y[fold.train])]
        features = make_preprocessor(data.features, use_arm=False, seed=seed).fit(data.X.iloc[train])
        yield (features.transform(data.X.iloc[train]), features.transform(data.X.iloc[fold.test]), data.y[train],
               data.arm[train], data.trial[train], truth[fold.test])


def _git(*args: str) -> str:
    import subprocess

    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def provenance(started: dict | None = None) -> dict:
    """Where and when a measurement was made, for its raw row: the commit (``dirty`` when the code that measures
    differs from it: the package, this file or the running script; new untracked files are not counted, since the
    measured code cannot import them without a tracked change), the UTC time, the load averages (1, 5, 15 min),
    cores and memory. Called with the dict made at the start of the measurement, it returns that dict with the end
    time and the load at the end (a timing is only as good as the quietest of the two)."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    now = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    if started is not None:
        return {**started, "ended_utc": now, "load_end": load}
    ram = None
    try:
        import psutil
        ram = round(psutil.virtual_memory().total / GIB, 1)
    except ImportError:
        pass
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    measuring = [":/mbi_predict", ":/pyproject.toml", str(Path(__file__).resolve())]
    if script is not None and script.suffix == ".py" and script.exists():
        measuring.append(str(script))
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *measuring)
    return {"commit": _git("rev-parse", "--short", "HEAD") or None, "dirty": bool(status), "started_utc": now,
            "load": load, "cores": os.cpu_count(), "ram_gib": ram, "python": platform.python_version()}


def append_row(path: Path, row: dict) -> None:
    """Append one JSON row to a JSON-lines file of raw results (flushed, so a stopped benchmark keeps its rows)."""
    import json

    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
