"""index.html: one self-contained page (figures as PNG data URIs, inline CSS, no scripts, nothing fetched),
so it can be mailed, archived or opened offline and always shows the same thing."""

from __future__ import annotations

import base64
from html import escape

from selfsup.report.collect import Run, device_names
from selfsup.report.plots import Plot

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1150px;
       margin: 1.5rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2rem; }
.meta { color: #555; margin: 0.2rem 0; }
figure { margin: 1rem 0 1.5rem; }
img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: 0.9rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td:nth-child(-n+5), th:nth-child(-n+5) { text-align: left; }
"""


def figure_html(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    caption = escape(f"{plot.caption} ({plot.name}.png, .svg)")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(plot.caption)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def header_html(runs: list[Run], date: str) -> str:
    """What the page is about: the runs, when it was made, and on which devices the runs trained."""
    items = "".join(
        f"<li><b>{escape(run.label)}</b>: {escape(str(run.path))} ({len(run.checkpoints)} checkpoints evaluated)</li>"
        for run in runs
    )
    devices = ", ".join(device_names(runs)) or "not recorded"
    return (
        f'<header><h1>selfsup report</h1><p class="meta">{len(runs)} runs, made {escape(date)}; '
        f"pretrained on: {escape(devices)}</p><ul>{items}</ul></header>"
    )


def render_page(
    runs: list[Run],
    date: str,
    table: tuple[list[str], list[list[str]]],
    accuracy: list[Plot],
    dynamics: list[Plot],
    embeddings: list[Plot],
) -> str:
    """Accuracy against compute first, then the summary table, the training dynamics and the embeddings."""
    sections = [
        ("Accuracy against compute", "".join(map(figure_html, accuracy)) or "<p>No finished results to plot.</p>"),
        ("Results at each run's newest evaluated checkpoint", table_html(*table)),
        ("Training dynamics and online monitors", "".join(map(figure_html, dynamics))),
        ("Embeddings", "".join(map(figure_html, embeddings))),
    ]
    body = "".join(f"<section><h2>{title}</h2>{html}</section>" for title, html in sections if html)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>selfsup report</title><style>{CSS}</style></head>"
        f"<body>{header_html(runs, date)}<main>{body}</main></body></html>\n"
    )
