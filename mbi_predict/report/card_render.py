"""Render a model card dict as Markdown or as one self-contained HTML file.

Both renderers walk the same list of blocks (`card_blocks`), so the two formats cannot drift apart in content;
they differ only in syntax and in how figures travel: Markdown links PNG files written beside it (code hosting
sites do not render data URIs), HTML embeds them as base64 data URIs so the file opens offline on its own.
Numbers are formatted to three significant digits for reading; the JSON card keeps them exact.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from mbi_predict.numbers import label, sentence

Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", headers, rows) | ("fig", figure)


def fmt(value: Any) -> str:
    """A cell as text: numbers to three significant digits (`mbi_predict.numbers`), lists joined; a mapping as
    "key value" pairs only as a last resort (the known mappings are rendered as tables or sentences)."""
    from mbi_predict.numbers import number

    if value is None:
        return "–"
    if isinstance(value, (bool, int, float)):
        return number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or "–"
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {fmt(v)}" for k, v in value.items()) or "–"
    return str(value)


def fmt_p(value: Any) -> str:
    from mbi_predict.numbers import p_value

    return p_value(value)


def hyperparameter_blocks(per_fold: dict[str, Any]) -> list[Block]:
    """Hyper-parameters as one row per parameter: its value, or its range over the folds when tuned per fold.
    Folds with no parameters set, and parameters never set, make no rows; none at all is one sentence."""
    folds = {fold: params for fold, params in (per_fold or {}).items() if isinstance(params, dict) and params}
    if not folds:
        return [("p", "No hyper-parameter was set or tuned: the estimator's defaults were used in every fold.")]
    names = list(dict.fromkeys(key for params in folds.values() for key in params))
    rows = []
    for name in names:
        values = [params[name] for params in folds.values() if name in params and params[name] is not None]
        if not values:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if len({repr(v) for v in values}) == 1:
            shown, how = fmt(values[0]), "the same in every fold"
        elif numeric:
            shown, how = f"{fmt(min(values))} to {fmt(max(values))}", f"tuned in each of {len(values)} folds"
        else:
            distinct = list(dict.fromkeys(map(str, values)))
            shown, how = ", ".join(distinct), f"tuned in each of {len(values)} folds"
        rows.append([name.replace("_", " "), shown, how])
    return [("p", "Hyper-parameters (tuned inside each training fold, never on the held-out trial):"),
            ("table", ["Parameter", "Value", "Across folds"], rows)]


def _or_not_recorded(value: Any) -> str:
    from mbi_predict.report.card_source import NOT_RECORDED

    return NOT_RECORDED if value in (None, "", [], {}) else fmt(value)


def _details(card: dict) -> list[Block]:
    d = card["model_details"]
    rows = [["Name", d["name"]], ["Kind", d["kind"]], ["Estimator", d["estimator"]], ["Description", d["description"]],
            ["Outcome", f"{d['outcome']} ({d['outcome_task']})"], ["Features", _or_not_recorded(d["features"])],
            ["Selection", d["selection"]], ["Primary metric", d["primary_metric"]],
            ["Models in the run", fmt(d["models_in_run"])], ["Training data SHA-256", d["training_data_sha256"]],
            ["mbi_predict version (run / card)", f"{d['package_version_run']} / {d['package_version_card']}"],
            ["Run date", d["run_date"]], ["Card date", d["card_date"]], ["Experiment", d["experiment"]],
            ["MLflow run", d["mlflow_run_id"]], ["Final model", d["final_model_uri"]], ["Source", d["source"]]]
    blocks: list[Block] = [("h", 2, "Model details"), ("table", ["Field", "Value"], rows)]
    params = d["hyperparameters"] or {}
    if params and not all(isinstance(v, dict) for v in params.values()):  # one set of parameters, not per fold
        params = {"all": params}
    return blocks + hyperparameter_blocks(params)


def _intended_use(card: dict) -> list[Block]:
    use = card["intended_use"]
    return [("h", 2, "Intended use"), ("h", 3, "Primary uses"), ("ul", use["primary_uses"]),
            ("h", 3, "Primary users"), ("ul", use["primary_users"]),
            ("h", 3, "Out-of-scope uses"), ("ul", use["out_of_scope"])]


def _standardisation_text(value: Any) -> str:
    if isinstance(value, dict):
        method = str(value.get("method") or "").replace("_", "-")
        rule = value.get("rule")
        return f"{method}: {rule}" if method and rule else (method or str(rule or "")) or "–"
    return _or_not_recorded(value)


def _training_data(card: dict) -> list[Block]:
    t = card["training_data"]
    rows = [["Participants", _or_not_recorded(t["n_participants"])], ["Trials", _or_not_recorded(t["n_trials"])],
            ["Countries", _or_not_recorded(t["countries"])], ["Settings", _or_not_recorded(t["settings"])],
            ["Control conditions", _or_not_recorded(t["control_types"])],
            ["Standardisation", _standardisation_text(t["standardisation"]) if t["standardisation"]
             else _or_not_recorded(None)],
            ["Data SHA-256", t["sha256"]]]
    instruments, missing = t["instruments"], t["missingness"]
    if not isinstance(instruments, dict):
        rows.insert(5, ["Instruments", _or_not_recorded(instruments)])
    if not isinstance(missing, dict):
        rows.insert(6, ["Missingness", _or_not_recorded(missing)])
    blocks: list[Block] = [("h", 2, "Training data"), ("table", ["Field", "Value"], rows)]
    if isinstance(instruments, dict) and instruments:
        blocks += [("h", 3, "Instruments"),
                   ("table", ["Construct", "Instruments used by the trials"],
                    [[construct, fmt(names)] for construct, names in instruments.items()])]
    if isinstance(missing, dict) and missing:
        shares = sorted(((name, value) for name, value in missing.items() if isinstance(value, (int, float))),
                        key=lambda item: -item[1])
        complete = [name for name, value in shares if value == 0]
        blocks += [("h", 3, "Missing values"),
                   ("table", ["Variable", "Missing"], [[name, f"{100 * value:.1f}%"] for name, value in shares
                                                      if value > 0])]
        if complete:
            blocks.append(("p", f"Complete in every participant: {', '.join(complete)}."))
    if t["trials"]:
        headers = list(dict.fromkeys(key for trial in t["trials"] for key in trial))
        blocks += [("h", 3, "Trials"), ("table", [h.replace("_", " ") for h in headers],
                                         [[fmt(trial.get(h)) for h in headers] for trial in t["trials"]])]
    else:
        blocks.append(("p", "Per-trial descriptions (N per arm, country, setting, control type): not recorded in "
                            "this run."))
    if t["excluded_trials"]:
        blocks += [("h", 3, "Trials not evaluated"),
                   ("ul", [fmt(e) if not isinstance(e, dict) else
                           f"{e.get('trial_id', '?')}: {e.get('reason', 'no reason recorded')}"
                           for e in t["excluded_trials"]])]
    return blocks


def _evaluation(card: dict) -> list[Block]:
    e = card["evaluation"]
    level = (e["validation"].get("pooling") or {}).get("level", 0.95)
    pct = f"{round(100 * level)}%" if isinstance(level, (int, float)) else "95%"
    scheme = _SCHEMES.get(str(e["scheme"]), str(e["scheme"]))
    note = str(e["validation"].get("note") or "").strip()
    blocks: list[Block] = [("h", 2, "Evaluation"),
                           ("p", sentence(f"Validation: {scheme}.") + (" " + sentence(note) if note else ""))]
    if e["validation"].get("itt_note"):
        blocks.append(("p", e["validation"]["itt_note"]))
    if e["pooled"]:
        # only the rows that mean something: a metric without an estimate is named once, not shown as dashes
        shown_rows = [row for row in e["pooled"] if not row["metric"].endswith("_cc")]
        empty = [label(row["metric"]) for row in shown_rows if row.get("estimate") is None]
        rows = [[label(row["metric"]), fmt(row.get("estimate")), _ci(row.get("ci_low"), row.get("ci_high")),
                 _ci(row.get("pi_low"), row.get("pi_high")), fmt(row.get("tau2"))]
                for row in shown_rows if row.get("estimate") is not None]
        blocks += [("h", 3, "Pooled across held-out trials"),
                   ("table", ["Metric", "Estimate", f"{pct} CI", f"{pct} prediction interval", "tau²"], rows)]
        if empty:
            blocks.append(("p", f"Not estimable in this run (too few held-out trials or participants): "
                                f"{', '.join(empty)}."))
    if e["per_trial"]:
        shown = {row["metric"] for row in e["pooled"]}
        headers = [key for key in dict.fromkeys(key for row in e["per_trial"] for key in row)
                   if key in ("trial_id", "n", "n_events") or (key in shown and key in _PER_TRIAL_METRICS)]
        blocks += [("h", 3, "Per held-out trial"),
                   ("table", headers, [[fmt(row.get(h)) for h in headers] for row in e["per_trial"]])]
    if e["metric_definitions"]:
        blocks += [("h", 3, "Metrics"), ("ul", [f"{k}: {v}" for k, v in e["metric_definitions"].items()])]
    return blocks


#: validation schemes in words
_SCHEMES = {"loto": "leave one trial out (each trial held out in turn, models fitted on the others)",
            "kfold": "participant-level K-fold cross-validation"}

#: the per-trial columns a reader needs (all metrics are in the JSON card and summary.json)
_PER_TRIAL_METRICS = ("rmse", "r2", "calibration_slope", "calibration_intercept", "c_statistic", "brier",
                      "oe_ratio", "benefit_calibration_slope", "c_for_benefit", "rate_autoc", "ate",
                      "dr_loss_vs_constant", "pehe")


def _figures(card: dict) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Calibration and forest plots")]
    if not card["figures"]:
        return blocks + [("p", "Plots: not recorded in this run.")]
    return blocks + [("fig", figure) for figure in card["figures"]]


def _subgroups(card: dict) -> list[Block]:
    s = card["subgroups"]
    blocks: list[Block] = [("h", 2, "Performance in subgroups"), ("p", s["note"])]
    if s["rows"]:
        headers = list(dict.fromkeys(key for row in s["rows"] for key in row if key != "variable"))
        blocks.append(("table", headers, [[fmt(row.get(h)) for h in headers] for row in s["rows"]]))
    return blocks


def beats_null_label(row: dict) -> str:
    """yes / no for a made test; "not tested (...)" when ``beats_null`` is None, never "yes"."""
    value = row.get("beats_null")
    status = row.get("test_status") or row.get("null_status")
    if (value is True or value is False) and status not in ("not_tested", "no_null"):
        return fmt(value)
    return "not tested (no permutation null)" if status == "no_null" else "not tested (B too small)"


def _shap_table(ranking: list[dict]) -> Block:
    rows = [[row.get("feature"), fmt(row.get("importance")), f"{fmt(row.get('ci_low'))} to {fmt(row.get('ci_high'))}",
             fmt(row.get("top_k_frequency")), fmt_p(row.get("null_p")), beats_null_label(row)] for row in ranking]
    return ("table", ["Feature", "Importance", "CI", "Top-k frequency", "Null p", "Beats null"], rows)


def _ci(low: Any, high: Any) -> str:
    from mbi_predict.numbers import interval

    return interval(low, high)


def _estimate_ci(cells: list[dict] | None, method_ran: bool, absent: str) -> tuple[str, str]:
    if not method_ran:
        return "not run", "not run"
    if not cells:
        return absent, "–"
    labelled = len(cells) > 1 or "=" in cells[0]["term"] or "[" in cells[0]["term"]
    prefix = [f"{c['term']}: " if labelled else "" for c in cells]
    est = "; ".join(f"{p}{fmt(c['estimate'])} ({fmt(c['ci_low'])} to {fmt(c['ci_high'])})"
                    for p, c in zip(prefix, cells))
    return est, "; ".join(f"{p}{fmt_p(c['pvalue'])}" for p, c in zip(prefix, cells))


def _who_benefits(w: dict) -> list[Block]:
    from mbi_predict.report.card_source import METHOD_LABELS

    ran = {key: meta["status"] == "run" for key, meta in w["methods"].items()}
    rows = []
    for row in w["rows"]:
        shap = row["shap"]
        if not ran["shap"]:
            shap_cells = ["not run"] * 3
        elif shap is None:
            shap_cells = ["–", "not ranked", "–"]
        else:
            shap_cells = [str(shap["rank"]), f"{fmt(shap['importance'])} ({fmt(shap['ci_low'])} to "
                                             f"{fmt(shap['ci_high'])})", beats_null_label(shap)]
        flagged = [METHOD_LABELS[m] for m, flag in row["flags"].items() if flag is True]
        rows.append([row["covariate"], *shap_cells, *_estimate_ci(row["blp"], ran["blp"], "not projected"),
                     *_estimate_ci(row["interactions"], ran["interactions"], "not estimated"),
                     ", ".join(flagged) or "none"])
    blocks: list[Block] = [("h", 3, "Who benefits: three answers")]
    if rows:
        blocks.append(("table", ["Covariate", "SHAP rank", "SHAP importance (CI)", "SHAP beats null",
                                 "BLP slope (CI)", "BLP p", "Within-trial interaction (CI)", "Interaction p",
                                 "Flagged by"], rows))
    blocks.append(("p", w["agreement"]))
    notes = [w["note"]]
    for key, meta in w["methods"].items():
        label = {"shap": "SHAP", "blp": "Best linear projection", "interactions": "Within-trial interactions"}[key]
        if meta["status"] != "run":
            notes.append(f"{label}: not run ({meta.get('note') or 'not recorded in this run'}).")
    if w["methods"]["shap"]["status"] == "run" and w["methods"]["shap"].get("note"):
        notes.append(f"SHAP permutation null: {w['methods']['shap']['note']}.")
    blp = w["methods"]["blp"]
    if blp["status"] == "run":
        icpt = blp.get("intercept") or {}
        notes.append(f"Best linear projection ({blp.get('method') or 'method not recorded'}): {fmt(blp.get('n'))} "
                     f"participants in {fmt(blp.get('n_clusters'))} trials, df {fmt(blp.get('df'))}; intercept "
                     f"(average effect) {fmt(icpt.get('estimate'))} ({fmt(icpt.get('ci_low'))} to "
                     f"{fmt(icpt.get('ci_high'))}). {blp.get('note') or ''}".strip())
    return blocks + [("ul", notes)]


_VERDICTS = {"evidence": "evidence of heterogeneity", "no_evidence": "no evidence of heterogeneity",
             "not_tested": "not tested"}


def _verdict_label(value: Any) -> str:
    return _VERDICTS.get(str(value), fmt(value))


def _run_verdict(run: dict | None) -> list[Block]:
    if run is None:
        return [("p", "Run-level verdict: not recorded in this run (the run predates the one-verdict-per-run "
                      "rule); see this model's own verdict below.")]
    rule = "the primary model's verdict" if run.get("rule") == "primary" else "Holm's step-down over the models"
    head = (f"Run-level verdict: {_verdict_label(run['verdict'])} (rule: {rule}"
            + (f", primary model {run['primary_model']}" if run.get("primary_model") else "")
            + f"; alpha {fmt(run.get('alpha'))}). Method: {fmt(run.get('method'))}.")
    # a model that was not calibrated has no p-value that means anything: "–", not the placeholder 1.00
    rows = [[name, _verdict_label(m.get("verdict"))]
            + ([fmt_p(m.get(key)) for key in ("p_value", "p_rate", "p_slope", "p_holm")] if m.get("calibrated")
               else ["–"] * 4)
            + [fmt(m.get("beats_constant")), fmt(m.get("calibrated"))]
            for name, m in run["models"].items()]
    blocks: list[Block] = [("p", head)]
    if rows:
        blocks.append(("table", ["Model", "Verdict", "p", "p (RATE)", "p (slope)", "Holm-adjusted p",
                                 "Beats constant effect", "Calibrated"], rows))
    return blocks + [("p", f"Reason: {run.get('reason') or 'not recorded'}")]


#: the verdict's tests in words
_TESTS = {"rate_positive": "ranking by predicted benefit (RATE) above 0",
          "calibration_slope_positive": "benefit-calibration slope above 0",
          "beats_constant_effect": "better than one average effect for everyone"}


def _test_name(name: object) -> str:
    text = str(name)
    if text.startswith("interaction:"):
        return f"arm x {text.split(':', 1)[1].replace('_', ' ')} interaction"
    return _TESTS.get(text, text.replace("_", " "))


def _model_verdict(name: str, own: dict | None) -> list[Block]:
    if own is None:
        return [("p", f"Verdict of {name}: not recorded in this run.")]
    blocks: list[Block] = [("p", f"Verdict of {name}: {_verdict_label(own.get('verdict'))}. "
                                 f"{own.get('reason') or ''}".strip())]
    if own.get("naive_verdict"):
        blocks.append(("p", f"Uncalibrated (naive) verdict, for information only: "
                            f"{_verdict_label(own['naive_verdict'])}."))
    if own.get("tests"):
        rows = [[_test_name(t.get("name")), label(str(t.get("metric"))), fmt(t.get("estimate")),
                 _ci(t.get("ci_low"), t.get("ci_high")), fmt_p(t.get("p_value")), fmt_p(t.get("naive_p")),
                 fmt(t.get("alpha")), fmt(t.get("passed")), fmt(t.get("decisive")),
                 fmt(t.get("note")).replace("raw p =", "unadjusted p =")]
                for t in own["tests"]]
        blocks.append(("table", ["Test", "Metric", "Estimate", "CI", "p", "Naive p", "Alpha", "Passed", "Decisive",
                                 "Note"], rows))
    rule = own.get("rule") or {}
    if rule:
        blocks += [("p", f"The rule was declared in the config before the results were seen; the p-values are "
                         f"{fmt(own.get('method'))}."),
                   ("table", ["Declared setting", "Value"],
                    [[str(k).replace("_", " ").capitalize(), fmt(v).replace("_", " ")] for k, v in rule.items()])]
    return blocks


def _explanations(card: dict) -> list[Block]:
    x = card["explanations"]
    effect = card["model_details"]["kind"] == "effect"
    blocks: list[Block] = [("h", 2, "Explanations")]
    if effect:
        blocks += [("h", 3, "Heterogeneity of treatment effect")] + _run_verdict(x.get("run_heterogeneity"))
        blocks += _model_verdict(card["model_details"]["name"], x.get("heterogeneity"))
        if x.get("who_benefits"):
            blocks += _who_benefits(x["who_benefits"])
    if x["shap_ranking"]:
        blocks += [("h", 3, "SHAP feature importance"), _shap_table(x["shap_ranking"])]
    else:
        blocks.append(("p", "SHAP feature importance: not recorded in this run."))
    return blocks


def card_blocks(card: dict) -> list[Block]:
    from mbi_predict.report.card_groups import groups_blocks, harm_alert

    groups = card.get("who_benefits_groups")
    blocks: list[Block] = [("h", 1, card["title"])] + harm_alert(groups)
    blocks += _details(card) + _intended_use(card) + _training_data(card) + _evaluation(card) + _figures(card)
    blocks += _subgroups(card) + groups_blocks(groups) + _explanations(card)
    blocks += [("h", 2, "Ethical considerations"), ("ul", card["ethical_considerations"]),
               ("h", 2, "Caveats and recommendations"), ("ul", card["caveats_and_recommendations"]),
               ("h", 2, "TRIPOD+AI checklist"),
               ("table", ["Item", "Topic", "Status", "Where in this card", "Note"],
                [[r["item"], r["topic"], r["status"], r["section"], r["note"]] for r in card["tripod_ai"]])]
    return blocks


# ------------------------------------------------------------------------------------------------- markdown

def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def figure_file_name(figure: dict) -> str:
    return Path(figure["path"]).name


def write_markdown_figures(card: dict, out_path: Path) -> dict[str, str]:
    """Write the card's figures to ``<stem>_figures/`` beside the Markdown file; return path -> relative link."""
    from mbi_predict.io import atomic_path, remove_stale_figures

    links = {}
    folder = out_path.parent / f"{out_path.stem}_figures"
    for figure in card["figures"]:
        target = folder / figure_file_name(figure)
        with atomic_path(target) as tmp:
            tmp.write_bytes(base64.b64decode(figure["data_base64"]))
        links[figure["path"]] = f"{folder.name}/{target.name}"
    remove_stale_figures(folder, [Path(link).name for link in links.values()])
    return links


def to_markdown(card: dict, figure_links: dict[str, str]) -> str:
    lines: list[str] = []
    for block in card_blocks(card):
        kind = block[0]
        if kind == "h":
            lines += [f"{'#' * block[1]} {block[2]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "fig":
            figure = block[1]
            link = figure_links.get(figure["path"])
            # without a link (the registry's description has no files beside it) the caption stands alone
            lines += ([f"![{figure['caption']}]({link})", ""] if link else []) + [f"*{figure['caption']}*", ""]
    return "\n".join(lines).rstrip() + "\n"

