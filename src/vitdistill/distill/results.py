"""The paper's accuracy table from finished training runs (``vitdistill results``).

Runs are grouped by recipe: two runs belong together when their resolved configs are equal once
the seed and the keys that do not change what is trained (device, logging, loader workers,
compile, ...) are set aside. Each group gives one row: parameters and MACs of the student,
top-1 of the last and the best epoch for the raw and the EMA weights, as mean ± sd over its
seeds. The ImageNet-1K figures published with the paper (arXiv 2511.15572) are shown beside:
in a column for the rows whose recipe they belong to, and as rows of their own, marked
"published". They are the paper's numbers, not measured here.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vitdistill.distill.config import default, needs_teacher
from vitdistill.errors import UserError
from vitdistill.utils import yamlsafe
from vitdistill.utils.io import atomic_write_text, result_set
from vitdistill.utils.lock import hold_folder, releases_folders
from vitdistill.utils.markers import refuse_inside
from vitdistill.utils.tables import render

CITATION = "arXiv 2511.15572"
TEACHER = "cait_s24_224"
DEIT_TINY = "deit_tiny_patch16_224"
# (method, ImageNet-1K top-1, the recipe it belongs to: (student name, needs the CaiT-S24 teacher,
# which students/losses); None for figures without a recipe here)
PUBLISHED: list[tuple[str, float, str | None]] = [
    ("DeiT-Tiny alone (DeiT recipe)", 72.2, "alone"),
    ("DeiT-Tiny, DeiT distillation token (RegNetY-16GF teacher)", 74.5, None),
    ("DeiT-Tiny + feature KD from CaiT-S24 (pooled teacher)", 74.86, "featkd"),
    ("Lift from CaiT-S24", 77.53, "lift"),
    ("WideLast from CaiT-S24", 78.23, "widelast"),
    ("SpectralKD (400 epochs)", 77.4, None),
    ("Manifold distillation", 76.4, None),
]
# Keys that do not change what a run trains: runs differing only here are seeds of one recipe.
NOT_RECIPE = (
    "seed",
    "device",
    "log",
    "compile",
    "channels_last",
    "deterministic",
    "data.num_workers",
    "data.val_batch_size",
)
NAMES = {
    DEIT_TINY: "DeiT-Tiny",
    "deit_tiny_lift_patch16_224": "Lift",
    "deit_tiny_widelast_patch16_224": "WideLast",
    "deit_tiny_widelast_fixed_step_patch16_224": "WideLast fixed_step",
    "deit_tiny_widelast_heads_linear_patch16_224": "WideLast heads_linear",
    "deit_tiny_widelast_fixed_linear_patch16_224": "WideLast fixed_linear",
    "deit_tiny_uniform219_patch16_224": "Uniform-219",
}


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict


@dataclass
class Group:
    method: str
    key: str
    runs: list[Run] = field(default_factory=list)


def load_run(path: str | os.PathLike) -> Run:
    """A finished run: its resolved ``config.yaml`` and ``summary.json``."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"run folder {str(p)!r} not found")
    if not (p / "summary.json").is_file() or not (p / "config.yaml").is_file():
        raise UserError(f"{p} is not a finished vitdistill run (needs config.yaml and summary.json)")
    try:
        summary = json.loads((p / "summary.json").read_text())
        config = yamlsafe.load((p / "config.yaml").read_text(), f"{p}/config.yaml")
    except (ValueError, RecursionError, yaml.YAMLError) as e:
        raise UserError(f"{p}: unreadable run files ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(summary, dict) or not summary.get("last") or not isinstance(config, dict):
        raise UserError(f"{p} is not a finished vitdistill run (summary.json holds no final evaluation)")
    return Run(p, config, summary)


def recipe_key(config: dict) -> str:
    """The config without seed-like keys, as canonical JSON (equal for seeds of one recipe)."""
    cfg = copy.deepcopy(config)
    for dotted in NOT_RECIPE:
        *head, last = dotted.split(".")
        node = cfg
        for h in head:
            node = node.get(h, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return json.dumps(cfg, sort_keys=True, default=str)


def _student_label(model: dict) -> str:
    name = str(model.get("name", "?")).split(".")[0]
    remedy = model.get("remedy", "none")
    if remedy == "lift":
        return f"Lift({NAMES.get(name, name)})"
    if remedy == "widelast":
        sched = model.get("widelast_schedule", "heads_step")
        extra = "" if sched == "heads_step" else f" {sched}"
        return f"WideLast{extra}({NAMES.get(name, name)})"
    return NAMES.get(name, name)


def method_label(config: dict) -> str:
    """A readable method name from a run's config, e.g. ``DeiT-Tiny + soft KD + MSE (pool)``."""
    loss = config.get("loss", {})
    parts = [_student_label(config.get("model", {}))]
    alpha, feat = float(loss.get("alpha", 0)), float(loss.get("feat_weight", 0))
    if alpha == 0 and feat == 0:
        return parts[0] + " alone"
    if alpha > 0:
        parts.append(f"{loss.get('kd', 'soft')} KD")
    if feat > 0:
        term = "MSE" if loss.get("feat_loss", "mse") == "mse" else "spectral"
        proj = loss.get("projector", default("loss.projector"))
        parts.append(term + (f" ({proj})" if proj in ("pool", "linear") else ""))
    return " + ".join(parts)


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by recipe, in the order their first run was given."""
    groups: dict[str, Group] = {}
    for run in runs:
        key = recipe_key(run.config)
        if key not in groups:
            groups[key] = Group(method_label(run.config), key)
        groups[key].runs.append(run)
    seen: dict[str, int] = {}
    for g in groups.values():  # two recipes with the same label: number them
        seen[g.method] = seen.get(g.method, 0) + 1
        if seen[g.method] > 1:
            g.method += f" [{seen[g.method]}]"
    return list(groups.values())


def mean_sd(values: list[float | None]) -> str | None:
    """``mean ± sd`` (sample sd) of the values present; the plain mean for one; None for none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{m:.2f}"
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return f"{m:.2f} ± {sd:.2f}"


def _published_for(config: dict) -> float | None:
    """The published figure of this recipe (DeiT-Tiny-based students, CaiT-S24 teacher, 1000 classes)."""
    model, loss, teacher = config.get("model", {}), config.get("loss", {}), config.get("teacher", {})
    name = str(model.get("name", "")).split(".")[0]
    uses_teacher = needs_teacher(loss)
    from_cait = str(teacher.get("name") or "").split(".")[0] == TEACHER
    kind = None
    if name == DEIT_TINY and not uses_teacher:
        kind = "alone"
    elif from_cait and float(loss.get("feat_weight", 0)) > 0:
        if name == DEIT_TINY and loss.get("projector", default("loss.projector")) in ("auto", "pool"):
            kind = "featkd"
        elif name == "deit_tiny_lift_patch16_224":
            kind = "lift"
        elif name == "deit_tiny_widelast_patch16_224":
            kind = "widelast"
    return next((top1 for _, top1, k in PUBLISHED if k is not None and k == kind), None)


def _macs(spec: dict) -> int | None:
    """MACs per image of the run's student (random init; on the meta device when timm allows)."""
    from vitdistill.models import count_macs, create_model

    try:
        if spec.get("remedy", "none") == "none":
            meta = dict(spec, kwargs={**(spec.get("kwargs") or {}), "device": "meta"})
            return int(count_macs(create_model(meta)[0]))
        return int(count_macs(create_model(spec)[0]))
    except Exception:  # a model the counter cannot trace: leave the cell empty
        return None


def table_rows(groups: list[Group], published: bool = True) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        s0, cfg0 = g.runs[0].summary, g.runs[0].config
        spec = s0.get("model") or {}
        macs = _macs(spec) if spec else None
        pub = _published_for(cfg0) if int(s0.get("num_classes") or 0) == 1000 else None

        def col(part: str, key: str, runs=g.runs) -> str | None:
            return mean_sd([(r.summary.get(part) or {}).get(key) for r in runs])  # already in %

        row = {
            "Method": g.method,
            "Params (M)": f"{s0['params'] / 1e6:.4g}" if s0.get("params") else None,
            "MACs (G)": f"{macs / 1e9:.4g}" if macs else None,
            "Seeds": len(g.runs),
            "Epochs": cfg0.get("epochs"),
            "Top-1 last": col("last", "top1"),
            "Top-1 best": col("best", "top1"),
            "EMA top-1 last": col("last", "ema_top1"),
            "EMA top-1 best": col("best_ema", "top1"),
        }
        if published:
            row[f"Published ImageNet top-1 ({CITATION})"] = None if pub is None else f"{pub:.2f}"
        rows.append(row)
    if published:
        for method, top1, _ in PUBLISHED:
            row = dict.fromkeys(rows[0] if rows else ["Method"])
            row["Method"] = f"{method} [published]"
            row[f"Published ImageNet top-1 ({CITATION})"] = f"{top1:.2f}"
            rows.append(row)
    return rows


CAPTION = (
    "Top-1 (%) of the last and the best epoch, raw and EMA weights, mean ± sd over seeds per recipe. "
    f"Rows marked [published] and the last column are the ImageNet-1K figures reported in {CITATION}, "
    "not measured here; the best epoch is chosen on the validation set, as the published figures were."
)


RESULT_FILES = ("results.md", "results.csv", "results.tex", "results_runs.json")


@releases_folders
def results(runs: list[str | os.PathLike], out: str | os.PathLike | None = None, published: bool = True):
    """The accuracy table of ``runs``: rows (dicts); with ``out``, writes results.{md,csv,tex}.

    The files are one set: ``out`` holds the old tables or the new ones, never a mix.
    """
    if not runs:
        raise UserError("give at least one run folder")
    groups = group_runs([load_run(r) for r in runs])
    rows = table_rows(groups, published)
    if out is not None:
        refuse_inside(out, runs)
        hold_folder(out, "results")
        with result_set(out, lambda name: name in RESULT_FILES) as d:
            for fmt in ("md", "csv", "tex"):
                text = render(rows, fmt, CAPTION, text_cols=("Method",))
                if fmt == "md":
                    text += f"\n{CAPTION}\n"
                atomic_write_text(d / f"results.{fmt}", text)
            members = {g.method: [str(r.path) for r in g.runs] for g in groups}
            atomic_write_text(d / "results_runs.json", json.dumps(members, indent=2) + "\n")
    return rows
