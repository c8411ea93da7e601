"""The demo's report: numbers (:mod:`~vitdistill.demo.collect`), plots (:mod:`~vitdistill.demo.plots`),
prose (:mod:`~vitdistill.demo.sections`) and formats (:mod:`~vitdistill.demo.render`), put together.

Every number is read back from the files the stages wrote; ``6-report/report.json`` holds all of
them, and ``report.md`` / ``report.html`` show them.
"""

from __future__ import annotations

from pathlib import Path

from vitdistill.demo import plots
from vitdistill.demo.collect import collect
from vitdistill.demo.render import render_html, render_markdown
from vitdistill.demo.sections import blocks, summary_text
from vitdistill.utils.io import atomic_write_json, atomic_write_text

__all__ = ["summary_text", "write_report"]


def write_report(out: Path, settings, report_dir: Path, timing: dict | None = None) -> dict:
    out = Path(out)
    report = collect(out, settings, timing)
    report["plots"] = {
        "accuracy": plots.accuracy(report, report_dir / "accuracy.png"),
        "contrasts": plots.contrasts(report, report_dir / "contrasts.png"),
    }
    plots.teacher_vs_paper(
        report["teacher_analysis"],
        report["reference"],
        "teacher (this demo)",
        report_dir / "teacher_vs_paper.png",
    )
    atomic_write_json(report_dir / "report.json", report)
    bl = blocks(report)
    atomic_write_text(out / "report.md", render_markdown(bl, out, report_dir))
    atomic_write_text(out / "report.html", render_html(bl, report_dir))
    return report
