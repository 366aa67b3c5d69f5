"""The run's progress bar over fold jobs and tuning trials (`Progress`), and a spinner for a stage without steps
(`status`); no-ops when switched off.

rich degrades to plain, non-animated output when stderr is not a terminal, so piping or CI logs are not broken.
Progress only observes the stages it is given (callbacks: the fold jobs, the run-level batch, the verdict's
calibration refits); it never touches results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as _RichProgress

from mbi_predict.validate.loto import FoldResult


class Progress:
    """A rich progress bar over a stage's jobs (by default the held-out folds) and tuning trials; a no-op when
    switched off."""

    def __init__(self, enabled: bool, n_jobs: int, n_trials: int = 0, label: str = "held-out folds") -> None:
        self.enabled = enabled
        if not enabled:
            return
        self.bar = _RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.folds = self.bar.add_task(label, total=n_jobs)
        self.trials = self.bar.add_task("tuning trials", total=n_trials) if n_trials else None

    def __enter__(self) -> Progress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def on_trial(self) -> None:
        if self.enabled and self.trials is not None:
            self.bar.advance(self.trials)

    def advance(self, *_: object) -> None:
        """One job of the stage done (any arguments, so it can be a stage's result callback)."""
        if self.enabled:
            self.bar.advance(self.folds)

    def on_result(self, parallel: bool) -> Callable[[FoldResult], None]:
        def advance(result: FoldResult) -> None:
            if not self.enabled:
                return
            self.bar.advance(self.folds)
            if parallel and self.trials is not None and result.tuning:
                self.bar.advance(self.trials, result.tuning["n_trials"])
        return advance


@contextmanager
def status(enabled: bool, text: str) -> Iterator[None]:
    """A transient spinner with ``text`` on stderr for the block (a stage that has no steps to count)."""
    if not enabled:
        yield
        return
    with Console(stderr=True).status(text):
        yield
