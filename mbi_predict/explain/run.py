"""SHAP inside a leave-one-trial-out run: per fold, the permutation null, the summary block and the figures.

This module only computes and draws; reading a finished run and recomputing its SHAP (``mbi-predict explain``) is
the CLI's (`mbi_predict.cli.explain_run`), because it reads run folders and MLflow runs through `report` and
re-runs a pipeline stage, both layers above this one.

Where each piece runs, and why:
* ``explain_fold`` runs inside each fold job (in the parallel workers), because it needs that fold's fitted model:
  prognostic pipelines through ``explain_pipeline`` on the held-out trial's rows against a background of training
  rows; effect models through ``explain_effect`` on the fold's encoded covariates, with ``original=`` so the
  attributions are summed back to the covariates a researcher recorded. It returns a `FoldShap`: per-feature
  importances and their sampling variances (aggregates) plus, in memory only, the explained values for the plots.
* ``null_references``: for effect models, the within-trial arm-permutation null (``permutation_null``) once on all
  trials. Its B + 1 refits are independent, so they are run as parallel jobs; the permutations (and constant-effect
  null outcomes) come from ``null.null_draws`` as in ``permutation_null``, so the result is the same. The test is
  family-wise (studentised step-down max-T, ``explain.null``); with ``null_B`` < 19 it cannot reach 0.05, so a
  UserWarning is given at the start and the rankings are reported as not tested (``beats_null`` None).
* ``shap_block``: across folds ``stability`` -> ``ranking_records`` (+ the null) -> summary.json, and for effect
  models ``side_by_side`` with the classical within-trial interactions. ``shap_plots``: binned SHAP summary
  ("beeswarm" file; per-participant dots only with ``participant_level=True``), importance bars with CI and null
  band, dependence (prognosis, coloured by arm; binned), benefit profile (effect models), each saved through
  ``figstyle.save_figure`` in the run's format and resolution (the config's ``figures:`` block).

Cost control (SHAP must not dominate the run): row and background caps from the config, tighter for random forests
(TreeSHAP cost grows with trees x leaves x rows) and causal forests (econml's shap); the PATH risk effect model is
skipped with a note (its CATE is a step function of a risk score: only shap's permutation explainer applies, whose
numba compile alone costs ~18 s on first call). Nothing participant-level reaches summary.json, MLflow or the disk.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mbi_predict import figstyle

#: row / background caps per estimator where SHAP is costly (min with the configured caps)
#: (interventional TreeSHAP, which effect models need for a common background, costs rows x background x trees)
ROW_CAPS = {("prognostic", "random_forest"): (150, 50), ("effect", "causal_forest"): (100, 50),
            ("effect", "t_learner_xgb"): (120, 30), ("effect", "s_learner"): (120, 30),
            ("effect", "x_learner"): (120, 30)}
#: participants shown in the beeswarm and dependence plots (a seeded sample of the stacked held-out rows)
PLOT_ROWS = 600
#: effect estimators whose SHAP is skipped, with the reason recorded in the summary
SKIPPED = {"path_risk": "skipped: the PATH risk model's CATE is a step function of a baseline-risk score; only the "
                        "model-agnostic permutation explainer applies, whose one-off compile (~18 s) and cost do not "
                        "fit a routine run. Its risk-group structure is the explanation (see the model's docs)."}


@dataclass
class FoldShap:
    """One fold's SHAP: aggregates for the summary, and (in memory only) the explained values for the plots."""

    importance: dict[str, float]
    variance: dict[str, float]
    additivity_error: float
    kind: str
    method: str
    output: str
    seconds: float
    n_rows: int
    n_background: int
    notes: tuple[str, ...] = ()
    skipped: str | None = None
    explanation: Any = field(default=None, repr=False)   # Explanation (participant-level; never written)
    arm: np.ndarray | None = field(default=None, repr=False)


def _caps(kind: str, estimator: str, settings) -> tuple[int, int]:
    rows, background = settings.max_rows, settings.max_background
    cap = ROW_CAPS.get((kind, estimator))
    if cap is not None:
        rows, background = min(rows, cap[0]), min(background, cap[1])
    return rows, background


def _sample(rows: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def encoded_frame(preprocess, X: pd.DataFrame) -> pd.DataFrame:
    """An effect model's input (the fold-fitted transformer's output) with the transformer's column names, which
    ``explain_effect`` maps back to the original covariates."""
    names = [str(n) for n in preprocess.get_feature_names_out()]
    return pd.DataFrame(np.asarray(preprocess.transform(X), dtype=float), columns=names)


def explain_fold(job, data, fitted) -> FoldShap:
    """SHAP of one fold's fitted model on (a capped sample of) the held-out trial's rows."""
    from mbi_predict.explain import explain_effect, explain_pipeline
    from mbi_predict.validate.loto import derive_seed

    spec, settings = job.model, job.explain
    start = time.perf_counter()
    if spec.kind == "effect" and spec.estimator in SKIPPED:
        return FoldShap({}, {}, math.nan, "", "", "", 0.0, 0, 0, skipped=SKIPPED[spec.estimator])
    max_rows, max_background = _caps(spec.kind, spec.estimator, settings)
    seed = derive_seed(job.seed, "shap")
    test = job.fold.test
    background_rows = _sample(fitted.train_rows, max_background, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # recorded as notes / additivity instead
        if spec.kind == "prognostic":
            explanation = explain_pipeline(fitted.model, data.X.iloc[test], background=data.X.iloc[background_rows],
                                           max_rows=max_rows, max_background=max_background, seed=seed)
        else:
            original = data.X.iloc[test][list(data.covariates)].reset_index(drop=True)
            explanation = explain_effect(fitted.model, encoded_frame(fitted.preprocess, data.X.iloc[test]),
                                         background=encoded_frame(fitted.preprocess, data.X.iloc[background_rows]),
                                         max_rows=max_rows, max_background=max_background, seed=seed,
                                         original=original)
    arm = data.arm[test][explanation.row_index]
    return FoldShap(explanation.importance(), explanation.importance_variance(), float(explanation.additivity_error),
                    explanation.kind, explanation.method, explanation.output, time.perf_counter() - start,
                    explanation.n_rows, explanation.n_background, tuple(explanation.notes), None, explanation, arm)


# ----------------------------------------------------------------------------------------------- null

@dataclass(frozen=True)
class NullTask:
    """One refit of the permutation null: model ``name``, fit ``index`` (0 = observed arm, 1..B = permuted)."""

    name: str
    index: int
    fit_and_explain: Any
    arm: np.ndarray
    y: np.ndarray | None = None  # the constant-effect null outcome (None: the observed outcome)


def _run_null_task(task: NullTask) -> tuple[str, int, dict[str, float], float]:
    start = time.perf_counter()
    importance = task.fit_and_explain(task.arm) if task.y is None else task.fit_and_explain(task.arm, task.y)
    return task.name, task.index, dict(importance), time.perf_counter() - start


def null_tasks(config, data) -> list[NullTask]:
    """The B + 1 refits (observed arm + B within-trial permutations) per effect model with ``null_B > 0``.

    Null fits get the constant-effect outcome (``null.null_draws``). A ``null_B`` too small to reach alpha = 0.05
    family-wise gives one UserWarning here (run start); the rankings are then reported as not tested.
    """
    from mbi_predict.explain.null import insufficient_B_message, make_fit_and_explain, null_draws
    from mbi_predict.models.effect import make_effect_model
    from mbi_predict.models.preprocess import make_preprocessor
    from mbi_predict.validate.loto import derive_seed

    tasks: list[NullTask] = []
    observed = np.flatnonzero(np.isfinite(data.y))
    for spec in config.models:
        settings = config.explain_settings(spec.name)
        if spec.kind != "effect" or not settings.enabled or settings.null_B < 1 or spec.estimator in SKIPPED:
            continue
        seed = derive_seed(config.seed, spec.name, "shap_null")
        preprocess = make_preprocessor(data.features, use_arm=False, imputer=spec.imputer, seed=seed)
        preprocess.fit(data.X.iloc[observed])
        X = encoded_frame(preprocess, data.X.iloc[observed])
        original = data.X.iloc[observed][list(data.covariates)].reset_index(drop=True)
        max_rows, max_background = _caps("effect", spec.estimator, settings)
        model = make_effect_model(spec.estimator, **{"random_state": seed, **spec.params})
        fit_and_explain = make_fit_and_explain(model, data.y[observed], X, groups=data.trial[observed],
                                               original=original, max_rows=max_rows, max_background=max_background,
                                               seed=seed)
        arm, groups = data.arm[observed], data.trial[observed]
        # the draws permutation_null would make (same function, same seed), so the result equals permutation_null's
        draws = [(arm, None)] + null_draws(arm, groups, B=settings.null_B, seed=seed, Y=data.y[observed])
        tasks += [NullTask(spec.name, i, fit_and_explain, a, y) for i, (a, y) in enumerate(draws)]
        message = insufficient_B_message(settings.null_B)
        if message is not None:
            warnings.warn(f"{spec.name}: {message}", UserWarning, stacklevel=2)
    return tasks


def null_references(config, data, *, n_jobs: int = 1) -> tuple[dict[str, Any], dict[str, float]]:
    """({model: NullReference}, {model: seconds}) for the effect models with a permutation null."""
    tasks = null_tasks(config, data)
    if not tasks:
        return {}, {}
    if n_jobs == 1 or len(tasks) == 1:
        outputs = [_run_null_task(task) for task in tasks]
    else:
        from joblib import Parallel, delayed

        outputs = list(Parallel(n_jobs=n_jobs)(delayed(_run_null_task)(task) for task in tasks))
    return null_reference_from_outputs(outputs)


def null_reference_from_outputs(outputs) -> tuple[dict[str, Any], dict[str, float]]:
    """Collect ``_run_null_task`` outputs into ({model: NullReference}, {model: seconds})."""
    from mbi_predict.explain import null_reference

    by_model: dict[str, dict[int, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for name, index, importance, spent in outputs:
        by_model.setdefault(name, {})[index] = importance
        seconds[name] = seconds.get(name, 0.0) + spent
    references = {}
    for name, fits in by_model.items():
        null_rows = [fits[i] for i in sorted(fits) if i > 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the "p cannot reach alpha" note is kept in notes
            references[name] = null_reference(fits[0], null_rows)
    return references, seconds


# ------------------------------------------------------------------------------------------- aggregation

def combined_explanation(shaps: list[FoldShap]):
    """The held-out explanations of every fold stacked (same features), for the beeswarm and dependence plots."""
    from mbi_predict.explain import Explanation

    usable = [s for s in shaps if s.explanation is not None]
    if not usable:
        return None, None
    names = usable[0].explanation.feature_names
    usable = [s for s in usable if s.explanation.feature_names == names]
    parts = [s.explanation for s in usable]
    values = np.vstack([e.values for e in parts])
    kinds = {"linear": 0, "tree": 1, "permutation": 2}
    combined = Explanation(values=values, base_value=float(np.mean([e.base_value for e in parts])),
                           feature_names=names,
                           data=pd.concat([e.data.reset_index(drop=True) for e in parts], ignore_index=True),
                           kind=max((e.kind for e in parts), key=kinds.__getitem__),
                           additivity_error=max(e.additivity_error for e in parts), output=parts[0].output,
                           seconds=sum(e.seconds for e in parts), row_index=np.arange(len(values)),
                           n_background=parts[0].n_background, method=parts[0].method)
    arm = np.concatenate([s.arm for s in usable])
    if len(values) > PLOT_ROWS:  # plots need no more; the beeswarm's cost grows with the dots
        keep = np.sort(np.random.default_rng(0).choice(len(values), PLOT_ROWS, replace=False))
        combined = Explanation(values=values[keep], base_value=combined.base_value, feature_names=names,
                               data=combined.data.iloc[keep].reset_index(drop=True), kind=combined.kind,
                               additivity_error=combined.additivity_error, output=combined.output,
                               seconds=combined.seconds, row_index=np.arange(len(keep)),
                               n_background=combined.n_background, method=combined.method)
        arm = arm[keep]
    return combined, arm


def shap_block(kind: str, results: list, *, settings, null_ref=None, interactions: list[dict] | None = None,
               level: float = 0.95, method: str = "REML") -> tuple[dict[str, Any], pd.DataFrame | None]:
    """The ``shap`` block of one model for summary.json (aggregates only) and its stability table."""
    from mbi_predict.explain import ranking_records, side_by_side, stability

    shaps = {r.held_out: r.shap for r in results if r.shap is not None}
    skipped = next((s.skipped for s in shaps.values() if s.skipped), None)
    if skipped or not shaps:
        return {"ranking": [], "null": None, "rule": None, "skipped": skipped or "no fold was explained",
                "seconds": float(sum(s.seconds for s in shaps.values()))}, None
    table = stability({k: s.importance for k, s in shaps.items()}, top_k=settings.top_k,
                      variances_by_fold={k: s.variance for k, s in shaps.items()}, level=level, method=method)
    first = next(iter(shaps.values()))
    errors = [s.additivity_error for s in shaps.values()]
    notes = sorted({n for s in shaps.values() for n in s.notes})
    if null_ref is not None and not null_ref.tested:
        notes.append(f"permutation null: {null_ref.reason}")
    block: dict[str, Any] = {
        "ranking": ranking_records(table, null_ref),
        "null": None if null_ref is None else null_ref.to_dict(),
        "rule": None if null_ref is None else null_ref.describe_rule(),
        "output": first.output, "kind": first.kind, "method": first.method,
        "additivity": {"max_error": float(np.nanmax(errors)), "per_fold": {k: s.additivity_error
                                                                            for k, s in shaps.items()},
                       "note": "max |sum(SHAP) + base - model output| over the explained rows of each fold"},
        "rows_per_fold": int(first.n_rows), "background": int(first.n_background),
        "top_k": settings.top_k, "pooling": "random effects over held-out trials (importance variance from rows)",
        "notes": notes, "seconds": float(sum(s.seconds for s in shaps.values())),
    }
    if null_ref is None and kind == "effect":
        block["null_note"] = "no permutation null (explain.null_B = 0): importances are not tested"
    if kind == "effect" and interactions is not None:
        merged = side_by_side(table, interactions)
        block["classical"] = json.loads(merged.to_json(orient="records"))
    return block, table


def shap_plots(out_dir: Path, name: str, kind: str, results: list, table: pd.DataFrame | None, *, settings,
               null_ref=None, data=None, participant_level: bool = False,
               style: figstyle.FigureSettings | None = None) -> list[Path]:
    """Beeswarm, importance bars (CI + null band), dependence (prognosis, by arm), benefit profile (effect), saved
    with ``figstyle.save_figure`` in ``style`` (the run's ``figures:`` format and dpi; default png at 150 dpi).

    Aggregates only by default (``explain.plots``: binned summaries, bins under 10 participants suppressed);
    ``participant_level=True`` draws the per-participant beeswarm and dependence scatter, for local use only."""
    from mbi_predict.explain import plots as shap_figures

    if table is None:
        return []
    style = style or figstyle.FigureSettings()
    combined, arm = combined_explanation([r.shap for r in results if r.shap is not None])

    def save(figure, what: str) -> Path:
        return figstyle.save_figure(figure, out_dir / f"shap_{name}_{what}", format=style.format, dpi=style.dpi)

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written.append(save(shap_figures.importance_bars(table, null_ref, title=f"{name}: mean |SHAP| across "
                                                                                 "held-out trials"), "importance"))
        if combined is not None:
            written.append(save(shap_figures.beeswarm(combined, title=f"{name}: SHAP on held-out trials",
                                                      participant_level=participant_level), "beeswarm"))
        top = [f for f in table["feature"].head(settings.dependence_top) if combined is not None
               and f in combined.feature_names]
        if top and kind == "prognostic":
            written.append(save(shap_figures.dependence(combined, top, color_by=arm,
                                                        participant_level=participant_level), "dependence"))
        if top and kind == "effect" and data is not None:
            cate = np.concatenate([r.predictions["cate"].to_numpy() for r in results])
            rows = np.concatenate([r.test_rows for r in results])
            frame = data.X.iloc[rows][list(data.covariates)].reset_index(drop=True)
            written.append(save(shap_figures.benefit_profile(cate, frame, top), "benefit-profile"))
    return written
