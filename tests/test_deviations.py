"""Settings of the published training code that change nothing, shown by training with them.

The published code set 10 cooldown epochs and colour jitter 0.4; vitdistill's recipes use 0 and
0.3. Runs with either value must train identically (same loss and learning rate at every step,
same number of epochs), and the reason is checked directly: the epoch loop stops at ``epochs``
before any cooldown, and timm builds no colour jitter when RandAugment is on.
"""

from __future__ import annotations

import json

import pytest

from _helpers import train_cfg
from vitdistill.data import train_transform
from vitdistill.distill import train

AUG = {"auto_augment": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "color_jitter": 0.3}


def _run(tmp_path, name: str, **over) -> list[dict]:
    cfg = train_cfg(
        "deit_tiny_patch16_224",
        **{"epochs": 3, "data.steps_per_epoch": 2, "data.batch_size": 8, "deterministic": True},
        aug=dict(AUG),
        **over,
    )
    train(cfg, output=tmp_path / name)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    keep = ("kind", "epoch", "step", "loss", "ce", "lr", "train_loss", "val_top1", "val_loss")
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("dev"), "base")


@pytest.mark.parametrize(
    "setting", [{"sched.cooldown_epochs": 10.0}, {"aug.color_jitter": 0.4}], ids=["cooldown", "jitter"]
)
def test_published_settings_without_effect_train_identically(baseline, tmp_path, setting):
    records = _run(tmp_path, "published", **setting)
    assert [r for r in records if r["kind"] == "epoch"] and records == baseline
    assert len({r["lr"] for r in baseline if r["kind"] == "step"}) > 3  # the schedule does move


def test_colour_jitter_is_not_built_when_randaugment_is_on():
    cfg = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}
    on = [str(train_transform(cfg, auto_augment=AUG["auto_augment"], color_jitter=j)) for j in (0.3, 0.4)]
    off = [str(train_transform(cfg, auto_augment=None, color_jitter=j)) for j in (0.3, 0.4)]
    assert on[0] == on[1] and "ColorJitter" not in on[0] and "RandAugment" in on[0]
    assert off[0] != off[1] and "ColorJitter" in off[0]  # without RandAugment the value matters
