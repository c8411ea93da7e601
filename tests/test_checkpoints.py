"""The one weights reader behind analyze / train / eval / export, on real files of every layout."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import timm
import torch
from safetensors.torch import save_file

from vitdistill.checkpoints import head_classes, load_state_strict, read_state_dict, weights_file
from vitdistill.errors import UserError


@pytest.fixture(scope="module")
def model():
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_safetensors_with_config_beside_it(model, tmp_path):
    sd = model.state_dict()
    save_file(sd, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 3})
    )
    got, cfg = read_state_dict(tmp_path)  # the export folder itself
    assert same(got, sd) and cfg["num_classes"] == 3
    assert weights_file(tmp_path) == tmp_path / "model.safetensors"


@pytest.mark.parametrize("key", ["state_dict", "model", "model_ema"])
def test_pt_files_with_a_wrapping_key_and_ddp_prefix(model, tmp_path, key):
    sd = model.state_dict()
    torch.save({key: {f"module.{k}": v for k, v in sd.items()}, "epoch": 7}, tmp_path / "c.pth")
    got, _ = read_state_dict(tmp_path / "c.pth")
    assert same(got, sd)


def test_other_trainers_pickles_are_read_only_when_trusted(model, tmp_path):
    # DeiT's own checkpoints carry an argparse Namespace next to the weights
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=1e-3)}, tmp_path / "deit.pth")
    with pytest.raises(UserError, match=r"argparse\.Namespace.*pass trust_checkpoint=True$"):
        read_state_dict(tmp_path / "deit.pth")
    got, _ = read_state_dict(tmp_path / "deit.pth", trust=True)
    assert same(got, model.state_dict())


def test_run_checkpoint_student_and_ema(model, tmp_path):
    sd = model.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    (tmp_path / "checkpoints").mkdir()
    torch.save({"student": sd, "ema": ema, "epoch": 2}, tmp_path / "checkpoints" / "last.pt")
    assert same(read_state_dict(tmp_path)[0], sd)
    assert same(read_state_dict(tmp_path, ema=True)[0], ema)
    torch.save({"student": sd, "ema": None}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="no EMA"):
        read_state_dict(tmp_path, ema=True)


def test_unusable_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="without weights"):
        read_state_dict(tmp_path)
    os.mkfifo(tmp_path / "pipe.pt")  # there, but not a file: say so rather than "does not exist"
    with pytest.raises(UserError, match="pipe.pt is not a regular file"):
        weights_file(tmp_path / "pipe.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(UserError, match="no state dict"):
        read_state_dict(tmp_path / "meta.pt")


def test_strict_load_names_the_differences(model):
    sd = dict(model.state_dict())
    sd.pop("blocks.1.mlp.fc2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(5, sd["head.weight"].shape[1])
    with pytest.raises(UserError) as e:
        load_state_strict(model, sd, "x.pt", role="teacher")
    msg = str(e.value)
    assert "blocks.1.mlp.fc2.bias" in msg and "extra.weight" in msg and "head.weight" in msg
    assert msg.startswith("teacher checkpoint x.pt does not fit the teacher")


def test_head_classes(model):
    assert head_classes(model.state_dict()) == 3
    assert head_classes({"blocks.0.x": torch.zeros(2)}) is None


@pytest.mark.parametrize("layout", ["run folder", "export folder"])
def test_create_model_opens_the_weights_file_once(model, tmp_path, monkeypatch, layout):
    """The spec, the tensors and the provenance's sha256 all come from one read of the file."""
    import builtins
    import hashlib
    import io

    from vitdistill.models import create_model

    spec = {
        "name": "vit_tiny_patch16_224",
        "kwargs": dict(img_size=32, patch_size=8, depth=2),
        "num_classes": 3,
    }
    if layout == "run folder":
        (tmp_path / "checkpoints").mkdir()
        weights = tmp_path / "checkpoints" / "last.pt"
        torch.save({"epoch": 0, "student": model.state_dict(), "model_spec": spec}, weights)
    else:
        weights = tmp_path / "model.safetensors"
        save_file(model.state_dict(), weights)
        (tmp_path / "config.json").write_text(json.dumps({"vitdistill": {"model_spec": spec}}))
    opened = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    loaded, prov = create_model(tmp_path)
    monkeypatch.undo()
    assert opened.count(str(weights)) == 1, opened
    assert prov["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["weights"]["kind"] == "vitdistill checkpoint" and same(
        loaded.state_dict(), model.state_dict()
    )
