"""SHAP explanations of the treatment effect (CATE): which covariates move a person's predicted benefit.

Why differences on a common background: a T-learner's CATE is mu1(x) - mu0(x). Interventional SHAP is linear in
the model, so with the *same* background for both arms phi_CATE = phi_mu1 - phi_mu0 exactly, and the attributions
sum to CATE(x) - mean CATE(background). (Path-dependent TreeSHAP would give each arm its own base — the mean of its
own training arm — and the difference would not explain CATE against any one reference.) The same linearity covers
the other learners: X-learner g tau0 + (1-g) tau1, S-learner f(x, 1) - f(x, 0) (the arm column is held equal in
the row and the background so it gets no attribution), DR-learner's and the interaction model's linear final
stage (exact), the causal forest through econml's own ``shap_values``; anything else (PATH risk groups) gets the
model-agnostic permutation explainer on ``effect`` with a warning.

Every explanation is checked: ``additivity_error`` = max |sum(values) + base - effect_model.effect(x)|.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mbi_predict.errors import ConfigError
from mbi_predict.explain import _engines as engines
from mbi_predict.explain.explanation import Explanation, check_features, rng_streams, subsample_rows
from mbi_predict.explain.mapping import aggregate, encoded_to_original

_KIND_ORDER = {"linear": 0, "tree": 1, "permutation": 2}
#: additivity is checked to this absolute tolerance plus this share of the CATE's SD; float32 xgboost trees land
#: near 1e-6, exact paths near 1e-15. econml's TreeSHAP of a causal forest misses it by design: a generalised
#: random forest's estimate solves one weighted moment equation across trees, it is not an average of leaf values.
ADDITIVITY_ABS_TOL = 1e-4
ADDITIVITY_REL_TOL = 0.01
ENGINES = ("auto", "permutation")


@dataclass(frozen=True)
class _Component:
    """weight * model(x) (or model([x, arm]) when ``arm`` is set) is one additive piece of the CATE."""

    weight: float
    model: object
    output: str = "raw"  # "raw" or "probability"
    arm: float | None = None


def _augment(A: np.ndarray, arm: float | None) -> np.ndarray:
    return A if arm is None else np.column_stack([A, np.full(len(A), arm)])


def _component_shap(component: _Component, Z: np.ndarray, Zb: np.ndarray, *, max_evals, seed):
    """(values n x p, base, kind, method) of one component, interventional on the background Zb."""
    model, p = component.model, Z.shape[1]
    Za, Zba = _augment(Z, component.arm), _augment(Zb, component.arm)
    if component.output == "raw":
        linear = engines.linear_coefficients(model, Za.shape[1])
        if linear is not None:
            values, base = engines.linear_shap(*linear, Za, Zba.mean(axis=0))
            return values[:, :p], base, "linear", "exact linear SHAP on a common background"
    try:
        values, base = engines.tree_shap(model, Za, Zba, output=component.output)
        return values[:, :p], base, "tree", "interventional TreeSHAP on a common background"
    except Exception:  # noqa: BLE001 - shap raises several types for models it cannot parse; we fall back
        pass
    warnings.warn(f"no exact SHAP path for {type(model).__name__}; using shap's permutation explainer "
                  "(approximate)", UserWarning, stacklevel=4)
    values, base = engines.permutation_shap(lambda A: engines.raw_output(model, _augment(A, component.arm),
                                                                          component.output),
                                            Z, Zb, max_evals=max_evals, seed=seed)
    return values, base, "permutation", "shap PermutationExplainer on a common background"


def _expand(components: list[_Component]) -> tuple[list[_Component], float]:
    """A stacked learner (``StackingRegressor`` with a linear combiner: intercept + sum_k c_k f_k(x)) as its base
    models weighted by their coefficients, and the weighted intercepts as one constant: SHAP is linear in the model,
    so the pieces explain the stack exactly and each base model keeps its exact path (linear, TreeSHAP)."""
    from sklearn.ensemble import StackingRegressor

    out, offset = [], 0.0
    for component in components:
        model = component.model
        final = getattr(model, "final_estimator_", None)
        coef = np.asarray(getattr(final, "coef_", []), dtype=float).reshape(-1)
        if (component.output == "raw" and isinstance(model, StackingRegressor) and not model.passthrough
                and len(coef) == len(model.estimators_)):  # a combiner of the base predictions alone
            offset += component.weight * float(np.asarray(final.intercept_).reshape(-1)[0])
            out += [_Component(component.weight * c, base, "raw", component.arm)
                    for c, base in zip(coef, model.estimators_) if c != 0.0]
        else:
            out.append(component)
    return out, offset


def _combine(components: list[_Component], Z, Zb, *, max_evals, seed):
    components, offset = _expand(components)
    values, base, kinds, methods = np.zeros(Z.shape), offset, [], []
    for component in components:
        v, b, kind, method = _component_shap(component, Z, Zb, max_evals=max_evals, seed=seed)
        values += component.weight * v
        base += component.weight * b
        kinds.append(kind)
        methods.append(method)
    kind = max(kinds, key=_KIND_ORDER.__getitem__) if kinds else "linear"
    return values, base, kind, "; ".join(dict.fromkeys(methods))


def _components(effect_model) -> list[_Component] | None:
    """The additive pieces of a known CATE estimator (mbi_predict.models.effect), or None if it has none."""
    name = type(effect_model).__name__
    if name == "TLearner" and len(getattr(effect_model, "models_", ())) == 2:
        output = "probability" if getattr(effect_model, "binary_outcome_", False) else "raw"
        control, treated = effect_model.models_
        return [_Component(1.0, treated, output), _Component(-1.0, control, output)]
    if name == "XLearner" and hasattr(effect_model, "tau0_model_"):
        g = float(effect_model.blend_weight_)
        return [_Component(g, effect_model.tau0_model_), _Component(1.0 - g, effect_model.tau1_model_)]
    if name == "SLearner" and hasattr(effect_model, "model_"):
        return [_Component(1.0, effect_model.model_, arm=1.0), _Component(-1.0, effect_model.model_, arm=0.0)]
    if name == "DRLearner" and getattr(effect_model, "final_model_", None) is not None:
        return [_Component(1.0, effect_model.final_model_)]
    return None


def _linear_cate(effect_model, p: int) -> tuple[np.ndarray, float] | None:
    """(slope, intercept) when CATE(x) = slope·x + intercept exactly, else None."""
    name = type(effect_model).__name__
    if name == "DRLearner" and getattr(effect_model, "final_model_", "x") is None:
        coef = np.asarray(effect_model.final_coef_, dtype=float)
        return coef[1:], float(coef[0])
    if name == "InteractionLinear" and hasattr(effect_model, "interaction_coef_"):
        slope = np.asarray(effect_model.interaction_coef_, dtype=float)
        return slope, float(effect_model.treatment_coef_ - slope @ effect_model.x_mean_)
    return None


def _feature_names(effect_model, X) -> list[str]:
    fitted = getattr(effect_model, "feature_names_in_", None)
    if isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        if fitted is not None:
            check_features([str(f) for f in fitted], names)
            missing_in_model = [n for n in names if n not in {str(f) for f in fitted}]
            if missing_in_model:
                check_features(missing_in_model, [str(f) for f in fitted])
        return [str(f) for f in fitted] if fitted is not None else names
    if fitted is not None:
        return [str(f) for f in fitted]
    return [f"x{j}" for j in range(np.shape(X)[1])]


def _finish(values, base, kind, method, *, names, effect_fn, Z, rows, n_background, start, original, features,
            output, notes=()) -> Explanation:
    cate = np.asarray(effect_fn(Z), dtype=float).reshape(-1)
    error = float(np.max(np.abs(values.sum(axis=1) + base - cate))) if len(Z) else 0.0
    tolerance = ADDITIVITY_ABS_TOL + ADDITIVITY_REL_TOL * float(np.std(cate))
    if error > tolerance:
        notes = (*notes, f"attributions do not add up to the CATE (max gap {error:.3g} > {tolerance:.3g}): the "
                 "values are approximate")
        warnings.warn(f"{method}: SHAP values miss additivity by up to {error:.3g} (CATE SD {np.std(cate):.3g}); "
                      "treat them as approximate or use engine='permutation'", UserWarning, stacklevel=3)
    if original is not None:
        owners = encoded_to_original(names, list(original.columns))
        values, names = aggregate(values, owners, list(original.columns))
        data = original.iloc[rows][names].reset_index(drop=True)
    else:
        data = pd.DataFrame(Z, columns=names)
    result = Explanation(values=values, base_value=float(base), feature_names=tuple(names), data=data, kind=kind,
                         additivity_error=error, output=output, seconds=time.perf_counter() - start, row_index=rows,
                         n_background=n_background, method=method, notes=tuple(notes))
    return result.select(features) if features is not None else result


def tlearner_cate_shap(model_control, model_treated, X, background, *, binary: bool = False,
                       max_evals: int | None = None, seed: int = 0, feature_names=None) -> Explanation:
    """SHAP of mu1(x) - mu0(x) from two fitted arm models, on one common background (all rows of X explained).

    ``binary``: the arm models are classifiers and the CATE is a risk difference (probability scale).
    """
    start = time.perf_counter()
    Z, Zb = np.asarray(X, dtype=float), np.asarray(background, dtype=float)
    names = list(feature_names) if feature_names is not None else (
        [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else [f"x{j}" for j in range(Z.shape[1])])
    output = "probability" if binary else "raw"
    components = [_Component(1.0, model_treated, output), _Component(-1.0, model_control, output)]
    values, base, kind, method = _combine(components, Z, Zb, max_evals=max_evals, seed=seed)

    def cate(A):
        return engines.raw_output(model_treated, A, output) - engines.raw_output(model_control, A, output)

    return _finish(values, base, kind, method, names=names, effect_fn=cate, Z=Z, rows=np.arange(len(Z)),
                   n_background=len(Zb), start=start, original=None, features=None,
                   output="CATE (risk difference)" if binary else "CATE (outcome units)")


def explain_effect(effect_model, X, *, background, max_rows: int = 500, max_background: int = 100, seed: int = 0,
                   features=None, original: pd.DataFrame | None = None,
                   max_evals: int | None = None, engine: str = "auto") -> Explanation:
    """SHAP values of a fitted CATE estimator's ``effect`` for (at most ``max_rows`` seeded) rows of X.

    ``X`` and ``background`` are in the estimator's own (numeric, encoded) input space; ``background`` (typically
    the fold's training rows, capped at ``max_background``) is the reference: attributions sum to
    CATE(x) - mean CATE(background). ``original``: the original-covariate frame aligned row by row with X; when
    given, encoded columns (``gender_male``) are summed back to covariates (``gender``) and plots show original
    values. ``features``: restrict the result to these (ConfigError naming any the model lacks).
    ``max_evals``: budget of the permutation fallback. ``engine="permutation"`` forces the model-agnostic explainer
    (a cross-check, or for a causal forest whose TreeSHAP is not additive; no warning then, it was asked for).
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    names = _feature_names(effect_model, X)
    if features is not None:
        requested = [features] if isinstance(features, str) else list(features)
        available = names if original is None else encoded_to_original(names, list(original.columns))
        check_features(requested, list(dict.fromkeys(available)))
    Xa = np.asarray(X.to_numpy(dtype=float) if isinstance(X, pd.DataFrame) else X, dtype=float)
    Ba = np.asarray(background.to_numpy(dtype=float) if isinstance(background, pd.DataFrame) else background,
                    dtype=float)
    if Xa.ndim != 2 or Ba.ndim != 2 or Ba.shape[1] != Xa.shape[1]:
        raise ConfigError(f"X and background must be 2-D with the same columns; got {Xa.shape} and {Ba.shape}")
    if original is not None and len(original) != len(Xa):
        raise ConfigError(f"original has {len(original)} rows but X has {len(Xa)}")
    rows_rng, background_rng, shap_seed = rng_streams(seed)
    rows = subsample_rows(len(Xa), max_rows, rows_rng)
    Z, Zb = Xa[rows], Ba[subsample_rows(len(Ba), max_background, background_rng)]

    def effect_fn(A):
        frame = pd.DataFrame(A, columns=names) if hasattr(effect_model, "feature_names_in_") else A
        return effect_model.effect(frame)

    binary = bool(getattr(effect_model, "binary_outcome_", False))
    output = "CATE (risk difference)" if binary else "CATE (outcome units)"
    common = dict(names=names, effect_fn=effect_fn, Z=Z, rows=rows, start=start, original=original,
                  features=features, output=output)

    if engine == "permutation":
        values, base = engines.permutation_shap(effect_fn, Z, Zb, max_evals=max_evals, seed=shap_seed)
        return _finish(values, base, "permutation", "shap PermutationExplainer on effect() (requested)",
                       n_background=len(Zb), **common)
    linear = _linear_cate(effect_model, Z.shape[1])
    if linear is not None:
        values, base = engines.linear_shap(*linear, Z, Zb.mean(axis=0))
        return _finish(values, base, "linear", "exact linear SHAP of the linear CATE", n_background=len(Zb),
                       **common)
    components = _components(effect_model)
    if components is not None:
        values, base, kind, method = _combine(components, Z, Zb, max_evals=max_evals, seed=shap_seed)
        return _finish(values, base, kind, method, n_background=len(Zb), **common)
    forest = getattr(effect_model, "forest_", None)
    if forest is not None and hasattr(forest, "shap_values"):
        values, base, n_bg = _econml_shap(forest, Z, max_background)
        note = ("econml CausalForestDML.shap_values: its background is a sample of the explained rows, not the "
                "background passed")
        return _finish(values, base, "tree", "econml shap_values (TreeSHAP of the causal forest)", n_background=n_bg,
                       notes=(note,), **common)
    warnings.warn(f"no exact SHAP path for {type(effect_model).__name__}; using shap's permutation explainer on "
                  "effect() (approximate)", UserWarning, stacklevel=2)
    values, base = engines.permutation_shap(effect_fn, Z, Zb, max_evals=max_evals, seed=shap_seed)
    return _finish(values, base, "permutation", "shap PermutationExplainer on effect()", n_background=len(Zb),
                   **common)


def _econml_shap(forest, Z: np.ndarray, max_background: int):
    import contextlib
    import io

    # econml calls shap without `silent`, so long runs draw a progress bar on stderr; keep worker logs clean
    with contextlib.redirect_stderr(io.StringIO()):
        out = forest.shap_values(Z, background_samples=max_background)
    (by_treatment,) = out.values()
    (explanation,) = by_treatment.values()
    values = np.asarray(explanation.values, dtype=float).reshape(len(Z), Z.shape[1])
    base = float(np.mean(np.ravel(explanation.base_values)))
    return values, base, min(max_background, len(Z))
