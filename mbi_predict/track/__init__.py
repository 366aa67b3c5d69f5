"""Experiment tracking (MLflow): reads results and logs them; computes nothing."""

from mbi_predict.track.mlflow_log import Tracker, check_tracking_uri, compare, ui_command

__all__ = ["Tracker", "check_tracking_uri", "compare", "ui_command"]
