"""Config keys that reproduce the published training code where vitdistill's default differs.

Each key is checked against a hand computation on real timm models and real training runs:
weight decay on the embeddings, the per-epoch lr lagging one epoch, the same seeds on every
rank (2-process gloo), teacher re-normalisation off, and a forced evaluation crop.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _helpers import TINY_KW as TINY
from _helpers import train_cfg
from vitdistill.distill import config as C
from vitdistill.distill import train
from vitdistill.distill.trainer import Trainer, process_seed
from vitdistill.errors import UserError


def _cfg(**over) -> dict:
    return train_cfg("deit_tiny_patch16_224", **over)


@pytest.fixture
def trainer(tmp_path):
    made = []

    def make(**over) -> Trainer:
        t = Trainer(C.resolve(_cfg(**over)), tmp_path / f"run{len(made)}")
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def test_defaults_keep_todays_behaviour():
    d = C.defaults()
    assert d["optim"]["decay_embeddings"] is False
    assert d["sched"]["published_lag"] is False
    assert d["seed_per_rank"] is True
    assert d["teacher"]["renormalize"] is True
    assert d["data"]["eval_crop_pct"] is None


# ------------------------------------------------------------------ weight decay on the embeddings
def _decay_of(t: Trainer) -> dict[str, float]:
    wd = {id(p): g["weight_decay"] for g in t.optimizer.param_groups for p in g["params"]}
    return {n: wd[id(p)] for n, p in t.task.trainable.named_parameters()}


@pytest.mark.parametrize("published", [False, True])
def test_decay_embeddings_selects_pos_embed_and_cls_token(trainer, published):
    t = trainer(**{"optim.decay_embeddings": published, "optim.weight_decay": 0.05})
    decay = _decay_of(t)
    params = dict(t.task.trainable.named_parameters())
    # by hand: 1-D tensors and biases never decay; pos_embed / cls_token only in the published mode
    expect = {
        n
        for n, p in params.items()
        if p.ndim > 1
        and not n.endswith(".bias")
        and (published or n not in ("student.pos_embed", "student.cls_token"))
    }
    assert {n for n, w in decay.items() if w == 0.05} == expect
    assert {n for n, w in decay.items() if w == 0.0} == set(params) - expect
    assert ("student.pos_embed" in expect) is published and ("student.cls_token" in expect) is published
    assert "student.blocks.0.attn.qkv.weight" in expect and "student.norm.weight" not in expect
    # AdamW with a zero gradient only decays: p <- p * (1 - lr * wd) for decayed tensors
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in params.values():
        p.grad = torch.zeros_like(p)
    t.optimizer.step()
    lr = t.optimizer.param_groups[0]["lr"]
    for n in ("student.pos_embed", "student.cls_token", "student.norm.weight"):
        factor = 1 - lr * 0.05 if n in expect else 1.0
        torch.testing.assert_close(params[n].detach(), before[n] * factor, rtol=1e-6, atol=0)


def test_decay_embeddings_covers_the_distillation_token(trainer):
    t = trainer(**{"model.name": "deit_tiny_distilled_patch16_224", "optim.decay_embeddings": True})
    assert _decay_of(t)["student.dist_token"] == 0.05
    t2 = trainer(**{"model.name": "deit_tiny_distilled_patch16_224"})
    assert _decay_of(t2)["student.dist_token"] == 0.0


# ------------------------------------------------------------------ lr schedule one epoch late
def _step_lrs(run: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "step":
            out.setdefault(r["epoch"], []).append(r["lr"])
    return out


def test_published_lag_steps_per_epoch_one_epoch_late(tmp_path):
    E, L, m, w0 = 4, 1e-3, 1e-5, 1e-6
    over = {"epochs": E, "data.steps_per_epoch": 2, "sched.min_lr": m, "sched.warmup_lr": w0}
    train(_cfg(**over, **{"sched.published_lag": True}), output=tmp_path / "pub")

    def value(t: int) -> float:  # timm's cosine per epoch, 1 warmup epoch from w0, by hand
        return w0 if t < 1 else m + 0.5 * (L - m) * (1 + math.cos(math.pi * t / E))

    lrs = _step_lrs(tmp_path / "pub")
    expect = {0: w0, 1: value(0), 2: value(1), 3: value(2)}  # epoch e uses the value for e - 1
    assert sorted(lrs) == list(range(E))
    for e, v in expect.items():
        assert lrs[e] == pytest.approx([v, v], rel=1e-12), e
    # the default steps every update: the lr moves inside an epoch and is never a step behind
    train(_cfg(**over), output=tmp_path / "default")
    d = _step_lrs(tmp_path / "default")
    assert d[0] == pytest.approx([w0, w0 + (L - w0) / 2], rel=1e-12)  # warmup over 2 updates
    assert d[1][0] == pytest.approx(m + 0.5 * (L - m) * (1 + math.cos(math.pi * 2 / (2 * E))), rel=1e-12)


# ------------------------------------------------------------------ seeds per rank
def test_process_seed_by_hand():
    cfg = {"seed": 7, "seed_per_rank": True}
    assert [process_seed(cfg, r) for r in (0, 1, 2)] == [7, 8, 9]
    assert process_seed(cfg, 2, epoch=3) == 7 * 1_000_003 + 2 * 10_007 + 3
    cfg["seed_per_rank"] = False  # the published code: rank 0's seeds everywhere
    assert [process_seed(cfg, r) for r in (0, 1, 2)] == [7, 7, 7]
    assert process_seed(cfg, 2, epoch=3) == 7 * 1_000_003 + 3


_RANK_SCRIPT = """
import json, sys, torch
from pathlib import Path
from vitdistill.distill import config as C
from vitdistill.distill.trainer import Trainer
out = Path(sys.argv[1])
res = {}
for per_rank in (True, False):
    cfg = C.resolve(json.loads(sys.argv[2]), [("seed_per_rank", per_rank)])
    t = Trainer(cfg, out / f"run_{per_rank}")
    start = torch.initial_seed()
    t.run()
    res[str(per_rank)] = {"start": start, "epoch": t.loader_gen.initial_seed(), "rank": t.dinfo.rank}
    t.close()
(out / f"rank{res['True']['rank']}.json").write_text(json.dumps(res))
"""


def test_seed_per_rank_under_two_process_gloo(tmp_path):
    cfg = _cfg(
        seed=5, **{"aug.enabled": False, "data.batch_size": 8, "data.steps_per_epoch": 1, "log.eval_every": 0}
    )
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + [str(script), str(tmp_path), json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    epoch0 = 5 * 1_000_003  # the only epoch is 0
    assert [g["True"]["start"] for g in got] == [5, 6]
    assert [g["True"]["epoch"] for g in got] == [epoch0, epoch0 + 10_007]
    assert [g["False"]["start"] for g in got] == [5, 5]
    assert [g["False"]["epoch"] for g in got] == [epoch0, epoch0]


# ------------------------------------------------------------------ teacher re-normalisation
TEACHER = {"name": "vit_tiny_patch16_224", "kwargs": dict(TINY, embed_dim=32)}  # timm mean/std 0.5


@pytest.mark.parametrize("renormalize", [True, False])
def test_teacher_renormalize_key(trainer, renormalize):
    t = trainer(
        teacher=dict(TEACHER, renormalize=renormalize),
        **{"loss.feat_weight": 1.0},
    )
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    half = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert t.teacher_renorm == ((imagenet, half) if renormalize else None)
    seen = []
    t.task.teacher.patch_embed.register_forward_pre_hook(lambda _m, a: seen.append(a[0].clone()))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t.task(x, torch.tensor([0, 1]))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet)
    # by hand: undo the student's normalisation, apply the teacher's (0.5 / 0.5); off: x itself
    expect = ((x * std + mean) - 0.5) / 0.5 if renormalize else x
    torch.testing.assert_close(seen[0], expect, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ evaluation crop
def _image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_eval_crop_pct_key_and_its_record(trainer, tmp_path):
    data = str(_image_folder(tmp_path / "imgs"))
    over = {"data.train": data, "data.batch_size": 8}
    # 16 px input: timm's deit_tiny default 0.9 resizes to floor(16 / 0.9) = 17; DeiT's 0.875 to 18
    for crop, resize, source in ((None, 17, "the student's timm default"), (0.875, 18, "data.eval_crop_pct")):
        t = trainer(**over, **{"data.eval_crop_pct": crop})
        info = t.eval_transform_info
        assert info["crop_pct"] == (0.9 if crop is None else crop) and info["source"] == source
        assert f"Resize(size={resize}," in info["transform"] and str(t.val_ds.transform) == info["transform"]
    t = trainer(**{"data.eval_crop_pct": 0.875})  # synthetic data: an explicit crop wins over 1.0
    assert "Resize(size=18," in t.eval_transform_info["transform"]
    t = trainer()
    assert (
        t.eval_transform_info["crop_pct"] == 1.0 and "Resize(size=16," in t.eval_transform_info["transform"]
    )


def test_eval_crop_pct_recorded_in_summary_and_checked(tmp_path):
    s = train(_cfg(**{"data.eval_crop_pct": 0.875, "data.steps_per_epoch": 1}), output=tmp_path / "r")
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["eval_transform"]["crop_pct"] == on_disk["eval_transform"]["crop_pct"] == 0.875
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match="eval_crop_pct"):
            C.resolve(_cfg(**{"data.eval_crop_pct": bad}))
