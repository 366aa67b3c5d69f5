"""Render the study report's blocks as one self-contained HTML page and as Markdown.

Blocks: ("h", level, text), ("p", text), ("ul", [text]), ("table", headers, rows), ("figs", [figure]),
("note", text) for what the run did not do, ("verdict", verdict, text), ("link", text, href, description),
("cards", [(model, kind, estimator, [(label, href)])]). A figure is {name, data, caption, media_type}.

The HTML page embeds every figure as a data URI and its style sheet inline (no external resource, no script): it
opens offline, mails as one file, has a table of contents (a sidebar on wide screens, on top on a phone), scrolls
wide tables sideways on a phone instead of overflowing, and prints without the navigation, one figure per page
region. Every text that comes from a run (model, trial and file names) is escaped.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from mbi_predict.report.card_html import list_html, table_html
from mbi_predict.report.card_render import _md_cell

CSS = """
:root{--ink:#1d2329;--muted:#5b6670;--line:#d9dee3;--soft:#f4f6f8;--accent:#0072B2;--warn:#D55E00;--ok:#009E73}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--ink);background:#fff;overflow-wrap:break-word}
.layout{display:grid;grid-template-columns:15rem minmax(0,1fr);max-width:78rem;margin:0 auto}
nav.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow:auto;padding:1.6rem 1rem 1rem 1.2rem;
border-right:1px solid var(--line);font-size:.9rem}
nav.toc h2{font-size:.8rem;letter-spacing:.06em;text-transform:uppercase;color:var(--muted);margin:0 0 .6rem}
nav.toc ol{list-style:none;margin:0;padding:0}
nav.toc li{margin:.15rem 0}
nav.toc a{color:var(--ink);text-decoration:none;display:block;padding:.2rem .45rem;border-radius:4px}
nav.toc a:hover,nav.toc a:focus{background:var(--soft);color:var(--accent)}
main{padding:1.2rem 2.2rem 3rem;min-width:0}
h1{font-size:1.9rem;line-height:1.2;margin:.6rem 0 .4rem}
h2{font-size:1.35rem;margin:2.4rem 0 .7rem;padding-top:.4rem;border-top:2px solid var(--soft)}
h3{font-size:1.08rem;margin:1.6rem 0 .5rem}
p,li{max-width:48rem}
a{color:var(--accent)}
.lead{color:var(--muted);font-size:1.05rem;margin-top:0}
.table-wrap{overflow-x:auto;margin:.6rem 0 1.2rem;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;font-size:.88rem;width:100%}
th,td{padding:.38rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{background:var(--soft);font-weight:600;white-space:nowrap}
tbody tr:last-child td{border-bottom:0}
td{font-variant-numeric:tabular-nums}
.note{border-left:4px solid var(--muted);background:var(--soft);padding:.55rem .9rem;margin:.8rem 0;
color:var(--ink);max-width:48rem;border-radius:0 6px 6px 0}
.note strong{color:var(--muted)}
.verdict{border-left:6px solid var(--accent);background:#eef5fb;padding:.8rem 1rem;margin:.8rem 0 1rem;
font-size:1.02rem;max-width:52rem;border-radius:0 8px 8px 0}
.verdict.evidence{border-color:var(--ok);background:#eaf7f2}
.verdict.not_tested{border-color:var(--warn);background:#fbf0e9}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,24rem),1fr));gap:1.4rem;margin:1rem 0 1.4rem}
figure{margin:0;min-width:0}
figure.wide{grid-column:1/-1}
figure img{display:block;width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figcaption{font-size:.86rem;color:var(--muted);margin-top:.4rem}
.links{display:flex;gap:.5rem;flex-wrap:wrap}
.links a{border:1px solid var(--line);border-radius:4px;padding:0 .4rem;text-decoration:none;font-size:.82rem}
footer{color:var(--muted);font-size:.85rem;margin-top:3rem}
@media (max-width:860px){
 .layout{display:block}
 nav.toc{position:static;max-height:none;border-right:0;border-bottom:1px solid var(--line);padding:1rem}
 nav.toc ol{columns:2;column-gap:1rem}
 main{padding:1rem}
 h1{font-size:1.5rem}
 body{font-size:15px}
}
@media (max-width:480px){nav.toc ol{columns:1}th,td{padding:.3rem .4rem}}
@media print{
 nav.toc{display:none}
 .layout{display:block;max-width:none}
 main{padding:0}
 body{font-size:10.5pt}
 h2{break-before:page;border-top:0}
 h2:first-of-type{break-before:auto}
 figure,.table-wrap,.verdict,.note{break-inside:avoid}
 .table-wrap{overflow:visible;border:0}
 .figs{display:block}
 figure{margin:0 0 1rem}
 figure img{max-width:100%;width:auto;max-height:22cm;border:0}
 a{color:inherit;text-decoration:none}
}
"""

_WIDE = ("by-trial", "meta-forest")



def _estimator(name: str, estimator: str) -> str:
    """The estimator column: "–" where it only repeats the model's name."""
    return "–" if str(estimator) == str(name) else str(estimator)

def slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


def full_stop(text: str) -> str:
    """Sentences end with a full stop (notes copied from a run's records often do not)."""
    text = str(text).rstrip()
    return text if not text or text[-1] in ".!?:)" else text + "."


def figure_file_name(figure: dict[str, Any]) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", figure["name"])


def _figure_html(figure: dict[str, Any]) -> str:
    esc = html.escape
    data = base64.b64encode(figure["data"]).decode("ascii")
    wide = " class=\"wide\"" if any(key in figure["name"] for key in _WIDE) else ""
    return (f'<figure{wide}><img src="data:{figure["media_type"]};base64,{data}" alt="{esc(figure["caption"])}">'
            f"<figcaption>{esc(figure['caption'])}</figcaption></figure>")


def to_html(blocks: list[tuple], *, title: str) -> str:
    esc = html.escape
    used: set[str] = set()
    toc, body = [], []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            level, text = block[1], block[2]
            anchor = slug(text, used)
            if level == 2:
                toc.append(f'<li><a href="#{anchor}">{esc(text)}</a></li>')
            body.append(f'<h{level} id="{anchor}">{esc(text)}</h{level}>')
        elif kind == "p":
            lead = ' class="lead"' if len(body) == 1 else ""
            body.append(f"<p{lead}>{esc(full_stop(block[1]))}</p>")
        elif kind == "ul":
            body.append(list_html(block[1]))
        elif kind == "table":
            body.append(table_html(block[1], block[2], header_attrs=' scope="col"'))
        elif kind == "figs":
            body.append('<div class="figs">' + "".join(_figure_html(f) for f in block[1]) + "</div>")
        elif kind == "note":
            body.append(f'<p class="note"><strong>Not run or not found.</strong> {esc(block[1])}</p>')
        elif kind == "verdict":
            body.append(f'<p class="verdict {esc(str(block[1]))}"><strong>{esc(block[2])}</strong></p>')
        elif kind == "link":
            body.append(f'<p><a href="{esc(block[2])}">{esc(block[1])}</a>: {esc(block[3])}</p>')
        elif kind == "cards":
            # the links come right after the name, so they are on screen on a phone; the estimator only where it
            # is not the model's name
            rows = "".join(
                f"<tr><td>{esc(name)}</td><td>"
                + ('<span class="links">' + "".join(f'<a href="{esc(href)}">{esc(text)}</a>'
                                                     for text, href in links) + "</span>" if links else "not written")
                + f"</td><td>{esc(task)}</td><td>{esc(_estimator(name, estimator))}</td></tr>"
                for name, task, estimator, links in block[1])
            body.append('<div class="table-wrap"><table><thead><tr><th scope="col">Model</th><th scope="col">Card'
                        '</th><th scope="col">Kind</th><th scope="col">Estimator</th></tr></thead>'
                        f"<tbody>{rows}</tbody></table></div>")
    page = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", '<div class="layout">',
            '<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>' + "".join(toc) + "</ol></nav>",
            "<main>", *body,
            "<footer>Written by mbi_predict from the run's records; self-contained (figures embedded).</footer>",
            "</main>", "</div>", "</body>", "</html>"]
    return "\n".join(page) + "\n"


def to_markdown(blocks: list[tuple], figure_links: dict[int, str]) -> str:
    """The same blocks as Markdown; figures link the files written beside it (``figure_links``: id -> path)."""
    used: set[str] = set()
    lines: list[str] = []
    toc: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            if block[1] == 2:
                toc.append(f"- [{block[2]}](#{slug(block[2], used)})")
            lines += [f"{'#' * block[1]} {block[2]}", ""]
        elif kind == "p":
            lines += [full_stop(block[1]), ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            lines.append("| " + " | ".join(_md_cell(h) for h in block[1]) + " |")
            lines.append("|" + "---|" * len(block[1]))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block[2]] + [""]
        elif kind == "figs":
            for figure in block[1]:
                lines += [f"![{figure['caption']}]({figure_links[id(figure)]})", "", f"*{figure['caption']}*", ""]
        elif kind == "note":
            lines += [f"> **Not run or not found.** {block[1]}", ""]
        elif kind == "verdict":
            lines += [f"> **{block[2]}**", ""]
        elif kind == "link":
            lines += [f"[{block[1]}]({block[2]}): {block[3]}", ""]
        elif kind == "cards":
            lines += ["| Model | Card | Kind | Estimator |", "|---|---|---|---|"]
            lines += [f"| {_md_cell(name)} | "
                      + (" ".join(f"[{text}]({href})" for text, href in links) or "not written")
                      + f" | {task} | {_md_cell(_estimator(name, estimator))} |"
                      for name, task, estimator, links in block[1]] + [""]
    head, rest = lines[:4], lines[4:]   # title and lead paragraph, then the contents
    return "\n".join(head + ["**Contents**", "", *toc, ""] + rest).rstrip() + "\n"
