"""The final model as an MLflow pyfunc, and predictions for new participants from a file.

Three modules, every name importable from ``mbi_predict.deploy``: `deploy.envelope` (the training envelope and the
out-of-distribution flags), `deploy.pyfunc` (`MBIPyfuncModel`, `log_final_model`) and `deploy.predict` (finding a
run's final model, `predict_file`).

Why a pyfunc wrapper rather than logging the sklearn pipeline with ``mlflow.sklearn``:

* one artefact serves both kinds of model: a prognostic pipeline (``prediction``: the predicted outcome, or the
  predicted probability for a 0/1 outcome) and a CATE model with its fold-style preprocessing (``cate``,
  ``cate_low``, ``cate_high``: MBI minus control in outcome units, so for an outcome where higher is worse a
  negative CATE is a benefit);
* every prediction carries ``out_of_distribution`` and ``ood_reasons``, computed against the training envelope
  (numeric covariate ranges and categorical levels seen in the training trials). A model validated on
  university students aged 18-30 says so when asked about a 70-year-old, both through ``predict_file`` and when
  served with ``mlflow models serve``.

The signature and input example are built from the envelope (midpoints, first seen level), never from a real
participant's row: an MLflow model folder is often shared more widely than the IPD it was trained on.

Numeric inputs are declared as ``double``: MLflow refuses to convert int64 columns to double ("can not safely
convert"), so ``predict_file`` casts them, and a client of a served model should send numbers as floats.
"""

from mbi_predict.deploy.envelope import (ENVELOPE_GRID, envelope_from_training, out_of_distribution, rounded_bounds,
                                         synthetic_example)
from mbi_predict.deploy.predict import (ID_COLUMN, ModelLookupError, check_against_signature, load_final_model,
                                        predict_file, read_table, resolve_model_uri)
from mbi_predict.deploy.pyfunc import (EFFECT_OUTPUTS, OOD_OUTPUTS, PROGNOSTIC_OUTPUTS,  # noqa: F401 (and privates)
                                       TYPE_HINT_WARNING, Kind, MBIPyfuncModel, _package_code, _quiet_mlflow,
                                       _requirements, _used_columns, log_final_model)

__all__ = ["EFFECT_OUTPUTS", "ENVELOPE_GRID", "ID_COLUMN", "Kind", "MBIPyfuncModel", "ModelLookupError",
           "OOD_OUTPUTS", "PROGNOSTIC_OUTPUTS", "TYPE_HINT_WARNING", "check_against_signature",
           "envelope_from_training", "load_final_model", "log_final_model", "out_of_distribution", "predict_file",
           "read_table", "resolve_model_uri", "rounded_bounds", "synthetic_example"]
