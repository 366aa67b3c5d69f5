"""How long a run will take and how much memory it will need, estimated before fitting from two pilot fits.

Large data and slow settings (a causal forest at 200,000 participants, with the verdict's 19 calibration refits of
every fold) can turn a run into hours. Before the first fold is fitted, `estimate_run` times the run's real fold
jobs (`validate.loto.run_fold`: the same code path, every model of the config, each as a full fold job and, for the
models the heterogeneity verdict refits, as a light one) on a quarter and a half of one representative fold.

* The fold: the one with the median training size; training and held-out rows subsampled alike, seeded.
* The pilots run one after the other, smallest first, after an untimed warm-up pass on an eighth (which pays for the
  first imports of the model libraries), in fresh worker processes: as many at once as the run will have workers
  (at most the cores), each running every pilot, so the timings include the workers' contention for the cores,
  and each job's time is the mean over them. The native thread pools are limited as a run's workers are (cores /
  workers).
* Why a quarter and a half: pilots on a sixteenth and a quarter cost less but extrapolated badly. Fixed costs
  dominate at such sizes, the fitted exponents came out at 0.4-0.5 and the run was underestimated 2.4-fold. Half a
  fold of every job kind is a small share of a run of dozens of folds (and of ``null_B`` times as many refits).
* Time: a power law through the two timings (exponent clipped to [0.3, 1.5]) scales each job to every fold's own
  training rows (folds differ in size; the median fold under-stated the mean one) and to all rows for the final
  refits. Each job also pays for sending the whole prepared data to a worker (pickled and unpickled once, timed
  here: the pilots, on a subset in one process, do not see it). The jobs a run will make (models x folds, the final
  refits on all trials, ``null_B`` x verdict models x folds light refits) are then scheduled in the run's order on
  the local workers, each job taken by the first worker to fall free, as joblib hands them out: a last wave that
  leaves a worker idle is counted, which dividing the total by the workers did not.
* Memory: a line through the two pilots' peaks (the peak after each pilot is its own), extrapolated to the full
  fold, times the workers, plus this process's current memory.

No library estimates the cost of a pipeline of this kind: this module is ours. It leaves out the run-level batch
other than the final refits (explanations, classical interactions, projection: small next to the folds), MLflow
logging and figures (seconds), and tuning beyond the pilot's two trials (scaled by the trial count). Its accuracy
was measured against full runs (experiments/benchmarks/RESULTS.md, sections 18 and 20): fold jobs from 23% under
to 6% under, the verdict's calibration from 35% under to 80% over (four runs of one case), memory 1% over to 21%
under. It is a planning figure and is printed as such. Time is
never a limit; a memory estimate above what the machine has available stops the run before fitting
(`pipeline.folds.estimate`).

Only data of at least `MIN_ROWS` analysed rows are estimated (below that a run takes minutes at most and the
pilots would be a noticeable share of it).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig
from mbi_predict.models.effect import EFFECT_MODELS
from mbi_predict.validate.folds import Fold, FoldJob, FoldPlan, derive_seed
from mbi_predict.validate.loto import run_fold
from mbi_predict.validate.prepared import PreparedData

#: analysed rows from which a run is estimated before fitting
MIN_ROWS = 50_000
#: the two pilot fractions of the representative fold
FRACTIONS = (1 / 4, 1 / 2)
#: an untimed first pass, in the same process: the first job of a fresh process pays for importing the model
#: libraries (seconds), which would flatten the fitted exponent of fast models
WARM_UP = 1 / 8
#: held-out rows a pilot keeps at least (all of a smaller held-out trial)
MIN_PILOT_TEST = 400
#: tuning trials a pilot runs (the estimate scales by the model's trial count)
PILOT_TUNING_TRIALS = 2
_EXPONENT = (0.3, 1.5)


@dataclass(frozen=True)
class CostEstimate:
    """The estimated wall time and peak memory of a run (see the module docstring for what they include)."""

    rows: int                    # analysed rows
    folds: int
    workers: int
    seconds: float               # wall, all estimated parts
    peak_bytes: float            # this process plus the workers
    parts: dict[str, float]      # wall seconds by part: folds, final models, verdict calibration
    by_model: dict[str, float]   # CPU seconds by model, all parts
    pilot_seconds: float         # what estimating took
    exponents: dict[str, float] = field(default_factory=dict)  # fitted time ~ rows^b per model

    @property
    def dominant(self) -> str:
        return max(self.by_model, key=self.by_model.get) if self.by_model else ""

    def line(self) -> str:
        """The one line shown before fitting (the estimate is made for the local backend only)."""
        parts = ", ".join(f"{name} {_duration(value)}" for name, value in self.parts.items() if value >= 1)
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        text = (f"estimated {_duration(self.seconds)} of fitting and {self.peak_bytes / 2**30:.1f} GiB peak memory "
                f"for {self.rows:,} participants in {self.folds} folds on {workers} ({parts}; mostly {self.dominant})")
        if self.seconds > 600:
            text += "; validation.backend: dask with a scheduler spreads the fold jobs over a cluster"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dominant": self.dominant}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def representative_fold(plan: FoldPlan) -> Fold:
    """The fold with the median training size (ties: the first in the plan)."""
    sizes = np.array([len(f.train) for f in plan.folds])
    order = np.argsort(sizes, kind="stable")
    return plan.folds[int(order[(len(order) - 1) // 2])]


def subset(data: PreparedData, rows: np.ndarray) -> PreparedData:
    """The prepared data restricted to ``rows`` (positions), in that order."""
    take = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
    return dataclasses.replace(data, X=data.X.iloc[rows].reset_index(drop=True), y=data.y[rows],
                               trial=data.trial[rows], participant=data.participant[rows], arm=data.arm[rows],
                               truth_cate=take(data.truth_cate), deteriorated=take(data.deteriorated))


def pilot_fold(fold: Fold, fraction: float, seed: int) -> tuple[np.ndarray, Fold]:
    """(rows of the data, the fold in those rows' positions): ``fraction`` of the fold's training rows and of its
    held-out rows, but at least `MIN_PILOT_TEST` held-out rows (or all): an effect model's held-out metrics need
    enough participants in each arm of the held-out trial. Drawn without replacement."""
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(fold.train, max(2, round(len(fold.train) * fraction)), replace=False))
    n_test = min(len(fold.test), max(round(len(fold.test) * fraction), MIN_PILOT_TEST))
    test = np.sort(rng.choice(fold.test, n_test, replace=False))
    rows = np.concatenate([train, test])
    return rows, Fold(fold.label, np.arange(len(train)), np.arange(len(train), len(rows)))


def pilot_model(spec: Any, n_full: int, n_pilot: int) -> Any:
    """The model config a pilot fits: tuning capped at `PILOT_TUNING_TRIALS` trials, and, for an estimator whose
    work stops growing with the rows past some size (``pilot_params``: the causal forest's rows per tree), the
    settings a fit on the full fold's ``n_full`` training rows would use, on the pilot's ``n_pilot``."""
    update: dict[str, Any] = {}
    if spec.tuning.n_trials > PILOT_TUNING_TRIALS:
        update["tuning"] = spec.tuning.model_copy(update={"n_trials": PILOT_TUNING_TRIALS})
    entry = EFFECT_MODELS.get(spec.estimator) if spec.kind == "effect" else None
    hook = getattr(entry[0], "pilot_params", None) if entry else None
    if hook is not None:
        update["params"] = {**spec.params, **hook(dict(spec.params), n_full, n_pilot)}
    return spec.model_copy(update=update) if update else spec


def pilot_jobs(config: ExperimentConfig, fold: Fold, verdict_models: list[str], *, n_full: int | None = None,
               explainer: Any = None) -> list[tuple[str, bool, FoldJob]]:
    """(model name, light, job) on ``fold``: every model's full fold job (SHAP by ``explainer`` where the model's
    explain settings ask, as in the run), and a light one for the verdict's models; ``n_full``: the training rows
    of the fold the pilot stands for (`pilot_model`)."""
    jobs = []
    for spec in config.models:
        model = pilot_model(spec, n_full or len(fold.train), len(fold.train))
        seed = derive_seed(config.seed, spec.name, fold.label, "estimate")
        groups = config.group_settings() if spec.kind == "effect" else None
        jobs.append((spec.name, False, FoldJob(model, fold, seed, config.validation.bootstrap,
                                               config.tuning.inner_folds, explain=config.explain_settings(spec.name),
                                               groups=groups, explainer=explainer)))
        if spec.name in verdict_models:
            jobs.append((spec.name, True, FoldJob(model, fold, seed, config.validation.bootstrap,
                                                  config.tuning.inner_folds, light=True, groups=groups)))
    return jobs


def time_jobs(jobs: list[tuple[str, bool, FoldJob]], data: PreparedData) -> tuple[list[float], int]:
    """Seconds of each job run here, one after the other, and this process's peak resident memory (bytes)."""
    import resource

    seconds = []
    for _, _, job in jobs:
        start = time.perf_counter()
        run_fold(job, data)
        seconds.append(time.perf_counter() - start)
    return seconds, int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def time_pilots(pilots: list[tuple[list, PreparedData]], threads: int | None = None) -> list[tuple[list[float], int]]:
    """`time_jobs` of each pilot in turn, here (smallest first: the peak after each is that pilot's own), with at
    most ``threads`` threads in the native libraries, as a run's worker has (joblib gives each of its workers the
    cores divided by the workers; a pilot on both cores timed xgboost too fast)."""
    if threads is None:
        return [time_jobs(jobs, data) for jobs, data in pilots]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return [time_jobs(jobs, data) for jobs, data in pilots]


def _in_fresh_process(pilots, threads: int | None = None, copies: int = 1) -> list[tuple[list[float], int]]:
    """`time_pilots` in ``copies`` new worker processes of the kind the run uses (loky, started without Ctrl-C,
    `mbi_predict.workers`), all at once, as the run's workers will run: each job's time is the mean over the
    copies, the peak memory the largest copy's own (one process's, the pilots' alone)."""
    from joblib.externals.loky import ProcessPoolExecutor

    from mbi_predict.workers import start_workers_without_ctrl_c

    start_workers_without_ctrl_c()
    pool = ProcessPoolExecutor(max_workers=copies)
    try:
        futures = [pool.submit(time_pilots, pilots, threads) for _ in range(copies)]
        runs = [future.result() for future in futures]
    except BaseException:  # Ctrl-C, SIGTERM or an error: end the pilot now rather than wait for it
        pool.shutdown(wait=True, kill_workers=True)
        raise
    pool.shutdown(wait=True)
    return combine_copies(runs)


def combine_copies(runs: list[list[tuple[list[float], int]]]) -> list[tuple[list[float], int]]:
    """The pilots timed in several processes at once, as one: per pilot, each job's mean seconds over the copies
    (which also halves the noise of a single sub-second timing) and the largest copy's peak memory."""
    return [([float(np.mean(times)) for times in zip(*(run[i][0] for run in runs))], max(run[i][1] for run in runs))
            for i in range(len(runs[0]))]


def makespan(durations: list[float], workers: int) -> float:
    """Wall seconds of jobs run in the order given on ``workers`` processes, each job taken by the first process to
    fall free (how joblib hands out a run's jobs): the last wave's idle workers are counted, which dividing the
    total by the workers is not."""
    free = [0.0] * max(1, workers)
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def transfer_seconds(data: PreparedData) -> float:
    """Seconds to send the prepared data to a worker once (pickled here, unpickled there): every fold job and
    every null refit ships its data, which the pilots, run on a small subset in one process, do not see."""
    import pickle

    start = time.perf_counter()
    pickle.loads(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return time.perf_counter() - start


def current_rss() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def available_memory() -> float | None:
    """Bytes the machine has available now (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def extrapolate(small: float, large: float, ratio: float, factor: float) -> tuple[float, float]:
    """(value at ``factor`` x the large pilot, exponent): power law through (1, small) and (ratio, large)."""
    if small <= 0 or large <= 0:
        return large * factor, 1.0
    b = min(max(math.log(large / small) / math.log(ratio), _EXPONENT[0]), _EXPONENT[1])
    return large * factor ** b, b


def job_seconds(pilot: float, scale: float, exponent: float, tuned: float, transfer: float) -> float:
    """One job's seconds: the larger pilot's ``pilot`` seconds scaled to ``scale`` x its training rows by the power
    law, times the tuning trials' factor, plus sending the data once (each fold at its own size, not the median's)."""
    return pilot * scale ** exponent * tuned + transfer


def estimate_run(config: ExperimentConfig, data: PreparedData, plan: FoldPlan, *, workers: int,
                 verdict_models: list[str], null_B: int, final_models: bool, explainer: Any = None,
                 in_process: bool = False) -> CostEstimate | None:
    """The run's estimated wall time and peak memory, or None below `MIN_ROWS` rows or without folds.

    ``workers``: the local workers the fold jobs will run on; ``verdict_models``: the effect models the verdict's
    calibration refits ``null_B`` times per fold; ``final_models``: whether every model is refitted on all trials;
    ``explainer``: the fold jobs' SHAP function (`explain.run.explain_fold`, given by the pipeline).
    ``in_process``: time the pilots in this process (tests; the memory figure is then not the pilots' own)."""
    if data.n < MIN_ROWS or not plan.folds:
        return None
    started = time.perf_counter()
    fold = representative_fold(plan)
    pilots = []
    for fraction in (WARM_UP, *FRACTIONS):
        rows, small = pilot_fold(fold, fraction, derive_seed(config.seed, "estimate", fraction))
        jobs = pilot_jobs(config, small, verdict_models, n_full=len(fold.train), explainer=explainer)
        pilots.append((jobs, subset(data, rows)))
        pilot_train = len(small.train)  # the last: the larger pilot's training rows
    from joblib import cpu_count

    threads = max(1, cpu_count() // max(1, workers))  # what joblib gives each worker of the run
    if in_process:
        measured = time_pilots(pilots, threads)
    else:  # as many pilot processes at once as the run will have workers (at most the cores): their contention
        measured = _in_fresh_process(pilots, threads, copies=max(1, min(workers, cpu_count())))
    measured = measured[1:]  # the warm-up is not used
    transfer = transfer_seconds(data)
    timings, peaks = [seconds for seconds, _ in measured], [peak for _, peak in measured]
    ratio = FRACTIONS[1] / FRACTIONS[0]
    train_sizes = [len(f.train) for f in plan.folds]
    all_rows = len(fold.train) + len(fold.test)  # a refit on all trials
    n_folds = len(plan.folds)
    durations: dict[str, list[float]] = {"folds": [], "final models": [], "verdict calibration": []}
    light_jobs: dict[str, list[float]] = {}
    by_model: dict[str, float] = {}
    exponents: dict[str, float] = {}
    specs = {m.name: m for m in config.models}
    for (name, light, _), small, large in zip(pilots[-1][0], timings[0], timings[1]):
        _, b = extrapolate(small, large, ratio, 1.0)
        trials = specs[name].tuning.n_trials
        # the pilots tune with PILOT_TUNING_TRIALS; the fit scales with the trials
        tuned = trials / PILOT_TUNING_TRIALS if trials > PILOT_TUNING_TRIALS else 1.0
        per_fold = [job_seconds(large, rows / pilot_train, b, tuned, transfer) for rows in train_sizes]
        if light:
            light_jobs[name] = per_fold
            by_model[name] = by_model.get(name, 0.0) + null_B * sum(per_fold)
            continue
        exponents[name] = round(b, 2)
        durations["folds"] += per_fold  # the run's order: model, then fold
        spent = sum(per_fold)
        if final_models:
            durations["final models"].append(job_seconds(large, all_rows / pilot_train, b, tuned, transfer))
            spent += durations["final models"][-1]
        by_model[name] = by_model.get(name, 0.0) + spent
    for _ in range(null_B):  # the calibration's order: draw, model, fold
        for name in light_jobs:
            durations["verdict calibration"] += light_jobs[name]
    parts = {name: makespan(jobs, workers) for name, jobs in durations.items()}
    small_peak, large_peak = peaks
    per_row = max(0.0, (large_peak - small_peak) / (len(fold.train) + len(fold.test)) / (FRACTIONS[1] - FRACTIONS[0]))
    worker_peak = large_peak + per_row * (1 - FRACTIONS[1]) * (len(fold.train) + len(fold.test))
    peak = current_rss() + workers * worker_peak
    return CostEstimate(rows=int(data.n), folds=n_folds, workers=workers, seconds=float(sum(parts.values())),
                        peak_bytes=float(peak), parts={k: float(v) for k, v in parts.items()},
                        by_model={k: float(v) for k, v in by_model.items()},
                        pilot_seconds=time.perf_counter() - started, exponents=exponents)
