"""Markdown and self-contained HTML from the report's blocks (:mod:`vitdistill.demo.sections`).

Renderers only format: every word and number is in the blocks. The HTML embeds the plots as
base64 PNG so the file can be mailed or opened anywhere.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from vitdistill.utils.tables import render

STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;"
    "padding:0 1em;line-height:1.45;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "td.num{text-align:right;white-space:nowrap}th{background:#f3f3f3}"
    "img{max-width:100%;border:1px solid #eee;margin:0.5em 0}code{background:#f5f5f5;padding:0 3px}"
    "h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"
)


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def render_markdown(bl: list[tuple], base: Path, report_dir: Path) -> str:
    lines: list[str] = []
    for item in bl:
        kind = item[0]
        if kind == "h":
            lines += ["#" * item[1] + " " + item[2], ""]
        elif kind == "p":
            lines += [item[1], ""]
        elif kind == "ul":
            lines += [f"- {x}" for x in item[1]] + [""]
        elif kind == "table":
            head, rows = item[1], item[2]
            table = [dict(zip(head, (str(c) for c in r), strict=True)) for r in rows]
            text = tuple(
                h for i, h in enumerate(head) if i == 0 or not all(_numeric(str(r[i])) for r in rows)
            )
            lines += [render(table, "md", text_cols=text).rstrip("\n"), ""]
        elif kind == "img" and (report_dir / item[1]).is_file():
            lines += [f"![{item[2]}]({_rel(report_dir / item[1], base)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _numeric(text: str) -> bool:
    """A cell that reads as a number (``+2.31``, ``1.2M``, ``48.8 +- 1.2``, ``-0.5 to +1.2``, ``6.2 / 7.0``,
    ``n/a``, or empty): right-aligned."""
    return bool(re.fullmatch(r"[-+]?[\d.,]+[kMG%]?( [(+-/].*| to [-+]?[\d.,]+)?|n/a|", text))


def _cell(text: str) -> str:
    """A table cell: numbers right-aligned, text left-aligned."""
    return f"<td class='{'num' if _numeric(text) else 'txt'}'>{_inline(text)}</td>"


def render_html(bl: list[tuple], report_dir: Path) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vitdistill demo report</title><style>{STYLE}</style></head><body>",
    ]
    for item in bl:
        kind = item[0]
        if kind == "h":
            parts.append(f"<h{item[1]}>{_inline(item[2])}</h{item[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(item[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in item[1]) + "</ul>")
        elif kind == "table":
            parts.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(str(h))}</th>" for h in item[1])
                + "</tr></thead><tbody>"
            )
            for r in item[2]:
                parts.append("<tr>" + "".join(_cell(str(c)) for c in r) + "</tr>")
            parts.append("</tbody></table>")
        elif kind == "img" and (report_dir / item[1]).is_file():
            data = base64.b64encode((report_dir / item[1]).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(item[2])}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(item[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
