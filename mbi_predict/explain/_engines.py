"""SHAP engines on arrays (the model's own input space): exact linear, xgboost's native TreeSHAP, shap's TreeSHAP,
and the model-agnostic permutation explainer.

Each returns ``(values n x p, base_value)`` such that ``values.sum(1) + base_value`` equals the explained output.
Two semantics are used, on purpose:

* path-dependent TreeSHAP (xgboost ``pred_contribs``, ``shap.TreeExplainer`` without data): fast, needs no background,
  base value = the model's expected output over its training data. Used for prognostic models.
* interventional (linear with a background mean, ``TreeExplainer(data=background, feature_perturbation=
  "interventional")``, permutation with an independent masker): base value = mean output over the background. Used
  whenever two models' attributions are subtracted (a T-learner's CATE), because only a common background makes the
  difference an explanation of CATE(x) - mean CATE(background).

All shap/xgboost version quirks (output shapes of classifiers, float32 boosters) are handled here only.
"""

from __future__ import annotations

import numpy as np

from mbi_predict.errors import ConfigError

#: default permutation budget: this many antithetic permutations (each costs 2p + 1 evaluations). Two permutations
#: are exact for models with at most pairwise interactions; more only help models with higher-order interactions.
DEFAULT_PERMUTATIONS = 2


def default_max_evals(n_features: int) -> int:
    return DEFAULT_PERMUTATIONS * (2 * n_features + 1)


def is_xgboost(model) -> bool:
    try:
        from xgboost import XGBModel
    except ImportError:  # pragma: no cover - xgboost is a dependency
        return False
    return isinstance(model, XGBModel)


def is_classifier(model) -> bool:
    return hasattr(model, "predict_proba") and hasattr(model, "classes_")


def linear_coefficients(model, n_features: int) -> tuple[np.ndarray, float] | None:
    """(coef, intercept) when the model's raw output is exactly coef·x + intercept (sklearn linear models), else None.

    Raw output: ``predict`` for regressors, ``decision_function`` (log-odds) for binary classifiers.
    """
    if not type(model).__module__.startswith("sklearn.linear_model"):
        return None
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", 0.0)
    if coef is None:
        return None
    coef = np.asarray(coef, dtype=float)
    if coef.ndim == 2:
        if coef.shape[0] != 1:
            return None  # multi-class or multi-output: not one linear output
        coef = coef[0]
    if coef.shape != (n_features,):
        return None
    return coef, float(np.ravel(intercept)[0]) if np.ndim(intercept) else float(intercept)


def linear_shap(coef: np.ndarray, intercept: float, X: np.ndarray, background_mean: np.ndarray):
    """Exact SHAP of a linear output with independent features: coef_j (x_j - mean_j); base = output at the mean."""
    values = coef[None, :] * (X - background_mean[None, :])
    return values, float(intercept + coef @ background_mean)


def raw_output(model, X: np.ndarray, output: str = "raw") -> np.ndarray:
    """The output an engine explains: ``raw`` = regression prediction or classifier margin (log-odds; the
    probability for sklearn forests, whose trees average probabilities); ``probability`` = P(class 1)."""
    if output == "probability":
        return np.asarray(model.predict_proba(X), dtype=float)[:, 1]
    if is_xgboost(model):
        return np.asarray(model.predict(X, output_margin=True), dtype=float).reshape(len(X), -1)[:, -1]
    if is_classifier(model):
        if hasattr(model, "decision_function"):
            return np.asarray(model.decision_function(X), dtype=float).reshape(len(X), -1)[:, -1]
        return np.asarray(model.predict_proba(X), dtype=float)[:, 1]
    return np.asarray(model.predict(X), dtype=float).reshape(-1)


def output_label(model, output: str = "raw") -> str:
    if output == "probability":
        return "probability of class 1"
    if is_classifier(model):
        if is_xgboost(model) or hasattr(model, "decision_function"):
            return "margin (log-odds of class 1)"
        return "probability of class 1 (forest average)"
    return "prediction (outcome units)"


def _xgb_iteration_range(model) -> tuple[int, int]:
    try:
        best = model.best_iteration  # only set when fitted with early stopping
    except AttributeError:
        return (0, 0)
    return (0, int(best) + 1)


def xgb_contribs(model, X: np.ndarray):
    """xgboost's native (path-dependent) TreeSHAP on the margin; the last column it returns is the bias."""
    import pandas as pd
    import xgboost as xgb

    booster = model.get_booster()
    names = booster.feature_names
    data = pd.DataFrame(X, columns=names) if names is not None else X
    contribs = booster.predict(xgb.DMatrix(data), pred_contribs=True, iteration_range=_xgb_iteration_range(model))
    contribs = np.asarray(contribs, dtype=float)
    if contribs.ndim != 2:
        raise ConfigError("xgboost's native SHAP path supports one output (regression or binary classification)")
    return contribs[:, :-1], float(contribs[:, -1].mean())


def _class_one(values, expected, n_features: int):
    """shap returns per-class outputs for classifiers in several layouts across versions; keep class 1."""
    if isinstance(values, list):
        values, expected = values[-1], np.ravel(expected)[-1]
    values = np.asarray(values, dtype=float)
    if values.ndim == 3:
        values = values[:, :, -1]
        expected = np.ravel(expected)[-1]
    if values.shape[1] != n_features:
        raise ValueError(f"unexpected SHAP output shape {values.shape}")
    return values, float(np.ravel(expected)[-1]) if np.ndim(expected) else float(expected)


def tree_shap(model, X: np.ndarray, background: np.ndarray | None = None, output: str = "raw"):
    """shap's TreeSHAP: path-dependent without a background, interventional with one.

    Raises shap's own error for models it cannot parse; callers fall back to the permutation explainer.
    """
    import shap

    if background is None:
        explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    else:
        explainer = shap.TreeExplainer(model, data=background, feature_perturbation="interventional",
                                       model_output="probability" if output == "probability" else "raw")
    values = explainer.shap_values(X, check_additivity=False)
    return _class_one(values, explainer.expected_value, X.shape[1])


def permutation_shap(predict, X: np.ndarray, background: np.ndarray, *, max_evals: int | None, seed: int):
    """shap's PermutationExplainer with an independent masker over ``background``: base = mean output there.

    Approximate for models with interactions of order > 2 (antithetic permutations are exact up to pairwise), but
    additive by construction (each permutation telescopes from the background mean to f(x)).
    """
    import shap

    p = X.shape[1]
    budget = default_max_evals(p) if max_evals is None else int(max_evals)
    if budget < 2 * p + 1:
        raise ConfigError(f"max_evals must be at least 2 * n_features + 1 = {2 * p + 1}, got {budget}")
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.PermutationExplainer(lambda Z: np.asarray(predict(Z), dtype=float).reshape(len(Z)), masker,
                                          seed=seed)
    result = explainer(X, max_evals=budget, silent=True)
    base = np.ravel(result.base_values)
    return np.asarray(result.values, dtype=float).reshape(len(X), p), float(base.mean())
