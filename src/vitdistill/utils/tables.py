"""The one table renderer: same-keyed dicts as markdown, csv, LaTeX or aligned plain text.

Used by ``analyze`` / ``compare`` tables, ``inspect``, ``results`` and the demo report.
"""

from __future__ import annotations

import csv
import io
from typing import Any


def fmt_cell(v: Any) -> str:
    """None -> '-', floats with up to 6 significant digits (whole floats without decimals)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}" if not v.is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")
    return str(v)


def human(n: float | None, digits: int = 3, unit: str = "") -> str:
    """``5717416`` -> ``5.717M``: counts with a k / M / G suffix (None -> ``n/a``)."""
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.{digits}f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def tex_escape(s: str) -> str:
    return (
        s.replace("\\", "\\textbackslash{}")
        .replace("%", "\\%")
        .replace("&", "\\&")
        .replace("_", "\\_")
        .replace("#", "\\#")
        .replace("±", "$\\pm$")
    )


def render(rows: list[dict], fmt: str, caption: str = "", text_cols: tuple[str, ...] = ("Model",)) -> str:
    """``rows`` as ``fmt`` (md, csv, tex or plain); columns named in ``text_cols`` are left-aligned.

    Cells are formatted by :func:`fmt_cell`; pass strings for columns that need another format.
    """
    if not rows:
        return ""
    cols = list(rows[0].keys())
    if fmt == "plain":
        return _plain(cols, [[fmt_cell(r.get(c)) for c in cols] for r in rows], text_cols)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in rows:
            w.writerow([fmt_cell(r.get(c)) for c in cols])
        return buf.getvalue()
    if fmt == "md":
        align = ["|:--" if c in text_cols else "|--:" for c in cols]
        lines = ["| " + " | ".join(cols) + " |", "".join(align) + "|"]
        lines += ["| " + " | ".join(fmt_cell(r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    if fmt == "tex":
        spec = "".join("l" if c in text_cols else "r" for c in cols)
        lines = ["\\begin{table}[t]", "\\centering"]
        if caption:
            lines.append(f"\\caption{{{tex_escape(caption)}}}")
        lines += [
            f"\\begin{{tabular}}{{{spec}}}",
            "\\hline",
            " & ".join(tex_escape(c) for c in cols) + " \\\\",
            "\\hline",
        ]
        lines += [" & ".join(tex_escape(fmt_cell(r.get(c))) for c in cols) + " \\\\" for r in rows]
        lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown table format {fmt!r} (md, csv, tex, plain)")


def _plain(cols: list[str], cells: list[list[str]], text_cols: tuple[str, ...]) -> str:
    """Space-separated columns padded to their widest cell, a dashed rule under the header."""
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(cols)]

    def line(values: list[str], header: bool) -> str:
        padded = [
            v.ljust(w) if header or c in text_cols else v.rjust(w)
            for v, w, c in zip(values, widths, cols, strict=True)
        ]
        return "  ".join(padded).rstrip()

    out = [line(cols, True), "  ".join("-" * w for w in widths)]
    return "\n".join(out + [line(v, False) for v in cells])
