"""The shape of the run (issue 15): small stage modules, a one-screen `run_experiment`, the old import paths kept."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mbi_predict"
SPLIT = [*sorted((PACKAGE / "pipeline").rglob("*.py")), *sorted((PACKAGE / "deploy").glob("*.py")),
         *(PACKAGE / "validate" / f"{name}.py" for name in ("loto", "folds", "fold_fits", "prepared")),
         PACKAGE / "runner.py"]


@pytest.mark.parametrize("path", SPLIT, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_small_and_say_what_they_do(path):
    limit = 350 if "pipeline" in path.parts else 400
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= limit
    assert text.lstrip().startswith('"""'), "a module docstring explains the module's contract"


def test_run_experiment_fits_on_one_screen():
    from mbi_predict.pipeline.run import run_experiment

    assert len(inspect.getsource(run_experiment).splitlines()) <= 40


@pytest.mark.parametrize("module, names", [
    ("mbi_predict.runner", ["run_experiment", "RunResult", "canonical_sha256", "load_prepared", "load_data",
                            "load_data_with_truth", "read_truth", "harmonisation_facts", "missingness_facts",
                            "explain_config", "explain_models", "comparison_to_reference", "execution",
                            "projection_covariates", "hash_seed", "derive_seed_for", "IN_MEMORY"]),
    ("mbi_predict.validate.loto", ["PreparedData", "prepare_data", "attach_truth", "resolve_covariates", "Fold",
                                   "FoldPlan", "FoldJob", "FoldResult", "FittedModel", "derive_seed", "plan_folds",
                                   "make_jobs", "run_jobs", "run_fold", "fit_final_model", "fit_final_models",
                                   "fit_prognostic", "fit_effect", "prognostic_fold", "effect_fold", "FOLD_RUNNERS",
                                   "FINAL_FITTERS", "ITT_NOTE", "INTERNAL_NOTE", "MIN_HARM_GROUP", "_pehe_variance"]),
    ("mbi_predict.deploy", ["ModelLookupError", "MBIPyfuncModel", "envelope_from_training", "rounded_bounds",
                            "synthetic_example", "out_of_distribution", "log_final_model", "resolve_model_uri",
                            "load_final_model", "read_table", "check_against_signature", "predict_file",
                            "_requirements", "_package_code", "ENVELOPE_GRID", "ID_COLUMN", "TYPE_HINT_WARNING"]),
])
def test_old_import_paths_still_work(module, names):
    imported = importlib.import_module(module)
    assert [name for name in names if not hasattr(imported, name)] == []


def test_the_public_face_runs_the_pipeline():
    import mbi_predict
    from mbi_predict.pipeline.run import run_experiment

    assert mbi_predict.run_experiment is run_experiment


def test_fold_runners_are_one_table():
    """Replacing a fold runner in `validate.loto.FOLD_RUNNERS` (the extension point) is seen by `run_fold`."""
    from mbi_predict.validate import fold_fits, loto

    assert loto.FOLD_RUNNERS == {"prognostic": fold_fits.prognostic_fold, "effect": fold_fits.effect_fold}
    assert not hasattr(fold_fits, "FOLD_RUNNERS")


def test_the_demo_config_is_package_data():
    """The demo config ships as mbi_predict/resources/demo.yaml, so `mbi-predict demo` works from an installed wheel."""
    from mbi_predict.demo import demo_config_path

    assert PACKAGE in demo_config_path().resolve().parents
