"""The study report's sections as blocks (see ``study_render`` for the block kinds), from `StudyInputs`.

Order: at a glance; data and harmonisation; the classical meta-analysis; the model leaderboard with the run-level
heterogeneity verdict first; who benefits (SHAP, best linear projection, within-trial interactions side by side);
groups, harm and a treatment policy; calibration and benefit plots; the model cards; about this report. Each
section says what the run did not do instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbi_predict import figstyle
from mbi_predict.numbers import estimate_ci, interval, label, number, p_text, p_value, sentence
from mbi_predict.report.card_groups import groups_section, harm_blocks
from mbi_predict.report.card_source import primary_metric, reference_models, select_model, who_benefits
from mbi_predict.report.captions import caption
from mbi_predict.report.study_inputs import StudyInputs, relative_link
from mbi_predict.report.study_figures import comparison_figure, comparison_rows, describe_interval, gates_figure

Block = tuple
VERDICTS = {"evidence": "evidence that the effect differs between participants",
            "no_evidence": "no evidence that the effect differs between participants",
            "not_tested": "not tested"}
EFFECT_METRICS = ("rate_autoc", "benefit_calibration_slope", "c_for_benefit", "dr_loss_vs_constant")


def _figure(name: str, data: bytes, caption_text: str) -> dict[str, Any]:
    return {"name": name, "data": data, "caption": caption_text, "media_type": figstyle.media_type(name)}


def _render(fig: Any, name: str, caption_text: str, settings: figstyle.FigureSettings) -> dict[str, Any]:
    """A figure drawn by the report, as embeddable bytes (SVG when the run asks for SVG, else PNG)."""
    import io

    fmt = "svg" if settings.format == "svg" else "png"
    buffer = io.BytesIO()
    with figstyle.style():
        fig.savefig(buffer, format=fmt, dpi=settings.dpi, bbox_inches="tight",
                    metadata={"png": {"Software": None}, "svg": {"Date": None}}[fmt])
    return _figure(f"{name}.{fmt}", buffer.getvalue(), caption_text)


def _run_plot(inputs: StudyInputs, stem: str) -> dict[str, Any] | None:
    for suffix in (".svg", ".png"):
        key = f"plots/{stem}{suffix}"
        if key in inputs.plots:
            return _figure(Path(key).name, inputs.plots[key], caption(key, inputs.summary["models"]))
    return None


def _plots(inputs: StudyInputs, stems: list[str]) -> list[dict[str, Any]]:
    return [figure for figure in (_run_plot(inputs, stem) for stem in stems) if figure is not None]


def _note(text: str) -> Block:
    return ("note", text)


# --------------------------------------------------------------------------------------------- sections

def _glance(inputs: StudyInputs, effect: str | None, prognostic: str | None) -> list[Block]:
    s = inputs.summary
    data = s.get("data") or {}
    analysed = data.get("analysed") or {}
    held_out = (s.get("validation") or {}).get("held_out") or []
    items = [f"Outcome {s.get('outcome')} ({s.get('outcome_type') or 'type not recorded'}), MBI against "
             f"{s.get('control_type') or 'control'} control; {number(analysed.get('n_participants'))} participants "
             f"of {number(analysed.get('n_trials'))} trials analysed ({number(data.get('n_participants'))} "
             f"harmonised from {number(data.get('n_trials'))}); {len(held_out)} trials held out in turn."]
    if prognostic:
        metric, _ = primary_metric(s)
        pooled = (s["models"][prognostic].get("pooled") or {}).get(metric) or {}
        comparison = s.get("comparison_to_reference") or {}
        row = (comparison.get("models") or {}).get(prognostic) or {}
        against = ""
        if row:
            against = (f"; it {'beats' if row.get('beats_reference') else 'does not beat'} the reference model "
                       f"({label(metric)} {number(row.get('reference_pooled'))}), difference "
                       f"{estimate_ci(row.get('difference'), row.get('ci_low'), row.get('ci_high'))}")
        items.append(f"Best prognostic model other than the reference comparator: {prognostic}, pooled "
                     f"{label(metric)} {describe_interval(pooled)}{against}.")
    if effect:
        ate = s["models"][effect].get("ate_clustered") or {}
        if ate.get("estimate") is not None:
            items.append(f"Average effect of the MBI (doubly robust, trial-clustered): "
                         f"{estimate_ci(ate.get('estimate'), ate.get('ci_low'), ate.get('ci_high'))} "
                         "(MBI minus control; negative = less of the outcome).")
    head: list[Block] = [("h", 2, "At a glance")]
    run = s.get("heterogeneity")
    if isinstance(run, dict) and run.get("verdict"):
        head.append(("verdict", run["verdict"], "Does the effect of the MBI differ between people? "
                                                f"{sentence(VERDICTS.get(run['verdict'], run['verdict']))} "
                                                f"(one pre-declared verdict per run: {_rule(run)})."))
    return head + [("ul", items)]


def _rule(run: dict[str, Any]) -> str:
    if run.get("rule") == "primary":
        return f"the primary model {run.get('primary_model')}'s verdict, alpha {number(run.get('alpha'))}"
    return f"Holm's step-down over the effect models, alpha {number(run.get('alpha'))}"


def _data(inputs: StudyInputs, page: Path) -> list[Block]:
    s = inputs.summary
    data = s.get("data") or {}
    blocks: list[Block] = [("h", 2, "Data and harmonisation")]
    standard = data.get("standardisation")
    if isinstance(standard, dict):
        blocks.append(("p", f"Scores were standardised {str(standard.get('method', '')).replace('_', '-')}: "
                            f"{standard.get('rule')}."))
    trials = data.get("trials") or []
    if trials:
        keys = [k for k in ("trial_id", "n", "n_mbi", "n_control", "control_types", "mbi_type", "setting",
                            "country") if any(k in t for t in trials)]
        rows = [[", ".join(t[k]) if isinstance(t.get(k), list) else number(t.get(k)) if isinstance(t.get(k), int)
                 else str(t.get(k, "–")).replace("_", " ") for k in keys] for t in trials]
        names = {"trial_id": "trial", "n_mbi": "n MBI", "mbi_type": "MBI type"}
        blocks += [("h", 3, "Trials"), ("table", [names.get(k, k.replace("_", " ")) for k in keys], rows)]
    else:
        blocks.append(_note("Per-trial descriptions were not recorded in this run."))
    skipped = (s.get("validation") or {}).get("skipped") or []
    if skipped:
        blocks.append(("p", "Not analysed: " + "; ".join(f"{e.get('trial_id')} ({e.get('reason')})"
                                                        for e in skipped) + "."))
    missing = data.get("missingness")
    if isinstance(missing, dict) and missing:
        shares = sorted(((k, v) for k, v in missing.items() if isinstance(v, (int, float)) and v > 0),
                        key=lambda item: -item[1])
        if shares:
            blocks += [("h", 3, "Missing values"),
                       ("p", "Share of participants without a value (missing values are imputed inside each "
                             "training fold for the models, multiply within trials for the meta-analysis): "
                             + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares) + ".")]
    instruments = data.get("instruments")
    if isinstance(instruments, dict) and instruments:
        blocks += [("h", 3, "Instruments"), ("table", ["Construct", "Instruments"],
                                             [[k, ", ".join(v) if isinstance(v, list) else str(v)]
                                              for k, v in instruments.items()])]
    if inputs.harmonisation is not None:
        blocks.append(("link", "The harmonisation report", relative_link(inputs.harmonisation, page),
                       "per-trial raw-scale scores before standardisation, coverage flags, missingness by arm."))
    else:
        blocks.append(_note("No harmonisation report was found beside the run (harmonise with --report DIR to "
                            "write one)."))
    return blocks


def _meta(inputs: StudyInputs, settings: figstyle.FigureSettings) -> list[Block]:
    from mbi_predict.meta.plots import meta_forest_from_dict

    blocks: list[Block] = [("h", 2, "Classical two-stage meta-analysis")]
    if not inputs.metas:
        return blocks + [_note("The classical meta-analysis was not run for this report: no meta.json in the "
                               "run's meta folder or beside the run (mbi-predict meta IPD --outcome COL --out "
                               "DIR, then mbi-predict report RUN --meta DIR).")]
    outcome, control = inputs.summary.get("outcome"), inputs.summary.get("control_type")
    ordered = sorted(inputs.metas, key=lambda item: (item[1].get("outcome") != outcome,
                                                     item[1].get("control") != control, str(item[0])))
    rows, figures = [], []
    for path, record in ordered:
        pooled = record.get("pooled") or {}
        rows.append([record.get("outcome"), record.get("control"), record.get("measure") or "–",
                     number(pooled.get("k")), estimate_ci(pooled.get("estimate"), pooled.get("ci_low"),
                                                          pooled.get("ci_high")),
                     interval(pooled.get("pi_low"), pooled.get("pi_high")), number(pooled.get("tau2")),
                     f"{pooled['i2']:.0f}%" if isinstance(pooled.get("i2"), (int, float)) else "–"])
        fig = meta_forest_from_dict(record)
        if fig is not None:
            name = f"meta-forest_{record.get('outcome')}_vs_{record.get('control')}"
            figures.append(_render(fig, name, f"Effect of the MBI on {record.get('outcome')} against "
                                              f"{record.get('control')} control in each trial and pooled "
                                              "(random effects), with the prediction interval for a new trial; "
                                              "a log-scale risk ratio for a binary outcome.", settings))
    blocks += [("p", "Per trial: ANCOVA of the outcome on the arm (adjusted for its baseline) on multiply imputed "
                     "data, combined by Rubin's rules; pooled across trials by random effects."),
               ("table", ["Outcome", "Control", "Measure", "k", "Pooled (95% CI)", "95% PI", "τ²", "I²"], rows),
               ("figs", figures)]
    first = ordered[0][1]
    interactions = first.get("interactions") or []
    if interactions:
        blocks += [("h", 3, "Within-trial effect modifiers"),
                   ("table", ["Modifier", "Within-trial interaction (95% CI)", "p", "Across-trial (ecological)"],
                    [[i.get("modifier"), estimate_ci(i.get("estimate"), i.get("ci_low"), i.get("ci_high")),
                      p_value(i.get("pvalue")), number(i.get("across_trial_estimate"))] for i in interactions])]
    egger = first.get("egger") or {}
    if egger.get("done"):
        blocks.append(("p", f"Egger's test for small-study effects: intercept {number(egger.get('intercept'))}, "
                            f"{p_text(egger.get('pvalue'))} (k = {egger.get('k')})."))
    return blocks


def _leaderboard(inputs: StudyInputs, settings: figstyle.FigureSettings) -> list[Block]:
    s = inputs.summary
    blocks: list[Block] = [("h", 2, "Models and the heterogeneity verdict")]
    run = s.get("heterogeneity")
    if isinstance(run, dict) and run.get("verdict"):
        blocks.append(("verdict", run["verdict"], f"Run-level verdict: {VERDICTS.get(run['verdict'], run['verdict'])}"
                                                  f". Rule: {_rule(run)}."
                                                  + (f" Recorded reason: {run['reason']}." if run.get("reason")
                                                     else "")))
        rows = [[name, VERDICTS.get(m.get("verdict"), str(m.get("verdict"))).replace(
                    " that the effect differs between participants", ""),
                 p_value(m.get("p_rate")), p_value(m.get("p_slope")),
                 "yes" if m.get("beats_constant") else "no", "yes" if m.get("calibrated") else "no"]
                for name, m in (run.get("models") or {}).items()]
        blocks.append(("table", ["Effect model", "Verdict", "p (RATE)", "p (slope)", "Beats one average effect",
                                 "Calibrated"], rows))
        blocks.append(("p", "Evidence needs the pooled held-out RATE and benefit-calibration slope both positive "
                            "(permutation-calibrated p-values, since held-out trials are not independent) and the "
                            "model to beat one average effect for everyone; uncalibrated models are not tested."))
    elif any(e.get("task") == "effect" for e in s["models"].values()):
        blocks.append(_note("This run recorded no run-level heterogeneity verdict."))
    else:
        blocks.append(_note("No effect model was run, so there is no heterogeneity verdict."))
    metric, lower = primary_metric(s)
    references = reference_models(s)
    prognostic = comparison_rows(s, metric, kind="prognostic", lower_is_better=lower)
    if prognostic:
        extra = [m for m in ("r2", "calibration_slope") if m != metric]
        rows = []
        for row in prognostic:
            pooled = s["models"][row["model"]].get("pooled") or {}
            rows.append([row["model"] + (" (reference)" if row["model"] in references else ""),
                         estimate_ci(row["estimate"], row["ci_low"], row["ci_high"]),
                         interval(row.get("pi_low"), row.get("pi_high")),
                         *[number((pooled.get(m) or {}).get("estimate")) for m in extra]])
        blocks += [("h", 3, "Prognostic models"),
                   ("table", ["Model", f"{label(metric)} (95% CI)", "95% PI", *map(label, extra)], rows)]
        fig = comparison_figure(prognostic, metric, highlight=references)
        figs = [_render(fig, f"comparison_prognostic_{metric}", caption(f"comparison_{metric}", []), settings)]
    else:
        blocks.append(_note("No prognostic model was run."))
        figs = []
    effect = comparison_rows(s, "rate_autoc", kind="effect", lower_is_better=False)
    if effect:
        rows = [[name] + [estimate_ci(*(((s["models"][name].get("pooled") or {}).get(m) or {}).get(k)
                                        for k in ("estimate", "ci_low", "ci_high"))) for m in EFFECT_METRICS]
                for name in [r["model"] for r in effect]]
        blocks += [("h", 3, "Effect models"), ("table", ["Model", *[label(m) for m in EFFECT_METRICS]], rows)]
        for metric_name in ("rate_autoc", "benefit_calibration_slope"):
            fig = comparison_figure(comparison_rows(s, metric_name, kind="effect", lower_is_better=False),
                                    metric_name)
            if fig is not None:
                figs.append(_render(fig, f"comparison_effect_{metric_name}",
                                    caption(f"comparison_{metric_name}", []), settings))
    return blocks + [("figs", figs)]


def _who_benefits(inputs: StudyInputs, effect: str | None) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Who benefits")]
    if effect is None:
        return blocks + [_note("No effect model was run: who benefits was not estimated.")]
    w = who_benefits(inputs.summary, effect)
    blocks.append(("p", f"Three answers for {effect}, side by side: SHAP (how much the predictions lean on a "
                        "covariate), the best linear projection (the linear trend of the effect in it, others held "
                        "fixed) and the within-trial interactions (the classical analysis)."))
    ran = {key: meta["status"] == "run" for key, meta in w["methods"].items()}
    rows = []
    for row in w["rows"]:
        shap = row["shap"]
        shap_cell = ("not run" if not ran["shap"] else "not ranked" if shap is None
                     else estimate_ci(shap["importance"], shap["ci_low"], shap["ci_high"]))
        beats = "–" if shap is None else {True: "yes", False: "no"}.get(shap.get("beats_null"), "not tested")

        def cells(items: list | None, method: str) -> str:
            if not ran[method]:
                return "not run"
            return "; ".join(estimate_ci(c["estimate"], c["ci_low"], c["ci_high"]) for c in items) if items else "–"

        flagged = [m for m, flag in row["flags"].items() if flag is True]
        rows.append([row["covariate"], shap_cell, beats, cells(row["blp"], "blp"),
                     cells(row["interactions"], "interactions"),
                     ", ".join({"shap": "SHAP", "blp": "BLP", "interactions": "interactions"}[m] for m in flagged)
                     or "none"])
    if rows:
        blocks.append(("table", ["Covariate", "SHAP importance (CI)", "Beats null", "BLP slope (CI)",
                                 "Within-trial interaction (CI)", "Flagged by"], rows))
    blocks.append(("p", w["agreement"]))
    for key, meta in w["methods"].items():
        if meta["status"] != "run":
            name = {"shap": "SHAP", "blp": "The best linear projection", "interactions": "The interactions"}[key]
            blocks.append(_note(f"{name} was not run ({meta.get('note') or 'not recorded in this run'})."))
    blocks.append(("figs", _plots(inputs, [f"shap_{effect}_importance", f"shap_{effect}_benefit-profile"])))
    return blocks


def _groups(inputs: StudyInputs, effect: str | None, settings: figstyle.FigureSettings) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Groups, harm and a treatment policy")]
    if effect is None:
        return blocks + [_note("No effect model was run: group effects, harm and policy were not estimated.")]
    entry = inputs.summary["models"][effect]
    gates = entry.get("gates") or {}
    if gates.get("groups"):
        rows = [[str(g.get("group")), estimate_ci(g.get("estimate"), g.get("ci_low"), g.get("ci_high")),
                 interval(g.get("pi_low"), g.get("pi_high")), number(g.get("k"))] for g in gates["groups"]]
        blocks += [("h", 3, f"Group effects (GATES) of {effect}"),
                   ("p", f"Observed benefit in the held-out trials by fifth of predicted benefit, on the scale: "
                         f"{gates.get('scale') or 'not recorded'}. {gates.get('note') or ''}".strip()),
                   ("table", ["Fifth", "Benefit (95% CI)", "95% PI", "Trials"], rows)]
        top = gates.get("top_minus_bottom") or {}
        if top.get("estimate") is not None:
            blocks.append(("p", f"Most minus least predicted benefit: {describe_interval(top)}"
                                + (f", {p_text(top.get('p_value'))} ({top.get('method')})"
                                   if top.get("p_value") is not None else "") + "."))
        fig = gates_figure(gates, effect)
        if fig is not None:
            blocks.append(("figs", [_render(fig, f"gates_{effect}", f"Observed benefit of the MBI by fifth of "
                                                                   f"predicted benefit ({effect}), with 95% CIs "
                                                                   "(thick) and prediction intervals (thin).",
                                            settings)]))
    else:
        blocks.append(_note(f"Group effects were not recorded for {effect}."))
    section = groups_section(inputs.summary, entry)
    if section is not None and section.get("recorded") and entry.get("harm"):
        blocks += [("h", 3, "Predicted harm")] + harm_blocks(section)
    policy = entry.get("policy") or {}
    if policy:
        blocks += [("h", 3, "Treatment policy"),
                   ("p", f"Rule: {policy.get('rule')} ({policy.get('rule_in_folds') or 'folds not recorded'}). "
                         f"Value against offering the MBI to no one: "
                         f"{describe_interval(policy.get('value_vs_none') or {})}; against offering it to "
                         f"everyone: {describe_interval(policy.get('value_vs_all') or {})}. "
                         f"{sentence(str(policy.get('note') or ''))}".strip())]
    return blocks


def _calibration(inputs: StudyInputs, effect: str | None, prognostic: str | None) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Calibration and benefit")]
    stems = ([f"calibration_{prognostic}"] if prognostic else [])
    if effect:
        stems += [f"benefit-calibration_{effect}_pooled", f"toc_{effect}", f"benefit-calibration_{effect}_by-trial"]
    figures = _plots(inputs, stems)
    if not figures:
        note = "The run folder holds no embeddable plots for these models"
        if inputs.linked_plots:
            note += f" (its {len(inputs.linked_plots)} figures are PDFs: see the run's plots folder)"
        return blocks + [_note(note + ".")]
    missing = [stem for stem in stems if _run_plot(inputs, stem) is None]
    blocks.append(("figs", figures))
    if missing:
        blocks.append(_note("Not drawn by this run: " + ", ".join(m.replace("_", " ") for m in missing) + "."))
    return blocks


def _cards(inputs: StudyInputs, page: Path) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Model cards")]
    rows = []
    for name, entry in inputs.summary["models"].items():
        files = inputs.cards.get(name) or []
        links = [(p.suffix.lstrip(".").upper(), relative_link(p, page)) for p in files]
        rows.append((name, entry.get("task", "prognostic"), entry.get("estimator") or "–", links))
    blocks.append(("cards", rows))
    if not inputs.cards:
        blocks.append(_note("No model card was written for this run yet: mbi-predict card RUN --model NAME "
                            "--format html writes one."))
    return blocks


def _about(inputs: StudyInputs) -> list[Block]:
    s = inputs.summary
    return [("h", 2, "About this report"),
            ("ul", [f"Run: {inputs.source}; experiment {s.get('experiment')}; MLflow run "
                    f"{s.get('mlflow_run_id') or 'not tracked'}; made {s.get('created') or 'date not recorded'} "
                    f"with mbi_predict {s.get('package_version') or '?'}"
                    + (f" (commit {str(s['git_commit'])[:10]})" if s.get("git_commit") else "") + ".",
                    f"Data SHA-256: {(s.get('data') or {}).get('sha256') or 'not recorded'}.",
                    "Every number is read from the run's summary.json and the meta-analysis records; nothing is "
                    "re-estimated. Aggregates only: no participant's row, identifier or value is shown."])]


def study_blocks(inputs: StudyInputs, *, page: Path, figure_format: str | None = None,
                 dpi: int | None = None) -> list[Block]:
    """Every section, in reading order."""
    settings = figstyle.settings(figure_format, dpi)
    s = inputs.summary
    effects = [n for n, e in s["models"].items() if e.get("task") == "effect"]
    primary = (s.get("heterogeneity") or {}).get("primary_model")
    effect = primary if primary in effects else (effects[0] if effects else None)
    try:
        prognostic = select_model(s) if any(e.get("task", "prognostic") == "prognostic"
                                            for e in s["models"].values()) else None
    except Exception:  # noqa: BLE001 - no pooled primary metric: the report says so below
        prognostic = None
    blocks: list[Block] = [("h", 1, f"Study report: {s.get('experiment') or 'experiment'}"),
                           ("p", f"Who benefits from the MBI on {s.get('outcome')}: leave-one-trial-out validation "
                                 "of prognostic and treatment-effect models, beside the classical meta-analysis.")]
    blocks += _glance(inputs, effect, prognostic) + _data(inputs, page) + _meta(inputs, settings)
    blocks += _leaderboard(inputs, settings) + _who_benefits(inputs, effect) + _groups(inputs, effect, settings)
    blocks += _calibration(inputs, effect, prognostic) + _cards(inputs, page) + _about(inputs)
    return [b for b in blocks if not (b[0] == "figs" and not b[1])]
