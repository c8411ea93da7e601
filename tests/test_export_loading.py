"""Exports load back through timm's own short forms: ``local-dir:`` and a bare weights file."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import timm
import torch

from vitdistill.distill import export, train

DATA = "synthetic:shapes?n=16&n_val=8&size=16&types=3"  # 6 classes
KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)


def _run(tmp_path, name, model):
    cfg = {
        "model": model,
        "data": {"train": DATA, "batch_size": 8},
        "epochs": 1,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(cfg))
    train(str(path), output=str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize(
    "model, arch",
    [
        ({"name": "vit_tiny_patch16_224", "remedy": "lift", "width": 32, "kwargs": KW}, "vitdistill_lift"),
        (
            {"name": "vit_tiny_patch16_224", "remedy": "widelast", "width": 32, "kwargs": KW},
            "vitdistill_widelast",
        ),
        ({"name": "deit_tiny_lift_patch16_224", "kwargs": KW}, "deit_tiny_lift_patch16_224"),
    ],
)
def test_local_dir_loads_every_export(tmp_path, model, arch):
    run = _run(tmp_path, "run", model)
    conf = export(run, tmp_path / "exp")
    assert conf["architecture"] == arch and conf["num_classes"] == 6  # was null for remedy-on-base students
    loaded = timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True).eval()
    saved = safetensors.torch.load_file(str(tmp_path / "exp" / "model.safetensors"))
    assert loaded.state_dict().keys() == saved.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    assert loaded.num_classes == 6


def test_short_form_keeps_the_head_of_a_10_class_file(tmp_path):
    m = timm.create_model("deit_tiny_lift_patch16_224", num_classes=10, **KW)
    safetensors.torch.save_file(m.state_dict(), str(tmp_path / "lift.safetensors"))
    short = timm.create_model(
        "deit_tiny_lift_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "lift.safetensors")),
        **KW,
    )
    assert short.num_classes == 10 and torch.equal(short.head.weight, m.head.weight)
    # asking for another class count still fine-tunes: backbone loaded, head fresh
    other = timm.create_model(
        "deit_tiny_lift_patch16_224",
        pretrained=True,
        num_classes=3,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "lift.safetensors")),
        **KW,
    )
    assert other.num_classes == 3 and torch.equal(
        other.blocks[0].attn.qkv.weight, m.blocks[0].attn.qkv.weight
    )
