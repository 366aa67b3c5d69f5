"""mbi_predict: who benefits from mindfulness-based interventions, from individual participant data of many trials.

The public Python API (the CLI is a thin layer over it)::

    from mbi_predict import harmonise, pool, TLearner, LeaveOneTrialOut, validate_across_trials, run_experiment

Names are imported lazily on first use (PEP 562 module ``__getattr__``), so ``import mbi_predict`` and
``mbi-predict --help`` do not pay for scikit-learn, econml, MLflow or matplotlib.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("mbi-predict")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0+unknown"

#: public name -> the module that defines it
_EXPORTS = {
    "TLearner": "mbi_predict.models.effect",
    "SLearner": "mbi_predict.models.effect",
    "XLearner": "mbi_predict.models.effect",
    "DRLearner": "mbi_predict.models.effect",
    "CausalForest": "mbi_predict.models.effect",
    "InteractionLinear": "mbi_predict.models.effect",
    "LeaveOneTrialOut": "mbi_predict.validate.splitters",
    "validate_across_trials": "mbi_predict.validate.api",
    "run_experiment": "mbi_predict.runner",
    "harmonise": "mbi_predict.data.harmonise",
    "pool": "mbi_predict.meta.pool",
}

__all__ = [*_EXPORTS, "load_run"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from mbi_predict.data.harmonise import harmonise
    from mbi_predict.meta.pool import pool
    from mbi_predict.models.effect import CausalForest, DRLearner, InteractionLinear, SLearner, TLearner, XLearner
    from mbi_predict.runner import run_experiment
    from mbi_predict.validate.api import validate_across_trials
    from mbi_predict.validate.splitters import LeaveOneTrialOut


def load_run(path_or_run_dir, *, tracking_uri: str | None = None) -> dict:
    """The summary (the parsed ``summary.json``) of a finished ``run_experiment`` / ``mbi-predict run``: a run
    folder, its ``summary.json``, or an MLflow run id (read from ``tracking_uri``).

    Wraps `mbi_predict.report.card_source.load_summary`, the loader model cards and ``mbi-predict explain`` use; a
    missing folder or file is a one-line `mbi_predict.errors.ConfigError` naming the path.
    """
    import re
    from pathlib import Path

    from mbi_predict.errors import ConfigError

    path = Path(str(path_or_run_dir))
    if path.is_file() and path.name == "summary.json":
        path = path.parent
    if not path.is_dir() and not re.fullmatch(r"[0-9a-f]{32}", str(path_or_run_dir)):
        raise ConfigError("no run here: expected a run folder holding summary.json (or an MLflow run id)",
                          file=str(path))
    from mbi_predict.deploy import ModelLookupError
    from mbi_predict.report.card_source import load_summary

    try:
        return load_summary(path if path.is_dir() else str(path_or_run_dir), tracking_uri=tracking_uri).summary
    except ModelLookupError as exc:
        raise ConfigError(str(exc)) from None


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mbi_predict' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
