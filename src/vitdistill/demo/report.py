"""The demo's report: every number is read back from the files the stages wrote.

:func:`collect` gathers ``report.json`` (runs' ``summary.json`` / ``metrics.jsonl``, the analyses'
``summary.json``, ``profile.json``, the packaged published tables); :func:`render_markdown` and
:func:`render_html` only format it. The HTML file is self-contained (plots embedded as base64 PNG).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any

from vitdistill.demo.methods import METHODS, TEACHER
from vitdistill.utils.io import atomic_write_json, atomic_write_text, atomic_write_with

PAPER_MODEL = "CaiT-S24"
THRESHOLDS = ("80", "90", "95", "99")
SEP_ALPHAS = ("50", "60", "70", "80", "90")

# ----------------------------------------------------------------------------- reading stage files


def read_metrics(run_dir: Path) -> list[dict]:
    """Epoch records of a run's metrics.jsonl (the last record per epoch wins, as after a resume)."""
    by_epoch: dict[int, dict] = {}
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("kind") == "epoch":
                by_epoch[int(rec["epoch"])] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


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


def verdict(results: dict[str, dict]) -> dict[str, Any]:
    """Does Feature KD (discarded projector) end below both Lift and WideLast?

    The rule is fixed before any run: a difference counts when it exceeds twice its standard error
    (seed-to-seed standard deviations combined, sqrt(s_a^2/n_a + s_b^2/n_b)). Both remedies clearly
    above: reproduced. Either clearly below: not reproduced (reversed). Otherwise: not resolved at
    this number of seeds. With one seed there is no spread, so no difference can be called clear.
    """
    need = ("featkd", "lift", "widelast")
    if any(k not in results for k in need):
        return {
            "code": "not_run",
            "text": "The ordering was not tested: the demo ran without all of Feature KD, Lift and WideLast.",
            "comparisons": [],
        }
    base = results["featkd"]
    comps, ups, downs = [], 0, 0
    for key in ("lift", "widelast"):
        r = results[key]
        diff = r["mean"] - base["mean"]
        if r["std"] is None or base["std"] is None:
            se = None
            status = "no spread (one seed)"
        else:
            se = math.sqrt(r["std"] ** 2 / r["n"] + base["std"] ** 2 / base["n"])
            if diff > 2 * se:
                status, ups = "above", ups + 1
            elif diff < -2 * se:
                status, downs = "below", downs + 1
            else:
                status = "within noise"
        comps.append({"method": key, "label": r["label"], "diff": diff, "se": se, "status": status})

    def part(c: dict) -> str:
        se = "n/a" if c["se"] is None else f"{c['se']:.2f}"
        return f"{c['label']} {c['diff']:+.2f} points (standard error {se}: {c['status']})"

    detail = "; ".join(part(c) for c in comps)
    if ups == 2:
        code = "reproduced"
        text = (
            "The miniature reproduces the paper's ordering: Feature KD with a discarded projector ends "
            f"below both Lift and WideLast by more than twice the standard error ({detail})."
        )
    elif downs:
        code = "reversed"
        text = (
            "The miniature does not reproduce the paper's ordering: Feature KD with a discarded projector "
            f"ends clearly above at least one remedy ({detail})."
        )
    else:
        code = "unresolved"
        text = (
            "The miniature does not resolve the paper's ordering: the differences between Feature KD with a "
            f"discarded projector and the remedies are not larger than twice their standard error ({detail})."
        )
    return {
        "code": code,
        "text": text,
        "comparisons": comps,
        "rule": "a difference counts when it exceeds 2 standard errors of the difference of seed means",
    }


def collect(out: Path, settings) -> dict[str, Any]:
    """Everything the report shows, read from the stage folders."""
    from vitdistill.demo.study import STAGE_DIRS

    out = Path(out)
    d_data, d_teacher, d_tan, d_students, d_san = (out / s for s in STAGE_DIRS[:5])
    report: dict[str, Any] = {"settings": json.loads((out / "demo.json").read_text())}
    report["data"] = json.loads((d_data / "data.json").read_text())
    t_sum = json.loads((d_teacher / "summary.json").read_text())
    t_curve = read_metrics(d_teacher)
    report["teacher"] = {
        "label": TEACHER.label,
        "top1": t_sum["last"]["top1"],
        "epochs": t_sum["epochs"],
        "params": t_sum["params"],
        "curve": [r.get("val_top1") for r in t_curve],
        "files": [str(d_teacher / "summary.json"), str(d_teacher / "metrics.jsonl")],
    }
    profile = json.loads((d_san / "profile.json").read_text())
    prof = {r["model"]: r for r in profile["rows"]}
    report["profile_batch_size"] = profile["batch_size"]
    report["teacher"].update(
        {
            "macs": prof["teacher"]["macs"],
            "images_per_s": prof["teacher"]["throughput"],
            "params_profiled": prof["teacher"]["params"],
        }
    )
    results: dict[str, dict] = {}
    for m in METHODS:
        runs = sorted(d_students.glob(f"{m.key}-seed*"), key=lambda p: int(p.name.rsplit("seed", 1)[1]))
        runs = [r for r in runs if (r / "summary.json").is_file()]
        if not runs:
            continue
        sums = [json.loads((r / "summary.json").read_text()) for r in runs]
        top1 = [s["last"]["top1"] for s in sums]
        curves = [[rec.get("val_top1") for rec in read_metrics(r)] for r in runs]
        mean, std = _mean_std(top1)
        p = prof.get(m.key, {})
        results[m.key] = {
            "label": m.label,
            "description": m.description,
            "seeds": [int(r.name.rsplit("seed", 1)[1]) for r in runs],
            "top1": top1,
            "n": len(top1),
            "mean": mean,
            "std": std,
            "epochs": sums[0]["epochs"],
            "params": sums[0]["params"],
            "macs": p.get("macs"),
            "images_per_s": p.get("throughput"),
            "curves": curves,
            "runs": [str(r) for r in runs],
        }
    if "alone" in results:
        for r in results.values():
            r["gain"] = r["mean"] - results["alone"]["mean"]
    report["results"] = results
    report["verdict"] = verdict(results)
    t_an = json.loads((d_tan / "summary.json").read_text())
    report["teacher_analysis"] = _analysis_row(TEACHER.label, t_an)
    report["teacher_analysis"]["sep_caution"] = t_an["sep"].get("caution")
    report["reference"] = published_reference()
    students = []
    for m in METHODS:
        f = d_san / m.key / "summary.json"
        if f.is_file():
            students.append(_analysis_row(m.label, json.loads(f.read_text())))
    report["student_analysis"] = students
    return report


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write_with(path, lambda p: fig.savefig(p, dpi=120, format="png", bbox_inches="tight"))
    _plt().close(fig)


def save_sample_grid(ds, path: Path, n: int = 24, cols: int = 8) -> None:
    """A grid of the first image of each class (then further images), titled by class name."""
    import numpy as np

    plt = _plt()
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
    _save(fig, path)


def plot_accuracy(report: dict, path: Path) -> None:
    plt = _plt()
    res = report["results"]
    keys = list(res)
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(keys) + 1.4))
    for i, k in enumerate(keys):
        r = res[k]
        ax.barh(i, r["mean"], color="#7aa6c2" if k not in ("lift", "widelast") else "#d9874f", alpha=0.85)
        ax.plot(r["top1"], [i] * len(r["top1"]), "ko", ms=4, label="single seed" if i == 0 else None)
        if r["std"] is not None:
            ax.errorbar(r["mean"], i, xerr=r["std"], color="k", capsize=3, lw=1)
    ax.axvline(
        report["teacher"]["top1"],
        color="#444",
        ls="--",
        lw=1,
        label=f"teacher ({report['teacher']['top1']:.1f}%)",
    )
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([res[k]["label"] for k in keys])
    ax.invert_yaxis()
    ax.set_xlabel("validation top-1 accuracy (%), last epoch; bar = mean over seeds, line = +-1 std")
    ax.set_title("Narrow students, same training budget each")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _save(fig, path)


def plot_curves(report: dict, path: Path) -> None:
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    t = [v for v in report["teacher"]["curve"] if v is not None]
    ax.plot(np.arange(1, len(t) + 1), t, "k--", lw=1.2, label="teacher")
    for r in report["results"].values():
        curves = [c for c in r["curves"] if c and all(v is not None for v in c)]
        if not curves:
            continue
        L = min(len(c) for c in curves)
        mean = np.mean([c[:L] for c in curves], axis=0)
        ax.plot(np.arange(1, L + 1), mean, "-o", ms=3, label=r["label"])
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%), mean over seeds")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


# ----------------------------------------------------------------------------- rendering


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{nd}f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _human(n) -> str:
    if n is None:
        return "n/a"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suf}"
    return str(int(n))


def blocks(report: dict, report_dir: Path) -> list[tuple]:
    """The report as a list of blocks: ("h", level, text), ("p", text), ("table", head, rows), ("img", path, alt)."""
    s = report["settings"]["settings"]
    res = report["results"]
    t = report["teacher"]
    ta, ref = report["teacher_analysis"], report["reference"]
    data = report["data"]
    b: list[tuple] = []
    b.append(("h", 1, "vitdistill demo: the study in miniature"))
    b.append(
        (
            "p",
            "A miniature of *From Per-Image Low-Rank to Encoding Mismatch* (Tian, Xu, Li; ICML 2026) "
            "that runs on a CPU: a wide ViT teacher and narrow ViT students trained from scratch on "
            f"{'the built-in synthetic data set' if s['data'] is None else 'your data'} ({data['spec']}). "
            "The numbers below are this miniature's, measured by this run; they are not ImageNet numbers and "
            "only the paper's *qualitative* claims can be checked against them.",
        )
    )
    b.append(
        (
            "p",
            f"Setup: {data['train']['num_images']} training / {data['val']['num_images']} validation images, "
            f"{data['train']['num_classes']} classes, {s['img_size']}x{s['img_size']} pixels, patch {s['patch_size']} "
            f"({(s['img_size'] // s['patch_size']) ** 2} tokens). Teacher: width {s['teacher_width']}, depth "
            f"{s['teacher_depth']}, {_plural(t['epochs'], 'epoch')}. Students: width {s['student_width']}, depth "
            f"{s['student_depth']}, {_plural(s['epochs'], 'epoch')} each, seeds {', '.join(str(i) for i in range(s['seeds']))}. "
            f"Device: {s['device']}.",
        )
    )
    b.append(("h", 2, "1. Data"))
    b.append(("img", report_dir.parent / "1-data" / "samples.png", "sample training images"))
    if s["data"] is None:
        b.append(
            (
                "p",
                "Each image holds two key shapes, one above the other; the class is the ordered pair "
                "(upper shape, lower shape), so recognising it needs both shapes and their vertical relation. "
                "Colours, sizes, fill textures, rotation, background, noise and distractor lines/specks vary "
                "and carry no label information. See docs/demo.md.",
            )
        )
    b.append(("h", 2, "2. Accuracy"))
    b.append(("p", "**" + report["verdict"]["text"] + "**"))
    if "alone" in res:
        gap = t["top1"] - res["alone"]["mean"]
        b.append(
            (
                "p",
                f"Capacity check: the teacher ends {gap:+.2f} points from the narrow student trained alone "
                f"({_f(t['top1'])}% vs {_f(res['alone']['mean'])}%), so width "
                f"{'matters' if gap >= 5 else 'matters little'} on this data at this budget.",
            )
        )
    head = ["Method", "Top-1 % (mean +- std)", "Per seed", "Gain over alone", "Params", "MACs", "Images/s"]
    rows = [
        [
            f"{t['label']} (1 run)",
            _f(t["top1"]),
            _f(t["top1"]),
            "",
            _human(t["params"]),
            _human(t["macs"]),
            _f(t["images_per_s"], 0),
        ]
    ]
    for r in res.values():
        rows.append(
            [
                r["label"],
                f"{_f(r['mean'])} +- {_f(r['std'])}",
                " / ".join(_f(v) for v in r["top1"]),
                _f(r.get("gain")) if "gain" in r else "n/a",
                _human(r["params"]),
                _human(r["macs"]),
                _f(r["images_per_s"], 0),
            ]
        )
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            f"Top-1 is the last epoch's validation accuracy (not the best epoch). Std is the sample standard "
            f"deviation over seeds (n/a with one seed). MACs per image; images/s measured at batch "
            f"{report['profile_batch_size']} on {s['device']} (a shared or busy machine measures less). "
            f"Verdict rule: {report['verdict'].get('rule', 'n/a')}.",
        )
    )
    b.append(("img", report_dir / "accuracy.png", "top-1 per method"))
    b.append(("img", report_dir / "curves.png", "learning curves"))
    b.append(("h", 2, f"3. The teacher's features beside the paper's {ref['model']} (miniature)"))
    b.append(
        (
            "p",
            f"Final block, patch tokens, uncentered; {ta['images']} validation images. The paper's figures are "
            f"CaiT-S24 on 1000 ImageNet images (C=384, N=196). Widths differ by "
            f"{ref['channels'] / ta['channels']:.0f}x, so compare the fractions d/C, not the raw dims.",
        )
    )
    head = ["Model", "C", "N"] + [f"SVD {x}%" for x in THRESHOLDS] + [f"Shared {x}%" for x in THRESHOLDS]
    rows = [
        [f"{ta['label']}, this miniature", ta["channels"], ta["tokens"]]
        + [_f(ta["svd_p99"][x], 1) for x in THRESHOLDS]
        + [_f(ta["pca_p99"][x], 1) for x in THRESHOLDS],
        [f"{ref['model']}, paper", ref["channels"], ref["tokens"]]
        + [ref["svd_p99"][x] for x in THRESHOLDS]
        + [ref["pca_p99"][x] for x in THRESHOLDS],
        [f"{ta['label']}, this miniature, as d/C", "", ""]
        + [_f(ta["svd_p99"][x] / ta["channels"]) for x in THRESHOLDS]
        + [_f(ta["pca_p99"][x] / ta["channels"]) for x in THRESHOLDS],
        [f"{ref['model']}, paper, as d/C", "", ""]
        + [_f(ref["svd_p99"][x] / ref["channels"]) for x in THRESHOLDS]
        + [_f(ref["pca_p99"][x] / ref["channels"]) for x in THRESHOLDS],
    ]
    b.append(("table", [str(h) for h in head], [[str(c) for c in r] for r in rows]))
    b.append(
        (
            "p",
            "SVD = dimensions each image needs in its own basis; Shared = dimensions the same image needs in "
            "one dataset-level PCA basis; both the 99th percentile over images. Per-image ranks are bounded by "
            f"N = {ta['tokens']} tokens.",
        )
    )
    head = ["Model", "D"] + [f"d/D @ {a}%" for a in SEP_ALPHAS]
    rows = [
        [f"{ta['label']}, this miniature (full order)", str(ta["channels"])]
        + [_f(ta["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ta['label']}, this miniature (folded)", str(ta["channels"])]
        + [_f(ta["sep_folded_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ref['model']}, paper (full order)", str(ref["sep_D"])]
        + [_f(ref["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
    ]
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            "SEP: share of a token's spectral energy in its first d channel frequencies. "
            + (ta.get("sep_caution") or ""),
        )
    )
    if ta["rotation_overlap_mean"] is not None:
        b.append(
            (
                "p",
                f"Subspace rotation: two images' own subspaces (each keeping 90% of its energy, median k = "
                f"{_f(ta['rotation_k_median'], 1)}) overlap {_f(ta['rotation_overlap_mean'], 3)} on average "
                f"(median {_f(ta['rotation_overlap_median'], 3)}; 1 = same subspace, random subspaces give "
                f"{_f(ta['rotation_random_baseline'], 3)}). The shared top-k basis captures "
                f"{_f(100 * ta['rotation_shared_capture_mean'], 1)}% of an image's own-subspace energy on average.",
            )
        )
    tan = report_dir.parent / "3-teacher-analysis"
    for name, alt in (
        ("layer_ranks.png", "per-image and shared ranks by layer"),
        ("svd_vs_dataset_hist.png", "per-image vs shared-basis dimensions"),
        ("rotation.png", "subspace rotation"),
        ("sep_curves.png", "SEP curves"),
    ):
        if (tan / name).is_file():
            b.append(("img", tan / name, f"teacher: {alt}"))
    b.append(("h", 2, "4. The students' final features beside the teacher's"))
    b.append(
        (
            "p",
            "First seed of each method, final block before the final norm; for Lift, after its lifting "
            "projector (teacher width: the tokens that are distilled and pooled by its head). Same images "
            "and options as the teacher.",
        )
    )
    head = [
        "Model",
        "C",
        "SVD 90%",
        "SVD 99%",
        "Shared 90%",
        "Shared 99%",
        "Shared 99% / C",
        "SEP d/D @ 70%",
        "SEP d/D @ 90%",
    ]
    rows = []
    for a in [ta] + report["student_analysis"]:
        rows.append(
            [
                a["label"],
                str(a["channels"]),
                _f(a["svd_p99"]["90"], 1),
                _f(a["svd_p99"]["99"], 1),
                _f(a["pca_p99"]["90"], 1),
                _f(a["pca_p99"]["99"], 1),
                _f(a["pca_p99"]["99"] / a["channels"]),
                _f(a["sep_d_over_D"]["70"], 3),
                _f(a["sep_d_over_D"]["90"], 3),
            ]
        )
    b.append(("table", head, rows))
    cmp_png = report_dir.parent / "5-student-analysis" / "compare" / "compare.png"
    if cmp_png.is_file():
        b.append(("img", cmp_png, "teacher and students: ranks by depth, SEP, shared vs own basis"))
    b.append(("h", 2, "5. Where the numbers come from"))
    b.append(
        (
            "p",
            "Every number above is read from a stage's files: `2-teacher/` and `4-students/<method>-seed<k>/` "
            "are training runs (`summary.json`, `metrics.jsonl`, `config.yaml`, checkpoints), `3-teacher-analysis/` "
            "and `5-student-analysis/<method>/` are `vitdistill analyze` results, `5-student-analysis/compare/` "
            "is `vitdistill compare`, `5-student-analysis/profile.json` is `vitdistill inspect`, and "
            "`6-report/report.json` holds everything shown here. Rerun one stage by deleting its folder.",
        )
    )
    return b


def _rel(path: Path, base: Path) -> str:
    import os

    return os.path.relpath(path, base)


def render_markdown(bl: list[tuple], base: Path) -> str:
    lines: list[str] = []
    for item in bl:
        kind = item[0]
        if kind == "h":
            lines += ["#" * item[1] + " " + item[2], ""]
        elif kind == "p":
            lines += [item[1], ""]
        elif kind == "table":
            head, rows = item[1], item[2]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join([":--"] + ["--:"] * (len(head) - 1)) + "|")
            for r in rows:
                lines.append("| " + " | ".join(str(c) for c in r) + " |")
            lines.append("")
        elif kind == "img" and Path(item[1]).is_file():
            lines += [f"![{item[2]}]({_rel(Path(item[1]), base)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def render_html(bl: list[tuple]) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>vitdistill demo report</title><style>",
        "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;"
        "line-height:1.45;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"
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
        elif kind == "table":
            parts.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(str(h))}</th>" for h in item[1])
                + "</tr></thead><tbody>"
            )
            for r in item[2]:
                parts.append("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>")
            parts.append("</tbody></table>")
        elif kind == "img" and Path(item[1]).is_file():
            data = base64.b64encode(Path(item[1]).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(item[2])}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(item[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def summary_text(report: dict) -> str:
    """The plain-text table printed at the end of the demo."""
    t = report["teacher"]
    lines = [f"{'method':34s} {'top-1 %':>16s} {'gain':>7s} {'params':>8s} {'MACs':>8s} {'img/s':>8s}"]
    lines.append(
        f"{t['label']:34s} {t['top1']:16.2f} {'':>7s} {_human(t['params']):>8s} {_human(t['macs']):>8s} "
        f"{_f(t['images_per_s'], 0):>8s}"
    )
    for r in report["results"].values():
        top = f"{r['mean']:.2f} +- {_f(r['std'])}"
        lines.append(
            f"{r['label']:34s} {top:>16s} {_f(r.get('gain')):>7s} {_human(r['params']):>8s} "
            f"{_human(r['macs']):>8s} {_f(r['images_per_s'], 0):>8s}"
        )
    lines += ["", report["verdict"]["text"]]
    return "\n".join(lines)


def write_report(out: Path, settings, report_dir: Path) -> dict:
    out = Path(out)
    report = collect(out, settings)
    plot_accuracy(report, report_dir / "accuracy.png")
    plot_curves(report, report_dir / "curves.png")
    atomic_write_json(report_dir / "report.json", report)
    bl = blocks(report, report_dir)
    atomic_write_text(out / "report.md", render_markdown(bl, out))
    atomic_write_text(out / "report.html", render_html(bl))
    return report
