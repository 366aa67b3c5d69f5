"""How long a run will take and how much memory it will need, estimated before fitting from pilot fits.

Large data and slow settings (a causal forest at 200,000 participants, with the verdict's 19 calibration refits of
every fold) can turn a run into hours. Before the rest of the run is fitted, `estimate_run` times the run's real
fold jobs (`validate.loto.run_fold`: the same code path, every model of the config, each as a full fold job and,
for the models the heterogeneity verdict refits, as a light one) on half of a representative fold and on the whole
of it.

* The folds: the one with the median training size, and its neighbours in size, one per worker of the run (at most
  the cores). Each runs in its own fresh worker process, all at once, as the run's workers will run, so the
  timings include the workers' contention for the cores; the native thread pools are limited as a run's workers
  are (cores / workers). In each: an untimed warm-up on an eighth of the fold (it pays for the first imports of
  the model libraries), then half the fold, then the whole fold.
* The whole fold's full jobs are the run's own jobs (same model, fold and seed): their results come back and the
  run does not fit them again (`pipeline.folds.run_folds`). What the estimate adds to a run is the warm-up, the
  half pilot, the verdict's one light refit per model on the whole fold, and a worker left idle while the other
  finishes a larger fold.
* Why the whole fold: pilots on a quarter and a half, extrapolated two-fold by a power law through them,
  under-stated the fold jobs by 6-25% (RESULTS 20-21). A job is a fixed part (a capped SHAP sample, held-out
  metrics, a causal forest's trees of full-fold size) plus work that grows with the rows, the sub-second timings of
  small pilots are noisy, and the curve bent the wrong way between the pilots and the fold. Before that, pilots on
  a sixteenth and a quarter had under-stated a run 2.4-fold.
* Time: the power law through the half and the whole fold (exponent clipped to [0.3, 1.5]) scales each job from
  the measured fold to every fold's own training rows (folds differ in size; the median fold under-stated the mean
  one), and to all rows for the final refits; the folds measured are averaged. Each job also pays for sending the
  whole prepared data to a worker (pickled and unpickled once, timed here). The jobs the run will still make
  (models x folds less those the pilots ran, the final refits on all trials, ``null_B`` x verdict models x folds
  light refits) are then scheduled in the run's order on the local workers, each job taken by the first worker to
  fall free, as joblib hands them out: a last wave that leaves a worker idle is counted.
* Memory: the largest peak of the pilot processes (the whole fold is the largest pilot), times the workers, plus
  this process's current memory. Before the whole fold is piloted, its peak is projected from the warm-up's and
  the half pilot's (`whole_fold_peak`); when that already exceeds what the machine has, the whole fold is not
  piloted (it would need as much as a run's worker) and the estimate is made from the half pilot alone.
* Tuning: the half pilot tunes with `PILOT_TUNING_TRIALS` trials; its tuning time is scaled to the model's trials
  before the exponent is fitted (the whole fold tunes as the run does).

No library estimates the cost of a pipeline of this kind: this module is ours. It leaves out the run-level batch
other than the final refits (explanations, classical interactions, projection: small next to the folds), MLflow
logging and figures (seconds). Its accuracy was measured against full runs (experiments/benchmarks/RESULTS.md,
sections 21-22, which also give the earlier designs' errors): the fold jobs within 8% (a boosted T-learner with
xgboost and a causal forest at 64,636 rows, two runs each; the causal forest at 191,987 rows, one run), the
verdict's calibration 5-14% under, memory 16% under to 6% over. It is a planning
figure and is printed as such. Time is never a limit; a memory estimate above what the machine has available stops
the run before the rest is fitted (`pipeline.folds.estimate`).

Only data of at least `MIN_ROWS` analysed rows are estimated (below that a run takes minutes at most and the
pilots would be a noticeable share of it).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbi_predict.config import ExperimentConfig
from mbi_predict.models.effect import EFFECT_MODELS
from mbi_predict.validate.folds import Fold, FoldJob, FoldPlan, derive_seed
from mbi_predict.validate.loto import FoldResult, make_jobs, run_fold
from mbi_predict.validate.prepared import PreparedData

#: analysed rows from which a run is estimated before fitting
MIN_ROWS = 50_000
#: the smaller pilot: this fraction of a representative fold (the larger is the whole fold, the run's own jobs)
HALF = 1 / 2
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
    reused: int = 0              # the run's fold jobs the pilots ran (the run does not repeat them)

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


def representative_folds(plan: FoldPlan, count: int = 1) -> list[Fold]:
    """The fold with the median training size (ties: the first in the plan), then its neighbours in size (the next
    larger first), ``count`` in all (at most every fold)."""
    sizes = np.array([len(f.train) for f in plan.folds])
    order = [int(i) for i in np.argsort(sizes, kind="stable")]
    middle = (len(order) - 1) // 2
    picked = [order[middle]]
    step = 1
    while len(picked) < min(count, len(order)):
        for j in (middle + step, middle - step):
            if 0 <= j < len(order) and len(picked) < count:
                picked.append(order[j])
        step += 1
    return [plan.folds[i] for i in picked]


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
            jobs.append((spec.name, True, _light_job(config, model, fold)))
    return jobs


def _light_job(config: ExperimentConfig, model: Any, fold: Fold) -> FoldJob:
    """The verdict's refit of an effect ``model`` on ``fold`` (no intervals, SHAP or predictions kept)."""
    return FoldJob(model, fold, derive_seed(config.seed, model.name, fold.label, "estimate"),
                   config.validation.bootstrap, config.tuning.inner_folds, light=True, groups=config.group_settings())


def fold_pilots(config: ExperimentConfig, data: PreparedData, fold: Fold, verdict_models: list[str],
                run_jobs: list[FoldJob], explainer: Any = None) -> list[tuple[list, PreparedData]]:
    """The pilots on one fold, in the order they run: the untimed warm-up (an eighth), half of the fold, and the
    whole fold, whose full jobs are the run's own (``run_jobs`` of this fold: their results are kept and the run
    does not repeat them) and whose light jobs are the verdict's refits on the real data."""
    pilots = []
    for fraction in (WARM_UP, HALF):
        rows, small = pilot_fold(fold, fraction, derive_seed(config.seed, "estimate", fraction, fold.label))
        jobs = pilot_jobs(config, small, verdict_models, n_full=len(fold.train), explainer=explainer)
        pilots.append((jobs, subset(data, rows)))
    whole = [(job.model.name, False, job) for job in run_jobs if job.fold.label == fold.label]
    for spec in config.models:  # the verdict's refit as the calibration runs it (the model's own tuning)
        if spec.name in verdict_models:
            whole.append((spec.name, True, _light_job(config, spec, fold)))
    pilots.append((whole, data))
    return pilots


def time_jobs(jobs: list[tuple[str, bool, FoldJob]], data: PreparedData,
              keep: bool = False) -> tuple[list[float], int, list, list[float]]:
    """Seconds of each job run here, one after the other, this process's peak resident memory (bytes), with
    ``keep`` the full jobs' results (None for the light ones and without ``keep``), and each job's tuning seconds."""
    import resource

    seconds, results, tuning = [], [], []
    for _, light, job in jobs:
        start = time.perf_counter()
        result = run_fold(job, data)
        seconds.append(time.perf_counter() - start)
        results.append(result if keep and not light else None)
        tuning.append(float(result.timing.get("tune_seconds", 0.0) or 0.0))
    return seconds, int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, results, tuning


def time_pilots(pilots: list[tuple[list, PreparedData]], threads: int | None = None,
                keep: bool = False) -> list[tuple]:
    """`time_jobs` of each pilot in turn, here (smallest first: the peak after each is that pilot's own; with
    ``keep`` the full jobs' results come back), with at most ``threads`` threads in the native libraries, as a run's
    worker has (joblib gives each of its workers the cores divided by the workers; a pilot on both cores timed
    xgboost too fast)."""
    if threads is None:
        return [time_jobs(jobs, data, keep=keep) for jobs, data in pilots]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        return [time_jobs(jobs, data, keep=keep) for jobs, data in pilots]


@contextmanager
def pilot_processes(count: int, threads: int | None) -> Iterator[Callable[..., list[list]]]:
    """``run(per_worker, keep)``: `time_pilots` of each worker's pilots in ``count`` new worker processes of the
    kind the run uses (loky, started without Ctrl-C, `mbi_predict.workers`), all at once, as the run's workers will
    run; each process's peak memory is its pilots' alone. The processes last for the block (the pilots run in
    stages); Ctrl-C, SIGTERM or an error end them at once rather than wait for them."""
    from joblib.externals.loky import ProcessPoolExecutor

    from mbi_predict.workers import start_workers_without_ctrl_c

    start_workers_without_ctrl_c()
    pool = ProcessPoolExecutor(max_workers=count)

    def run(per_worker: list[list[tuple[list, PreparedData]]], keep: bool = False) -> list[list]:
        futures = [pool.submit(time_pilots, pilots, threads, keep) for pilots in per_worker]
        return [future.result() for future in futures]

    try:
        yield run
    except BaseException:
        pool.shutdown(wait=True, kill_workers=True)
        raise
    pool.shutdown(wait=True)


@contextmanager
def pilots_here(count: int, threads: int | None) -> Iterator[Callable[..., list[list]]]:
    """`pilot_processes` in this process, one worker's pilots after the other (tests; ``count`` is not used)."""
    yield lambda per_worker, keep=False: [time_pilots(pilots, threads, keep) for pilots in per_worker]


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


def whole_fold_peak(warm_peak: float, half_peak: float, pilots: list[tuple[list, PreparedData]],
                    data: PreparedData) -> float:
    """A whole-fold pilot process's peak memory (bytes), projected from the warm-up's and the half pilot's peaks.
    Both ran in one task, so both data subsets were held for both peaks: the difference between the peaks is the
    jobs' working memory, extrapolated along a line to the whole fold, and the whole fold holds the whole data in
    place of the two subsets (`PreparedData.__sizeof__`: its arrays)."""
    work = max(0.0, (half_peak - warm_peak) / (HALF - WARM_UP) * (1 - HALF))
    held = pilots[0][1].__sizeof__() + pilots[1][1].__sizeof__()
    return half_peak + work + data.__sizeof__() - held


def exponent(small: float, large: float, ratio: float) -> float:
    """b of a power law time ~ rows^b through (1, small) and (ratio, large), clipped to [0.3, 1.5]."""
    if small <= 0 or large <= 0:
        return 1.0
    return min(max(math.log(large / small) / math.log(ratio), _EXPONENT[0]), _EXPONENT[1])


def estimate_run(config: ExperimentConfig, data: PreparedData, plan: FoldPlan, *, workers: int,
                 verdict_models: list[str], null_B: int, final_models: bool, explainer: Any = None,
                 jobs: list[FoldJob] | None = None, memory_limit: float | None = None,
                 in_process: bool = False) -> tuple[CostEstimate | None, dict[tuple[str, Any], FoldResult]]:
    """The run's estimated wall time and peak memory (None below `MIN_ROWS` rows or without folds), and the results
    of the run's fold jobs the pilots ran, by (model, held-out label): the run uses them instead of refitting.

    ``workers``: the local workers the fold jobs will run on; ``verdict_models``: the effect models the verdict's
    calibration refits ``null_B`` times per fold; ``final_models``: whether every model is refitted on all trials;
    ``explainer``: the fold jobs' SHAP function (`explain.run.explain_fold`, given by the pipeline); ``jobs``: the
    run's fold jobs (default: `validate.loto.make_jobs` of the config). ``memory_limit``: bytes; when the half
    pilots, their peaks extrapolated along a line to the whole fold, say the run would need more, the whole-fold
    pilots (which would need about as much) are not run, and the estimate is made from the half pilots alone (time
    scaled in proportion to the rows), nothing reused. ``in_process``: the pilots of one fold run in this process
    (tests; the memory figure is then not the pilots' own)."""
    if data.n < MIN_ROWS or not plan.folds:
        return None, {}
    started = time.perf_counter()
    from joblib import cpu_count

    threads = max(1, cpu_count() // max(1, workers))  # what joblib gives each worker of the run
    copies = 1 if in_process else max(1, min(workers, cpu_count(), len(plan.folds)))
    folds = representative_folds(plan, copies)
    run_jobs = jobs if jobs is not None else make_jobs(config, plan, explainer=explainer)
    per_worker = [fold_pilots(config, data, fold, verdict_models, run_jobs, explainer) for fold in folds]
    with (pilots_here if in_process else pilot_processes)(len(per_worker), threads) as run:
        # the warm-up and the half pilot in one task (the warm-up must run in the process it warms)
        first = run([pilots[:2] for pilots in per_worker])
        peak = current_rss() + workers * max(whole_fold_peak(warm[1], half[1], pilots, data)
                                             for (warm, half), pilots in zip(first, per_worker))
        whole = None
        if memory_limit is None or peak <= memory_limit:
            whole = run([pilots[2:] for pilots in per_worker], keep=True)
            peak = current_rss() + workers * max(float(w[0][1]) for w in whole)
    transfer = transfer_seconds(data)
    specs = {m.name: m for m in config.models}
    # per job kind (model, light): (seconds at the fold's training rows, exponent, those rows), one per worker
    fits: dict[tuple[str, bool], list[tuple[float, float, int]]] = {}
    done: dict[tuple[str, Any], FoldResult] = {}
    for i, (fold, pilots) in enumerate(zip(folds, per_worker)):
        half_rows = len(pilots[1][0][0][2].fold.train)  # the half pilot's training rows
        half = {}
        seconds_half, _, _, tuning_half = first[i][1]
        for (name, light, _), seconds, tuning in zip(pilots[1][0], seconds_half, tuning_half):
            # the half pilot tunes with PILOT_TUNING_TRIALS trials, the run's jobs with their own: its tuning time
            # (not the final fit, SHAP or metrics) is scaled to the model's trials
            trials = specs[name].tuning.n_trials
            extra = tuning * (trials / PILOT_TUNING_TRIALS - 1) if trials > PILOT_TUNING_TRIALS else 0.0
            half[(name, light)] = seconds + extra
        if whole is None:  # refused on memory: the half pilots scaled in proportion to the rows
            for kind, seconds in half.items():
                fits.setdefault(kind, []).append((seconds, 1.0, half_rows))
            continue
        seconds_whole, _, results, _ = whole[i][0]
        for (name, light, _), seconds, result in zip(pilots[2][0], seconds_whole, results):
            b = exponent(half[(name, light)], seconds, len(fold.train) / half_rows)
            fits.setdefault((name, light), []).append((seconds, b, len(fold.train)))
            if result is not None:
                done[(name, fold.label)] = result

    def job_seconds(kind: tuple[str, bool], rows: int) -> float:
        """The mean over the measured folds of their seconds scaled to ``rows`` training rows by their power law,
        plus sending the data once."""
        return float(np.mean([seconds * (rows / n) ** b for seconds, b, n in fits[kind]])) + transfer

    durations: dict[str, list[float]] = {"folds": [], "final models": [], "verdict calibration": []}
    by_model: dict[str, float] = {}
    all_rows = int(data.n)  # a final refit is on every analysed row (`validate.loto.fit_final_model`)
    for spec in config.models:  # the run's order: model, then fold; a job the pilots ran is not run again
        left = [job_seconds((spec.name, False), len(f.train)) for f in plan.folds if (spec.name, f.label) not in done]
        durations["folds"] += left
        by_model[spec.name] = sum(left) + sum(job_seconds((spec.name, False), len(f.train)) for f in folds
                                              if (spec.name, f.label) in done)
        if final_models:
            durations["final models"].append(job_seconds((spec.name, False), all_rows))
            by_model[spec.name] += durations["final models"][-1]
    per_draw = []  # one draw's light refits: model, then fold
    for name in verdict_models:
        refits = [job_seconds((name, True), len(f.train)) for f in plan.folds] if (name, True) in fits else []
        per_draw += refits
        by_model[name] = by_model.get(name, 0.0) + null_B * sum(refits)
    durations["verdict calibration"] = per_draw * null_B  # the calibration's order: draw, model, fold
    parts = {name: makespan(seconds, workers) for name, seconds in durations.items()}
    exponents = {spec.name: round(float(np.mean([b for _, b, _ in fits[(spec.name, False)]])), 2)
                 for spec in config.models}
    found = CostEstimate(rows=int(data.n), folds=len(plan.folds), workers=workers,
                         seconds=float(sum(parts.values())), peak_bytes=float(peak),
                         parts={k: float(v) for k, v in parts.items()},
                         by_model={k: float(v) for k, v in by_model.items()},
                         pilot_seconds=time.perf_counter() - started, exponents=exponents, reused=len(done))
    return found, done
