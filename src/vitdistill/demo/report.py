"""The demo's report: every number is read back from the files the stages wrote.

:func:`collect` gathers ``report.json`` (the runs' ``summary.json``, the analyses' ``summary.json``,
``profile.json``, the packaged published tables), computes the paired contrasts
(:mod:`vitdistill.demo.stats`) and the verdict (:mod:`vitdistill.demo.verdict`); the section
functions turn it into blocks that :func:`render_markdown` and :func:`render_html` only format.
The HTML file is self-contained (plots embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from vitdistill.demo import plots
from vitdistill.demo.methods import BY_KEY, METHODS, TEACHER
from vitdistill.demo.settings import STAGE_DIRS
from vitdistill.demo.stats import contrasts
from vitdistill.demo.verdict import READINGS, fmt, verdict
from vitdistill.utils.io import atomic_write_json, atomic_write_text
from vitdistill.utils.plotting import pyplot
from vitdistill.utils.tables import human, render

PAPER_MODEL = "CaiT-S24"
THRESHOLDS = ("80", "90", "95", "99")
SEP_ALPHAS = ("50", "60", "70", "80", "90")
Block = tuple

# ----------------------------------------------------------------------------- reading stage files


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def published_reference() -> dict[str, Any]:
    """The paper's CaiT-S24 rows from the packaged reference tables."""
    from importlib.resources import files

    root = files("vitdistill") / "reference"
    ref: dict[str, Any] = {"model": PAPER_MODEL, "source": "vitdistill/reference (published with the paper)"}
    for line in (root / "svd_rank_table.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 11 and cells[1] == PAPER_MODEL:
            ref["channels"] = int(cells[2])
            ref["svd_p99"] = dict(zip(THRESHOLDS, map(int, cells[3:7]), strict=True))
            ref["pca_p99"] = dict(zip(THRESHOLDS, map(int, cells[7:11]), strict=True))
    with (root / "sep_comparison_table.csv").open() as f:
        for row in csv.DictReader(f):
            if row["Model"] == PAPER_MODEL:
                ref["sep_D"] = int(row["Dimension (D)"])
                ref["sep_tokens"] = int(row["Num Tokens"])
                ref["sep_d"] = {a: int(row[f"d @ {a}%"]) for a in SEP_ALPHAS}
                ref["sep_d_over_D"] = {a: float(row[f"d/D @ {a}%"]) for a in SEP_ALPHAS}
    ref["tokens"] = 196
    return ref


def _analysis_row(label: str, summary: dict) -> dict[str, Any]:
    sep = summary["sep"]
    rot = summary.get("rotation") or {}
    return {
        "label": label,
        "channels": summary["channels"],
        "tokens": summary["tokens"],
        "images": summary["images"],
        "layer": summary["layer"],
        "svd_p99": {t: summary["svd"]["p99"][t] for t in THRESHOLDS},
        "pca_p99": {t: summary["pca"]["p99"][t] for t in THRESHOLDS},
        "pca_global": {t: summary["pca"]["global"][t] for t in THRESHOLDS},
        "sep_d": {a: sep["full"]["d"][a] for a in SEP_ALPHAS},
        "sep_d_over_D": {a: sep["full"]["d_over_D"][a] for a in SEP_ALPHAS},
        "sep_folded_d_over_D": {a: sep["folded"]["d_over_D"][a] for a in SEP_ALPHAS},
        "rotation_overlap_mean": (rot.get("overlap") or {}).get("mean"),
        "rotation_overlap_median": (rot.get("overlap") or {}).get("median"),
        "rotation_random_baseline": rot.get("random_baseline"),
        "rotation_shared_capture_mean": (rot.get("shared_capture") or {}).get("mean"),
        "rotation_k_median": (rot.get("k") or {}).get("median"),
        "layers": [
            {
                "layer": e["layer"],
                "svd_p99_99": e["svd"]["p99"]["99"],
                "svd_p99_90": e["svd"]["p99"]["90"],
                "pca_global_99": e["pca"]["global"]["99"],
                "pca_global_90": e["pca"]["global"]["90"],
            }
            for e in summary.get("layers", [])
        ],
    }


def models_described(s: dict, uniform_width: int) -> dict[str, str]:
    """One phrase per architecture, for titles, legends and tables."""
    tw, td, sw, sd = s["teacher_width"], s["teacher_depth"], s["student_width"], s["student_depth"]
    return {
        "teacher": f"ViT {tw} wide x {_plural(td, 'block')}",
        "narrow": f"ViT {sw} wide x {_plural(sd, 'block')}",
        "lift": f"ViT {sw} wide x {sd} + kept lift to {tw}",
        "widelast": f"ViT {sw} wide x {sd}, last block at {tw}",
        "uniform": f"ViT {uniform_width} wide x {_plural(sd, 'block')}",
    }


def _results(out: Path, settings: dict, prof: dict) -> dict[str, dict]:
    d_students = out / STAGE_DIRS[3]
    results: dict[str, dict] = {}
    for key in settings["methods"]:
        m = BY_KEY[key]
        sums = []
        for seed in range(settings["seed_offset"], settings["seed_offset"] + settings["seeds"]):
            f = d_students / f"{key}-seed{seed}" / "summary.json"
            if f.is_file():
                sums.append(json.loads(f.read_text()))
        if not sums:
            continue
        top1 = [x["top1"] for x in sums]
        mean, std = _mean_std(top1)
        p = prof.get(key, {})
        results[key] = {
            "label": m.label,
            "arch": m.arch,
            "description": m.description,
            "seeds": [x["seed"] for x in sums],
            "top1": top1,
            "n": len(top1),
            "mean": mean,
            "std": std,
            "epochs": sums[0]["epochs"],
            "params": sums[0]["params"],
            "macs": p.get("macs"),
            "images_per_s": p.get("throughput"),
            "cpu_s": [x.get("cpu_s") for x in sums],
        }
    return results


def _teacher(out: Path, prof: dict) -> dict:
    t_sum = json.loads((out / STAGE_DIRS[1] / "summary.json").read_text())
    p = prof.get("teacher", {})
    return {
        "label": TEACHER.label,
        "top1": t_sum["top1"],
        "epochs": t_sum["epochs"],
        "params": t_sum["params"],
        "macs": p.get("macs"),
        "images_per_s": p.get("throughput"),
        "cpu_s": t_sum.get("cpu_s"),
    }


def collect(out: Path, settings, timing: dict | None = None) -> dict[str, Any]:
    """Everything the report shows, read from the stage folders."""
    out = Path(out)
    d_data, _, d_tan, _, d_san = (out / s for s in STAGE_DIRS[:5])
    meta = json.loads((out / "demo.json").read_text())
    s = meta["settings"]
    data = json.loads((d_data / "data.json").read_text())
    profile = json.loads((d_san / "profile.json").read_text())
    prof = {r["model"]: r for r in profile["rows"]}
    report: dict[str, Any] = {"settings": meta, "data": data, "profile_batch_size": profile["batch_size"]}
    report["models"] = models_described(s, data["uniform_width"])
    report["teacher"] = _teacher(out, prof)
    report["results"] = res = _results(out, s, prof)
    per_seed = {k: dict(zip(r["seeds"], r["top1"], strict=True)) for k, r in res.items()}
    report["contrasts"] = contrasts(per_seed)
    report["contrasts_method"] = "95% Student t interval over paired per-seed differences (top-1 points)"
    report["verdict"] = verdict(report["contrasts"], bool(s["quick"]))
    t_an = json.loads((d_tan / "summary.json").read_text())
    report["teacher_analysis"] = _analysis_row(TEACHER.label, t_an)
    report["teacher_analysis"]["sep_caution"] = t_an["sep"].get("caution")
    report["reference"] = published_reference()
    report["student_analysis"] = [
        _analysis_row(m.label, json.loads((d_san / m.key / "summary.json").read_text()))
        for m in METHODS
        if (d_san / m.key / "summary.json").is_file()
    ]
    report["timing"] = timing or {}
    return report


def save_sample_grid(ds, path: Path, n: int = 24, cols: int = 8) -> None:
    """A grid of the first image of each class (then further images), titled by class name."""
    import numpy as np

    plt = pyplot()
    picked, seen = [], set()

    def label(i: int) -> int:  # without decoding the image where the data set allows it
        if hasattr(ds, "labels"):
            return int(ds.labels[i])
        return int(ds.render(i)[1]) if hasattr(ds, "render") else int(ds[i][1])

    for i in range(min(len(ds), 20000)):
        y = label(i)
        if y not in seen:
            seen.add(y)
            picked.append(i)
        if len(picked) >= n:
            break
    picked += [i for i in range(len(ds)) if i not in picked][: max(0, n - len(picked))]
    picked = picked[:n]
    rows = math.ceil(len(picked) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), picked, strict=False):
        img, y, _ = ds[i]
        arr = img.permute(1, 2, 0).numpy() if img is not None else np.zeros((8, 8, 3))
        ax.imshow(arr.clip(0, 1), interpolation="nearest")
        name = ds.classes[y] if 0 <= y < len(ds.classes) else "?"
        ax.set_title(name.replace("-above-", "\nabove ") if "-above-" in name else name, fontsize=7)
    fig.suptitle("Sample training images with their class", fontsize=10)
    plots.save(fig, path)


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{nd}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ----------------------------------------------------------------------------- report sections


def _seeds_text(s: dict) -> str:
    first = s["seed_offset"]
    return f"seeds {first}..{first + s['seeds'] - 1}"


def section_top(report: dict) -> list[Block]:
    """Title, the smoke-run warning, and the "what this shows" paragraph."""
    s, m, v = report["settings"]["settings"], report["models"], report["verdict"]
    b: list[Block] = [("h", 1, "vitdistill demo: the paper's claim in miniature")]
    if s["quick"]:
        b.append(
            (
                "p",
                "**Smoke run (quick settings): the numbers in this report are not evidence.** Models are "
                "tiny and trained for about one epoch, near chance accuracy; no verdict is drawn. "
                "Run the demo without the quick settings for the study.",
            )
        )
    n_arms = len(report["results"])
    b.append(("h", 2, "What this shows"))
    b.append(
        (
            "p",
            (
                f"The paper (Tian, Xu, Li, ICML 2026) claims that feature distillation fails when a narrow ViT "
                f"student learns from a wide teacher, and that it works once the student's end is as wide as the "
                f"teacher (Lift: a kept lifting projector; WideLast: a wide last block). This demo tests that claim "
                f"on a CPU: a {m['teacher']} teacher and {n_arms} kinds of students built on a {m['narrow']} "
                f"backbone (width ratio {s['teacher_width'] // s['student_width']}x and depth ratio "
                f"{s['teacher_depth'] / s['student_depth']:g}x, as CaiT-S24 over DeiT-Tiny), trained from scratch on "
                f"a synthetic {report['data']['num_classes']}-class shapes task with {s['seeds']} paired seeds per "
                f"arm. **{v['sentence']}**"
            ),
        )
    )
    return b


def section_verdict(report: dict) -> list[Block]:
    cs, v = report["contrasts"], report["verdict"]
    b: list[Block] = [("h", 2, "Verdict")]
    holds = {True: "**holds: true**", False: "**holds: false**", None: "**holds: null** (undecided)"}[
        v["holds"]
    ]
    b.append(("p", f"{holds}. Rule, fixed in the code: {v['rule']}."))
    head = ["Contrast", "What it measures", "Mean (points)", "95% CI", "Width", "n"]
    rows = []
    for name, c in cs.items():
        ci = c["ci"]
        rows.append(
            [
                f"`{name}`",
                c["description"],
                f"{c['mean']:+.2f}",
                "n/a" if ci is None else f"{ci[0]:+.2f} to {ci[1]:+.2f}",
                "n/a" if ci is None else f"{ci[1] - ci[0]:.2f}",
                str(c["n"]),
            ]
        )
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            f"{report['contrasts_method']}: for each seed the arms' top-1 values are combined, then "
            "the interval is mean +- t(0.975, n-1) x sd / sqrt(n) over seeds. Per-seed values are in "
            "`6-report/report.json`.",
        )
    )
    b.append(("img", "contrasts.png", "paired contrasts with 95% t intervals"))
    return b


def section_mechanism(report: dict) -> list[Block]:
    """What the miniature supports, does not support, and cannot tell, in plain words."""
    b: list[Block] = [("h", 2, "The mechanism, in plain words")]
    mech = sorted(report["verdict"]["mechanism"], key=lambda x: READINGS.index(x["reading"]))
    items = [f"**{x['reading'].capitalize()}.** *{x['question']}*: {x['text']}." for x in mech]
    b.append(("p", "What the miniature supports, does not support, and cannot tell:"))
    b.append(("ul", items))
    m = report["models"]
    b.append(
        (
            "p",
            (
                "What it cannot tell at all: whether these effects hold at ImageNet scale with CaiT-S24 and "
                f"DeiT-Tiny, with augmentation and 300 epochs. Here the teacher is a {m['teacher']} trained for "
                "minutes on synthetic shapes, and an interval that includes 0 means no effect was detected at this "
                "budget, not that there is none."
            ),
        )
    )
    return b


def section_results(report: dict) -> list[Block]:
    res, t, m = report["results"], report["teacher"], report["models"]
    b: list[Block] = [("h", 2, "Accuracy of every arm")]
    head = ["Arm", "Student", "Top-1 % (mean +- sd)", "Per seed", "Params", "MACs", "Images/s"]
    rows = [
        [
            f"{t['label']} (1 run)",
            m["teacher"],
            _f(t["top1"]),
            _f(t["top1"]),
            human(t["params"], 2),
            human(t["macs"], 2),
            _f(t["images_per_s"], 0),
        ]
    ]
    for r in res.values():
        rows.append(
            [
                r["label"],
                m[r["arch"]],
                f"{_f(r['mean'])} +- {_f(r['std'])}",
                " / ".join(_f(v, 1) for v in r["top1"]),
                human(r["params"], 2),
                human(r["macs"], 2),
                _f(r["images_per_s"], 0),
            ]
        )
    b.append(("table", head, rows))
    params = report["data"].get("uniform_params") or {}
    b.append(
        (
            "p",
            (
                f"Top-1: last epoch, {report['settings']['settings']['val_images']} validation images. The uniform "
                f"control is {m['uniform']} ({human(params.get('uniform'), 2)} parameters against WideLast's "
                f"{human(params.get('widelast'), 2)}). MACs per image; images/s at batch {report['profile_batch_size']} "
                "on this machine (a busy machine measures less)."
            ),
        )
    )
    b.append(("img", "accuracy.png", "top-1 per arm and seed"))
    return b


def _expected_differences(ta: dict, ref: dict) -> str:
    ratio_here = ta["pca_p99"]["90"] / max(ta["svd_p99"]["90"], 1e-9)
    ratio_paper = ref["pca_p99"]["90"] / ref["svd_p99"]["90"]
    return (
        f"At 90% energy one shared basis needs {ratio_here:.1f}x the dimensions of each image's own basis "
        f"here, {ratio_paper:.1f}x for CaiT-S24. Differences expected at this scale: widths and token counts "
        f"are far smaller (C = {ta['channels']} vs {ref['channels']}, N = {ta['tokens']} vs {ref['tokens']}), "
        "so compare fractions d/C, never raw dimensions; per-image ranks are capped by N; a teacher trained "
        "for minutes on a 20-class synthetic task spreads its images over fewer directions than an ImageNet "
        "model, so the gap between per-image and shared dimensions is expected to be smaller. The SEP "
        "fractions come out similar for almost any model (the paper reports about 0.5 to 0.9 for every model "
        "studied), and in the full FFT order d50 sits at D/2 whenever the DC bin outweighs the Nyquist bin, "
        "so read the folded curve beside it."
    )


def section_teacher_analysis(report: dict) -> list[Block]:
    ta, ref = report["teacher_analysis"], report["reference"]
    b: list[Block] = [("h", 2, f"The teacher's features beside the paper's {ref['model']}")]
    b.append(
        (
            "p",
            (
                f"Final block, patch tokens, uncentered; {ta['images']} validation images here, 1000 ImageNet images "
                "in the paper. SVD = dimensions an image needs in its own basis; shared = in one dataset-level PCA "
                "basis; both the 99th percentile over images, as fractions of the width."
            ),
        )
    )
    head = ["Model", "C", "N"] + [f"SVD {x}%" for x in THRESHOLDS] + [f"Shared {x}%" for x in THRESHOLDS]
    rows = []
    for label, a in ((f"{ta['label']} (this demo)", ta), (f"{ref['model']} (paper)", ref)):
        rows.append(
            [label, str(a["channels"]), str(a["tokens"])]
            + [f"{a['svd_p99'][x]:.0f} ({a['svd_p99'][x] / a['channels']:.2f})" for x in THRESHOLDS]
            + [f"{a['pca_p99'][x]:.0f} ({a['pca_p99'][x] / a['channels']:.2f})" for x in THRESHOLDS]
        )
    b.append(("table", head, rows))
    head = ["Model", "D"] + [f"SEP d/D @ {a}%" for a in SEP_ALPHAS]
    rows = [
        [f"{ta['label']} (this demo), full order", str(ta["channels"])]
        + [_f(ta["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ta['label']} (this demo), folded", str(ta["channels"])]
        + [_f(ta["sep_folded_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ref['model']} (paper), full order", str(ref["sep_D"])]
        + [_f(ref["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
    ]
    b.append(("table", head, rows))
    b.append(("img", "teacher_vs_paper.png", "miniature teacher beside CaiT-S24"))
    b.append(("p", _expected_differences(ta, ref)))
    if ta["rotation_overlap_mean"] is not None:
        b.append(
            (
                "p",
                (
                    f"Subspace rotation: two images' own subspaces (each keeping 90% of its energy, median k = "
                    f"{_f(ta['rotation_k_median'], 1)}) overlap {_f(ta['rotation_overlap_mean'], 3)} on average "
                    f"(1 = same subspace; random subspaces give {_f(ta['rotation_random_baseline'], 3)})."
                ),
            )
        )
    return b


def section_students_analysis(report: dict) -> list[Block]:
    ta = report["teacher_analysis"]
    b: list[Block] = [("h", 2, "The students' final features beside the teacher's")]
    b.append(
        (
            "p",
            "First seed of each arm, final block (Lift: after its lifting projector), same images "
            "and options as the teacher.",
        )
    )
    head = ["Model", "C", "SVD 90%", "Shared 90%", "Shared 99% / C", "SEP d/D @ 70%", "SEP d/D @ 90%"]
    rows = [
        [
            a["label"],
            str(a["channels"]),
            _f(a["svd_p99"]["90"], 1),
            _f(a["pca_p99"]["90"], 1),
            _f(a["pca_p99"]["99"] / a["channels"]),
            _f(a["sep_d_over_D"]["70"], 3),
            _f(a["sep_d_over_D"]["90"], 3),
        ]
        for a in [ta] + report["student_analysis"]
    ]
    b.append(("table", head, rows))
    return b


def section_setup(report: dict) -> list[Block]:
    s, timing = report["settings"]["settings"], report.get("timing") or {}
    stages = timing.get("stages", {})
    wall = sum(x["wall_s"] for x in stages.values())
    b: list[Block] = [("h", 2, "Setup, cost and where the numbers come from")]
    b.append(
        (
            "p",
            (
                f"Data: {report['data']['spec']}, {s['img_size']}x{s['img_size']} pixels, patch {s['patch_size']} "
                f"({(s['img_size'] // s['patch_size']) ** 2} tokens), decoded once without augmentation. Teacher: "
                f"{report['teacher']['epochs']} epochs. Students: {s['epochs']} epochs, batch {s['batch_size']}, "
                f"{_seeds_text(s)}; seed s gives every arm the same batch order and the same initial weights for the "
                "parts it shares with the narrow student. The teacher's logits and tokens on the training set are "
                "computed once and cached. Stages 1-5 took "
                f"{wall / 60:.1f} min wall on {timing.get('workers', '?')} worker(s), {timing.get('cpu_count', '?')} CPUs."
            ),
        )
    )
    head = ["Stage", "Wall (s)", "CPU of the main process (s)", "CPU of the training runs (s)"]
    rows = [
        [
            k,
            f"{v['wall_s']:.0f}",
            _f(v.get("cpu_s"), 0),
            _f(v.get("runs_cpu_s"), 0) if v.get("runs_cpu_s") else "",
        ]
        for k, v in stages.items()
    ]
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            (
                "Every number is read from a stage's files: `2-teacher/` and `4-students/<arm>-seed<k>/` hold "
                "`summary.json` and `checkpoints/last.pt`; `3-teacher-analysis/` and `5-student-analysis/<arm>/` are "
                "`vitdistill analyze` results; `5-student-analysis/profile.json` is `vitdistill inspect`; "
                "`6-report/report.json` holds everything shown here."
            ),
        )
    )
    return b


def blocks(report: dict) -> list[Block]:
    """The report as blocks: ("h", level, text), ("p", text), ("ul", items), ("table", head, rows), ("img", file, alt)."""
    b: list[Block] = []
    for section in (
        section_top,
        section_verdict,
        section_mechanism,
        section_results,
        section_teacher_analysis,
        section_students_analysis,
        section_setup,
    ):
        b += section(report)
    b.append(("img", "../1-data/samples.png", "sample training images with their class"))
    return b


def _rel(path: Path, base: Path) -> str:
    import os

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
            lines += [render(table, "md", text_cols=(head[0],)).rstrip("\n"), ""]
        elif kind == "img" and (report_dir / item[1]).is_file():
            lines += [f"![{item[2]}]({_rel(report_dir / item[1], base)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _cell(text: str) -> str:
    """A table cell: numbers right-aligned, text left-aligned."""
    numeric = bool(re.fullmatch(r"[-+]?[\d.,]+[kMG%]?( [(+-].*)?|n/a", text))
    return f"<td class='{'num' if numeric else 'txt'}'>{_inline(text)}</td>"


def render_html(bl: list[tuple], report_dir: Path) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>vitdistill demo report</title><style>",
        "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
        "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}td.num{text-align:right;"
        "white-space:nowrap}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}code{background:#f5f5f5;"
        "padding:0 3px}h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}",
        "</style></head><body>",
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


def summary_text(report: dict) -> str:
    """The plain-text summary printed at the end of the demo."""
    lines = [f"{'arm':52s} {'top-1 % (mean +- sd)':>22s}"]
    t = report["teacher"]
    lines.append(f"{t['label']:52s} {t['top1']:22.2f}")
    for r in report["results"].values():
        lines.append(f"{r['label']:52s} {r['mean']:13.2f} +- {_f(r['std'])}")
    lines.append("")
    for name, c in report["contrasts"].items():
        lines.append(f"{name:24s} {fmt(c)}")
    lines += ["", report["verdict"]["sentence"]]
    return "\n".join(lines)


HEADLINE_PLOT = [
    "featkd_vs_softkd",
    "lift_vs_featkd",
    "widelast_vs_featkd",
    "revival_lift",
    "revival_widelast",
    "widelast_vs_uniform",
    "lift_teacher_gain",
    "widelast_teacher_gain",
]


def write_report(out: Path, settings, report_dir: Path, timing: dict | None = None) -> dict:
    out = Path(out)
    report = collect(out, settings, timing)
    plots.accuracy(report, report_dir / "accuracy.png")
    plots.contrasts(report, HEADLINE_PLOT, report_dir / "contrasts.png")
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
