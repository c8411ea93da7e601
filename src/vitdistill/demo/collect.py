"""The demo report's numbers, read back from the files the stages wrote (``report.json``).

:func:`collect` gathers the runs' ``summary.json``, the analyses' ``summary.json``,
``profile.json`` and the packaged published tables, then computes the paired contrasts
(:mod:`vitdistill.demo.stats`), where their spread comes from (:mod:`vitdistill.demo.noise`)
and the verdict (:mod:`vitdistill.demo.verdict`). Nothing here writes prose or formats a table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from vitdistill.demo import noise
from vitdistill.demo.methods import BY_KEY, METHODS, TEACHER
from vitdistill.demo.settings import STAGE_DIRS
from vitdistill.demo.stats import CONTRASTS, contrasts
from vitdistill.demo.verdict import verdict

PAPER_MODEL = "CaiT-S24"
THRESHOLDS = ("80", "90", "95", "99")
SEP_ALPHAS = ("50", "60", "70", "80", "90")


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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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


def _summaries(out: Path, settings: dict) -> dict[str, list[dict]]:
    """Each arm's run summaries, in seed order (arms with no finished run left out)."""
    d_students = out / STAGE_DIRS[3]
    found: dict[str, list[dict]] = {}
    for key in settings["methods"]:
        for seed in range(settings["seed_offset"], settings["seed_offset"] + settings["seeds"]):
            f = d_students / f"{key}-seed{seed}" / "summary.json"
            if f.is_file():
                found.setdefault(key, []).append(json.loads(f.read_text()))
    return found


def _results(runs: dict[str, list[dict]], prof: dict) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for key, sums in runs.items():
        m = BY_KEY[key]
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


def _correct(runs: dict[str, list[dict]]) -> dict[str, dict[int, Any]]:
    """Per arm and seed, which validation images the scored model got right (runs that recorded it)."""
    return {
        key: {x["seed"]: noise.unpack(x["val_correct"], x["val_images"]) for x in sums if "val_correct" in x}
        for key, sums in runs.items()
    }


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
    runs = _summaries(out, s)
    report["results"] = res = _results(runs, prof)
    per_seed = {k: dict(zip(r["seeds"], r["top1"], strict=True)) for k, r in res.items()}
    report["contrasts"] = cs = contrasts(per_seed)
    coefs = {name: arms for name, (_, arms) in CONTRASTS.items()}
    report["noise"] = noise.splits(cs, coefs, _correct(runs))
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
