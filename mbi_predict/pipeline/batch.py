"""Where the run's work runs: the execution backend (`execution`) and the run-level batch (`run_batch`).

A stage that needs work done declares it as `Job`s: a plain module-level function and its arguments, so joblib can
ship it to a worker process (or a Dask cluster through joblib's backend). The run-level jobs of every stage (final
models, permutation-null refits, classical interactions, the clustered average effect, the best linear projection)
run as ONE parallel call, in the order the stages declare them (the largest first, so the batch ends evenly); each
job's randomness is derived from the config seed and stable labels, so the outputs are identical to running the jobs
one by one, whatever ``n_jobs`` or the backend.

The fold jobs (`pipeline.folds`) and the verdict's calibration refits (`pipeline.heterogeneity`) are batched the
same way by their own stages, inside the same `execution` block.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from mbi_predict.config import ExperimentConfig
from mbi_predict.parallel import execution_backend, run_in_order


def execution(config: ExperimentConfig) -> AbstractContextManager[int]:
    """``mbi_predict.parallel.execution_backend`` for the config's ``validation`` block: where the jobs run; the
    context yields the ``n_jobs`` to give joblib."""
    validation = config.validation
    return execution_backend(validation.backend, validation.scheduler, validation.n_jobs)


@dataclass(frozen=True)
class Job:
    """One unit of run-level work: ``fn(*args)``, declared by ``stage`` under ``key`` (a model name, an index...)."""

    stage: str
    key: Any
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def run(self) -> Any:
        return self.fn(*self.args)


@dataclass(frozen=True)
class BatchOutputs:
    """The outputs of a batch by stage, each stage's in the order its jobs were declared."""

    by_stage: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)

    def of(self, stage: str) -> list[tuple[Any, Any]]:
        """``[(key, output), ...]`` of one stage (empty when it declared no job)."""
        return list(self.by_stage.get(stage, []))

    def one(self, stage: str) -> Any:
        """The output of a stage that declares at most one job (None when it declared none)."""
        outputs = self.by_stage.get(stage) or [(None, None)]
        return outputs[0][1]


def _run_job(job: Job) -> Any:
    return job.run()


def run_batch(jobs: list[Job], n_jobs: int, on_result: Callable[[Any], None] | None = None) -> BatchOutputs:
    """Run the jobs as one parallel call (serially when ``n_jobs == 1`` or there is at most one job); ``on_result``
    is called with each output as it arrives (in job order), for a progress bar."""
    outputs = run_in_order([(_run_job, (job,)) for job in jobs], 1 if len(jobs) <= 1 else n_jobs, on_result)
    by_stage: dict[str, list[tuple[Any, Any]]] = {}
    for job, output in zip(jobs, outputs):
        by_stage.setdefault(job.stage, []).append((job.key, output))
    return BatchOutputs(by_stage)
