"""Experiment tracking (MLflow): reads results and logs them; computes nothing.

``ExperimentRun`` (run.py) lays one experiment run out as a parent run with one child run per model, logging what
mapping.py derives from the summary and the artifacts artifacts.py checks; ``compare`` (compare.py) reads the
leaderboard back; ``register_model`` (registry.py) puts a final model in the Model Registry; store.py checks and opens
the store safely; liveness.py ends KILLED the runs whose process died without ending them.
"""

from mbi_predict.track.compare import compare, format_leaderboard, ui_command
from mbi_predict.track.registry import register_model
from mbi_predict.track.run import ExperimentRun, RunTerminated, log_cards, open_run
from mbi_predict.track.store import check_tracking_uri

__all__ = ["ExperimentRun", "RunTerminated", "check_tracking_uri", "compare", "format_leaderboard", "log_cards",
           "open_run",
           "register_model", "ui_command"]
