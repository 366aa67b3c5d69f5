"""The model card as one self-contained HTML page (figures as data URIs, responsive, printable)."""

from __future__ import annotations

import html


def list_html(items) -> str:
    """An escaped ``<ul>`` (cards and the study report)."""
    return "<ul>" + "".join(f"<li>{html.escape(str(item))}</li>" for item in items) + "</ul>"


def table_html(headers, rows, *, header_attrs: str = "") -> str:
    """An escaped table in a horizontally scrolling wrapper (cards and the study report)."""
    esc = html.escape
    head = "".join(f"<th{header_attrs}>{esc(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}.table-wrap{overflow-x:auto;margin:.5em 0 1.2em}
table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%;height:auto}
figcaption{color:#444;font-size:.92em;max-width:60em}
@media (max-width:600px){body{margin:1em auto;font-size:15px}th,td{padding:.2em .35em}}
@media print{body{max-width:none;margin:0}figure,table{break-inside:avoid}.table-wrap{overflow:visible}}"""


def to_html(card: dict) -> str:
    from mbi_predict.report.card_render import card_blocks

    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(card['title'])}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<style>{_STYLE}</style>",
             "</head>", "<body>"]
    for block in card_blocks(card):
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{esc(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif kind == "ul":
            parts.append(list_html(block[1]))
        elif kind == "table":
            parts.append(table_html(block[1], block[2]))
        elif kind == "fig":
            figure = block[1]
            src = f"data:{figure['media_type']};base64,{figure['data_base64']}"
            parts.append(f'<figure><img src="{src}" alt="{esc(figure["caption"])}">'
                         f"<figcaption>{esc(figure['caption'])}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
