"""`vitdistill results` end to end on tiny finished runs: grouping, mean ± sd, files, published rows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vitdistill.cli import main
from vitdistill.distill import train
from vitdistill.distill.results import PUBLISHED, _published_for, method_label, recipe_key

DATA = "synthetic:shapes?n=32&n_val=16&size=16&types=3"
S_KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)


def _cfg(seed: int, lr: float = 1e-3) -> dict:
    return {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": dict(S_KW)},
        "data": {"train": DATA, "batch_size": 16},
        "epochs": 2,
        "seed": seed,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "optim": {"lr": lr},
        "sched": {"warmup_epochs": 1},
        "ema": {"enabled": True, "decay": 0.9},
        "log": {"interval": 1, "progress": False},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, cfg in [("a0", _cfg(0)), ("a1", _cfg(1)), ("b0", _cfg(0, lr=3e-3))]:
        train(cfg, output=root / name)
        out[name] = root / name
    return out


def _hand_macs(n_tokens: int, dim: int, depth: int, classes: int, patch_pixels: int) -> int:
    per_block = n_tokens * (3 * dim * dim + dim * dim + 2 * 4 * dim * dim) + 2 * n_tokens * n_tokens * dim
    return depth * per_block + (n_tokens - 1) * patch_pixels * dim + dim * classes


def test_results_table_from_runs(runs, tmp_path, capsys):
    out = tmp_path / "table"
    assert main(["results", str(runs["a0"]), str(runs["b0"]), str(runs["a1"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Top-1 best" in printed and "[published]" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    ours = [r for r in rows if not r["Method"].endswith("[published]")]
    assert [r["Seeds"] for r in ours] == ["2", "1"]  # a0 + a1 grouped, b0 alone; order of first sight
    assert ours[0]["Method"] == "vit_tiny_patch16_224 alone" and ours[1]["Method"].endswith("[2]")
    sums = [json.loads((runs[n] / "summary.json").read_text()) for n in ("a0", "a1")]
    for col, part, key in [
        ("Top-1 last", "last", "top1"),
        ("Top-1 best", "best", "top1"),
        ("EMA top-1 last", "last", "ema_top1"),
        ("EMA top-1 best", "best_ema", "top1"),
    ]:
        vals = np.array([s[part][key] for s in sums])  # summary.json holds percentages
        assert ours[0][col] == f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}"
        assert ours[1][col] == f"{json.loads((runs['b0'] / 'summary.json').read_text())[part][key]:.2f}"
    assert vals.min() >= 0 and vals.max() <= 100
    assert ours[0]["Params (M)"] == f"{sums[0]['params'] / 1e6:.4g}"
    macs = _hand_macs(17, 16, 2, 6, 3 * 4 * 4)  # 4x4 grid + CLS, 6 classes
    assert ours[0]["MACs (G)"] == f"{macs / 1e9:.4g}"
    pub = {r["Method"]: r["Published ImageNet top-1 (arXiv 2511.15572)"] for r in rows}
    assert pub["WideLast from CaiT-S24 [published]"] == "78.23" and len(rows) == 2 + len(PUBLISHED)
    assert all(r["Published ImageNet top-1 (arXiv 2511.15572)"] == "-" for r in ours)  # not ImageNet runs
    tex = (out / "results.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "±" not in tex
    md = (out / "results.md").read_text()
    assert md.count("\n|") == len(rows) + 1 and "published" in md
    assert json.loads((out / "results_runs.json").read_text())["vit_tiny_patch16_224 alone"] == [
        str(runs["a0"]),
        str(runs["a1"]),
    ]


def test_results_errors_are_one_line(tmp_path, capsys):
    assert main(["results", str(tmp_path / "nope")]) == 2
    (tmp_path / "half").mkdir()
    assert main(["results", str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "not a finished vitdistill run" in err and "Traceback" not in err


def test_labels_and_recipe_keys():
    base = {
        "seed": 0,
        "model": {"name": "deit_tiny_patch16_224", "remedy": "none"},
        "teacher": {"name": "cait_s24_224.fb_dist_in1k"},
        "loss": {
            "alpha": 0.9,
            "kd": "soft",
            "feat_weight": 0.2,
            "feat_loss": "spectral",
            "projector": "pool",
        },
        "log": {"interval": 5},
    }
    assert method_label(base) == "DeiT-Tiny + soft KD + spectral (pool)"
    other_seed = {**base, "seed": 3, "log": {"interval": 100}}
    assert recipe_key(base) == recipe_key(other_seed)
    assert recipe_key(base) != recipe_key({**base, "loss": {**base["loss"], "projector": "linear"}})
    wl = {**base, "model": {"name": "deit_tiny_widelast_heads_linear_patch16_224"}, "loss": {"alpha": 0}}
    assert method_label(wl) == "WideLast heads_linear alone"
    # published figures go beside the recipes they belong to, and only those
    assert _published_for(base) == 74.86
    assert _published_for({**base, "loss": {**base["loss"], "projector": "linear"}}) is None
    assert _published_for({**base, "model": {"name": "deit_tiny_widelast_patch16_224"}}) == 78.23
    assert _published_for({**base, "loss": {"alpha": 0.0, "feat_weight": 0.0}}) == 72.2
    assert _published_for({**base, "teacher": {"name": "vit_small_patch16_224"}}) is None
