"""Render a model card dict as Markdown or as one self-contained HTML file.

Both renderers walk the same list of blocks (`card_blocks`), so the two formats cannot drift apart in content;
they differ only in syntax and in how figures travel: Markdown links PNG files written beside it (code hosting
sites do not render data URIs), HTML embeds them as base64 data URIs so the file opens offline on its own.
Numbers are formatted to three significant digits for reading; the JSON card keeps them exact.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [text]) | ("table", headers, rows) | ("fig", figure)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) or "–"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or "–"
    return str(value)


def _or_not_recorded(value: Any) -> str:
    from mbi_predict.report.card import NOT_RECORDED

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
    if d["hyperparameters"]:
        blocks += [("p", "Hyperparameters (per held-out trial when tuned inside each fold):"),
                   ("table", ["Fold", "Parameters"], [[k, fmt(v)] for k, v in d["hyperparameters"].items()])]
    return blocks


def _intended_use(card: dict) -> list[Block]:
    use = card["intended_use"]
    return [("h", 2, "Intended use"), ("h", 3, "Primary uses"), ("ul", use["primary_uses"]),
            ("h", 3, "Primary users"), ("ul", use["primary_users"]),
            ("h", 3, "Out-of-scope uses"), ("ul", use["out_of_scope"])]


def _training_data(card: dict) -> list[Block]:
    t = card["training_data"]
    rows = [["Participants", _or_not_recorded(t["n_participants"])], ["Trials", _or_not_recorded(t["n_trials"])],
            ["Countries", _or_not_recorded(t["countries"])], ["Settings", _or_not_recorded(t["settings"])],
            ["Control conditions", _or_not_recorded(t["control_types"])],
            ["Instruments", _or_not_recorded(t["instruments"])],
            ["Standardisation", _or_not_recorded(t["standardisation"])],
            ["Missingness", _or_not_recorded(t["missingness"])], ["Data SHA-256", t["sha256"]]]
    blocks: list[Block] = [("h", 2, "Training data"), ("table", ["Field", "Value"], rows)]
    if t["trials"]:
        headers = list(dict.fromkeys(key for trial in t["trials"] for key in trial))
        blocks += [("h", 3, "Trials"), ("table", headers, [[fmt(trial.get(h)) for h in headers]
                                                           for trial in t["trials"]])]
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
    blocks: list[Block] = [("h", 2, "Evaluation"),
                           ("p", f"Validation scheme: {e['scheme']}. {e['validation'].get('note') or ''}".strip())]
    if e["validation"].get("itt_note"):
        blocks.append(("p", e["validation"]["itt_note"]))
    if e["pooled"]:
        rows = [[row["metric"], fmt(row.get("estimate")), f"{fmt(row.get('ci_low'))} to {fmt(row.get('ci_high'))}",
                 f"{fmt(row.get('pi_low'))} to {fmt(row.get('pi_high'))}", fmt(row.get("tau2"))]
                for row in e["pooled"]]
        blocks += [("h", 3, "Pooled across held-out trials"),
                   ("table", ["Metric", "Estimate", f"{pct} CI", f"{pct} prediction interval", "tau²"], rows)]
    if e["per_trial"]:
        headers = list(dict.fromkeys(key for row in e["per_trial"] for key in row))
        blocks += [("h", 3, "Per held-out trial"),
                   ("table", headers, [[fmt(row.get(h)) for h in headers] for row in e["per_trial"]])]
    if e["metric_definitions"]:
        blocks += [("h", 3, "Metrics"), ("ul", [f"{k}: {v}" for k, v in e["metric_definitions"].items()])]
    return blocks


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


def _explanations(card: dict) -> list[Block]:
    x = card["explanations"]
    blocks: list[Block] = [("h", 2, "Explanations")]
    if x["shap_ranking"]:
        headers = list(dict.fromkeys(key for row in x["shap_ranking"] for key in row))
        blocks += [("h", 3, "SHAP feature importance"),
                   ("table", headers, [[fmt(row.get(h)) for h in headers] for row in x["shap_ranking"]])]
    else:
        blocks.append(("p", "SHAP feature importance: not recorded in this run."))
    if x["heterogeneity"]:
        blocks += [("h", 3, "Heterogeneity of treatment effect"),
                   ("table", ["Field", "Value"], [[k, fmt(v)] for k, v in x["heterogeneity"].items()])]
    elif card["model_details"]["kind"] == "effect":
        blocks.append(("p", "Heterogeneity verdict: not recorded in this run."))
    return blocks


def card_blocks(card: dict) -> list[Block]:
    blocks: list[Block] = [("h", 1, card["title"])]
    blocks += _details(card) + _intended_use(card) + _training_data(card) + _evaluation(card) + _figures(card)
    blocks += _subgroups(card) + _explanations(card)
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
    from mbi_predict.io import atomic_path

    links = {}
    folder = out_path.parent / f"{out_path.stem}_figures"
    for figure in card["figures"]:
        target = folder / figure_file_name(figure)
        with atomic_path(target) as tmp:
            tmp.write_bytes(base64.b64decode(figure["data_base64"]))
        links[figure["path"]] = f"{folder.name}/{target.name}"
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
            lines += [f"![{figure['caption']}]({figure_links[figure['path']]})", "", f"*{figure['caption']}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------------- html

_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
figure{margin:1em 0}img{max-width:100%}figcaption{font-style:italic;color:#555}"""


def to_html(card: dict) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(card['title'])}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>"]
    for block in card_blocks(card):
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{esc(str(item))}</li>" for item in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{esc(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in block[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "fig":
            figure = block[1]
            src = f"data:{figure['media_type']};base64,{figure['data_base64']}"
            parts.append(f'<figure><img src="{src}" alt="{esc(figure["caption"])}">'
                         f"<figcaption>{esc(figure['caption'])}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
