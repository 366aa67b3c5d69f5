"""The final model as one MLflow pyfunc (`MBIPyfuncModel`: a prognostic pipeline or a CATE model with its
fold-style preprocessing, plus its training envelope) and `log_final_model`, which logs it with the package code and
pinned requirements so it loads and serves in a fresh environment.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Literal


# MBIPyfuncModel.predict has no type hints on purpose (see there); MLflow warns about that when the class is defined,
# i.e. on every import of this module, inside its own `catch_warnings(); simplefilter("once")`, which outranks any
# process-wide filter. The class therefore opts out of the check it would only warn from
# (`_skip_type_hint_validation`); the filter below covers the same nudge where MLflow raises it outside that context.
TYPE_HINT_WARNING = r".*Add type hints to the `predict` method"
warnings.filterwarnings("ignore", message=TYPE_HINT_WARNING, category=UserWarning)

import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mbi_predict.deploy.envelope import out_of_distribution, synthetic_example  # noqa: E402

Kind = Literal["prognostic", "effect"]
PROGNOSTIC_OUTPUTS = ("prediction",)
EFFECT_OUTPUTS = ("cate", "cate_low", "cate_high")
OOD_OUTPUTS = ("out_of_distribution", "ood_reasons")


def _used_columns(transformer: Any) -> set[str]:
    """The input columns a fitted ColumnTransformer actually reads (dropped ones excluded)."""
    used: set[str] = set()
    for _, step, columns in getattr(transformer, "transformers_", []):
        if step == "drop" or isinstance(columns, slice):
            continue
        names = np.asarray(getattr(transformer, "feature_names_in_", []))
        for column in np.atleast_1d(columns):
            used.add(str(names[column]) if isinstance(column, (int, np.integer)) and names.size else str(column))
    return used


class MBIPyfuncModel(mlflow.pyfunc.PythonModel):
    """A fitted prognostic pipeline or CATE model, plus its training envelope, as one pyfunc model."""

    # no type-hint validation: predict takes no type hints (see there), and MLflow's check would only warn about it,
    # twice on stderr before any command's output; without hints MLflow's wrapper is a pass-through anyway
    _skip_type_hint_validation = True

    def __init__(self, *, kind: Kind, fitted: Any, features: list[str], task: str, envelope: dict[str, Any],
                 preprocess: Any = None, alpha: float = 0.05) -> None:
        if kind not in ("prognostic", "effect"):
            raise ValueError(f"kind must be 'prognostic' or 'effect', not {kind!r}")
        if kind == "effect" and preprocess is None:
            raise ValueError("an effect model needs the fitted preprocessing it was trained behind (preprocess=)")
        self.kind, self.fitted, self.features, self.task = kind, fitted, list(features), task
        self.envelope, self.preprocess, self.alpha = envelope, preprocess, float(alpha)
        transformer = preprocess if kind == "effect" else fitted.named_steps.get("features")
        self._fitted_columns = [str(c) for c in getattr(transformer, "feature_names_in_", features)]
        unknown = sorted(_used_columns(transformer) - set(self.features)) if transformer is not None else []
        if unknown:
            raise ValueError(f"features misses columns the model reads: {', '.join(unknown)}")

    @property
    def outputs(self) -> tuple[str, ...]:
        return (PROGNOSTIC_OUTPUTS if self.kind == "prognostic" else EFFECT_OUTPUTS) + OOD_OUTPUTS

    def _model_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns the fitted transformer was fitted on, numeric as float and categoricals as object/NaN.

        Columns it saw but does not read (e.g. the arm behind a control-only risk model) are filled with NaN.
        """
        out = pd.DataFrame(index=range(len(frame)))
        for column in self._fitted_columns:
            if column not in frame.columns:
                out[column] = np.nan
            elif column in self.envelope["numeric"]:
                out[column] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            else:
                values = frame[column].astype(object).to_numpy()
                out[column] = pd.Series(values, dtype=object).where(pd.notna(values), np.nan)
        return out

    # no type hints on predict: MLflow 3 would turn them into a second, conflicting input schema
    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        X = self._model_frame(frame)
        if self.kind == "prognostic":
            from mbi_predict.models.prognostic import predict_outcome

            result = pd.DataFrame({"prediction": predict_outcome(self.fitted, X, self.task)})
        else:
            result = self._predict_effect(X)
        flags, reasons = out_of_distribution(frame, self.envelope)
        result["out_of_distribution"] = flags
        result["ood_reasons"] = pd.Series(reasons, dtype=object)
        return result

    def _predict_effect(self, X: pd.DataFrame) -> pd.DataFrame:
        from mbi_predict.errors import ConfigError

        design = self.preprocess.transform(X)
        cate = np.asarray(self.fitted.effect(design), dtype=float).reshape(-1)
        try:
            low, high = self.fitted.effect_interval(design, alpha=self.alpha)
            low, high = np.asarray(low, float).reshape(-1), np.asarray(high, float).reshape(-1)
        except ConfigError:
            # estimators without a defensible pointwise interval refuse; NaN says "no interval", not "zero width"
            low = high = np.full(cate.shape, np.nan)
        return pd.DataFrame({"cate": cate, "cate_low": low, "cate_high": high})


#: the distributions a logged model needs at load time, beside the package code it ships with (``code_paths``):
#: unpickling the model and importing ``mbi_predict`` (config, schema, models) need exactly these
_RUNTIME_DISTRIBUTIONS = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn", "scipy", "pydantic", "pyyaml")


def _requirements(python_model: Any = None) -> list[str]:
    """pip requirements pinned to what is installed here (``importlib.metadata``), so a fresh environment built
    from the model's requirements.txt rebuilds the same model.

    ``mbi-predict`` itself is NOT pinned (it is on no package index): its code ships with the model through
    ``code_paths``. xgboost is pinned as the distribution actually installed (``xgboost-cpu`` on Linux, else
    ``xgboost``) and, like econml, only when the pickled model refers to it.
    """
    from mbi_predict.io import installed_distribution

    def pinned(*names: str) -> str | None:
        found = installed_distribution(*names)
        return None if found is None else f"{found[0]}=={found[1]}"

    needs: set[str] = set()
    if python_model is not None:
        import cloudpickle

        blob = cloudpickle.dumps(python_model)
        needs = {module for module in ("xgboost", "econml") if module.encode() in blob}
    pins = [pinned(name) for name in _RUNTIME_DISTRIBUTIONS]
    if "xgboost" in needs:
        pins.append(pinned("xgboost-cpu", "xgboost"))
    if "econml" in needs:
        pins.append(pinned("econml"))
    return [pin for pin in pins if pin]


def _package_code(folder: Path) -> Path:
    """A copy of the ``mbi_predict`` package (sources and resources, no caches) under ``folder``, for
    ``code_paths``: the model then loads wherever its requirements are installed, without mbi-predict."""
    import shutil

    import mbi_predict

    target = folder / "mbi_predict"
    shutil.copytree(Path(mbi_predict.__file__).resolve().parent, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*"))
    return target


def log_final_model(fitted: Any, *, kind: Kind, features: list[str], task: str, envelope: dict[str, Any],
                    name: str, preprocess: Any = None, alpha: float = 0.05, tags: dict[str, str] | None = None,
                    params: dict[str, Any] | None = None) -> str:
    """Log the final (all-trials) model inside the active MLflow run; return its model URI.

    ``fitted``: a fitted prognostic Pipeline (kind="prognostic") or a fitted CATE estimator (kind="effect", with
    ``preprocess`` the fitted ColumnTransformer its X came through). ``features``: the input columns a user must
    give (the covariates, plus ``arm`` for prognostic models that use it). ``envelope``: from
    `envelope_from_training` on the training frame. The signature is inferred on a synthetic example.

    The model ships the ``mbi_predict`` package (``code_paths``) and pins the installed versions of its runtime
    dependencies (`_requirements`), so it loads and serves in a fresh environment built from its own
    requirements.txt. ``tags``/``params`` go to the MLflow 3 LoggedModel.
    """
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    import mbi_predict

    if mlflow.active_run() is None:
        raise RuntimeError("log_final_model must be called inside an active MLflow run (the experiment's parent run)")
    python_model = MBIPyfuncModel(kind=kind, fitted=fitted, features=features, task=task, envelope=envelope,
                               preprocess=preprocess, alpha=alpha)
    example = synthetic_example(envelope, list(features))
    signature = infer_signature(example, python_model.predict(None, example))
    metadata = {"mbi_predict_version": mbi_predict.__version__, "kind": kind, "task": task,
                "features": list(features), "outputs": list(python_model.outputs)}
    with _quiet_mlflow(), tempfile.TemporaryDirectory(prefix="mbi-code-") as tmp:
        info = mlflow.pyfunc.log_model(name=name, python_model=python_model, signature=signature,
                                       input_example=example, pip_requirements=_requirements(python_model),
                                       code_paths=[str(_package_code(Path(tmp)))], metadata=metadata,
                                       tags={"mbi_predict.model_kind": kind, **(tags or {})},
                                       params={k: v for k, v in (params or {}).items() if v not in (None, "")}
                                       or None)
    return info.model_uri


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow warns on every log_model that a Python object is pickled with CloudPickle (deliberate here: the model
    object is ours and loads with the same package version, shipped with it), nudges about type hints on `predict`
    (deliberately absent, see MBIPyfuncModel.predict) and reports the requirements it validates; per model, that is
    noise in a run's log."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("mlflow.pyfunc", "mlflow.models", "mlflow.utils.requirements_utils",
                                                    "mlflow.utils.environment")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
