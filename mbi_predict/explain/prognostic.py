"""SHAP explanations of a fitted prognostic pipeline (``Pipeline([("preprocess", ...), ("model", estimator)])``).

Computed in the encoded space the model sees, then mapped back to the original covariates by summing (see
``mapping``). Fast exact paths first: xgboost's native ``pred_contribs`` (TreeSHAP in C++), exact linear SHAP,
shap's TreeSHAP for sklearn trees and forests; anything else gets the model-agnostic permutation explainer with a
budget and a warning, because its values are approximate and its cost grows with rows x background x budget.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from mbi_predict.errors import ConfigError, MBIError
from mbi_predict.explain import _engines as engines
from mbi_predict.explain.explanation import Explanation, check_features, rng_streams, subsample_rows
from mbi_predict.explain.mapping import aggregate, column_transformer_map, encoded_to_original


def _dense(Z) -> np.ndarray:
    if hasattr(Z, "toarray"):
        Z = Z.toarray()
    return np.asarray(Z, dtype=float)


def _find_column_transformer(preprocess) -> ColumnTransformer | None:
    if isinstance(preprocess, ColumnTransformer):
        return preprocess
    if isinstance(preprocess, Pipeline) and len(preprocess.steps) == 1:
        return _find_column_transformer(preprocess.steps[0][1])
    return None


def encoded_owners(preprocess, original_columns: list[str], n_encoded: int) -> tuple[list[str], list[str]]:
    """(encoded names, the original covariate of each) for a fitted preprocessing step (or ``None`` = identity)."""
    if preprocess is None or preprocess == "passthrough":
        return list(original_columns), list(original_columns)
    ct = _find_column_transformer(preprocess)
    try:
        names = [str(n) for n in preprocess.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        names = None
    if ct is not None and names is not None and len(names) == n_encoded:
        return names, column_transformer_map(ct, original_columns)
    if names is not None and len(names) == n_encoded:
        return names, encoded_to_original(names, original_columns)
    if n_encoded == len(original_columns):
        return list(original_columns), list(original_columns)
    raise MBIError("the pipeline's preprocessing step does not name its output columns "
                   "(get_feature_names_out); SHAP values cannot be mapped back to covariates")


def split_pipeline(pipeline) -> tuple[object | None, object]:
    """(preprocessing part or None, final estimator) of a fitted Pipeline."""
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(f"explain_pipeline needs a fitted sklearn Pipeline, got {type(pipeline).__name__}")
    check_is_fitted(pipeline)
    model = pipeline.steps[-1][1]
    preprocess = pipeline[:-1] if len(pipeline.steps) > 1 else None
    if isinstance(preprocess, Pipeline) and len(preprocess.steps) == 1:
        preprocess = preprocess.steps[0][1]
    return preprocess, model


def _attributions(model, Z: np.ndarray, Zb: np.ndarray, *, max_evals: int | None, seed: int):
    """(values, base, kind, method) on the encoded features, fastest exact engine first."""
    if engines.is_xgboost(model):
        try:
            values, base = engines.xgb_contribs(model, Z)
            return values, base, "tree", "xgboost pred_contribs (path-dependent TreeSHAP)"
        except ConfigError:
            pass
    linear = engines.linear_coefficients(model, Z.shape[1])
    if linear is not None:
        values, base = engines.linear_shap(*linear, Z, Zb.mean(axis=0))
        return values, base, "linear", "exact linear SHAP, coef * (x - background mean)"
    if not engines.is_xgboost(model):
        try:
            values, base = engines.tree_shap(model, Z)
            return values, base, "tree", "shap TreeExplainer (path-dependent TreeSHAP)"
        except Exception:  # noqa: BLE001 - shap raises several types for unsupported models; we fall back
            pass
    warnings.warn(f"no exact SHAP path for {type(model).__name__}; using shap's permutation explainer "
                  f"(approximate, budget max_evals={max_evals or engines.default_max_evals(Z.shape[1])})",
                  UserWarning, stacklevel=3)
    values, base = engines.permutation_shap(lambda A: engines.raw_output(model, A), Z, Zb, max_evals=max_evals,
                                            seed=seed)
    return values, base, "permutation", "shap PermutationExplainer (model-agnostic)"


def explain_pipeline(pipeline, X_frame: pd.DataFrame, *, background: pd.DataFrame | None = None, max_rows: int = 500,
                     max_background: int = 100, seed: int = 0, features=None,
                     max_evals: int | None = None) -> Explanation:
    """SHAP values of a fitted prognostic pipeline for (a seeded subsample of at most ``max_rows``) rows of X_frame.

    ``background``: rows representing "no information" (typically the training rows of the fold), capped at
    ``max_background``; defaults to X_frame. It sets the base value of the linear and permutation engines; the tree
    engines are path-dependent and use the model's training distribution instead (no background needed).
    Classifiers are explained on their raw output: the margin (log-odds) for xgboost, logistic regression and
    gradient boosting, the averaged probability for random forests (``Explanation.output`` says which), and
    ``additivity_error`` is measured on that scale. ``features``: restrict the result (ConfigError if unknown).
    """
    start = time.perf_counter()
    if not isinstance(X_frame, pd.DataFrame):
        raise ConfigError("explain_pipeline needs X_frame as a DataFrame of the original covariates")
    preprocess, model = split_pipeline(pipeline)
    original = [str(c) for c in getattr(pipeline, "feature_names_in_", X_frame.columns)]
    check_features(original, X_frame.columns)
    if features is not None:
        check_features([features] if isinstance(features, str) else list(features), original)
    rows_rng, background_rng, shap_seed = rng_streams(seed)
    rows = subsample_rows(len(X_frame), max_rows, rows_rng)
    explained = X_frame.iloc[rows][original]
    bg_frame = X_frame if background is None else background
    check_features(original, bg_frame.columns)
    bg_frame = bg_frame.iloc[subsample_rows(len(bg_frame), max_background, background_rng)][original]

    transform = (lambda F: F.to_numpy(dtype=float)) if preprocess is None else preprocess.transform
    Z, Zb = _dense(transform(explained)), _dense(transform(bg_frame))
    _, owners = encoded_owners(preprocess, original, Z.shape[1])
    encoded_values, base, kind, method = _attributions(model, Z, Zb, max_evals=max_evals, seed=shap_seed)
    prediction = engines.raw_output(model, Z)
    error = float(np.max(np.abs(encoded_values.sum(axis=1) + base - prediction))) if len(Z) else 0.0
    values, names = aggregate(encoded_values, owners, original)
    result = Explanation(values=values, base_value=base, feature_names=tuple(names), data=explained[names],
                         kind=kind, additivity_error=error, output=engines.output_label(model),
                         seconds=time.perf_counter() - start, row_index=rows, n_background=len(bg_frame),
                         method=method)
    return result.select(features) if features is not None else result
