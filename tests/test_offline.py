"""Pretrained weights without a network: cached weights load at once, missing ones are one line.

The hub endpoint is pointed at a closed local port (refused at once, as an unreachable hub is
here), and the hub cache at an empty folder or one this test fills, so the tests neither touch
the network nor wait for it. The hub client alone would retry for most of a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import safetensors.torch
import timm
import torch

from vitdistill.errors import UserError
from vitdistill.models import create_model

hub = pytest.importorskip("huggingface_hub.constants")

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "ENDPOINT", CLOSED)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_missing_weights_are_one_line_naming_the_local_file(no_hub, caplog):
    with pytest.raises(UserError) as e:
        create_model("vit_tiny_patch16_224", pretrained=True, **KW)
    msg = str(e.value)
    assert "\n" not in msg and "vit_tiny_patch16_224" in msg
    assert f"{CLOSED} cannot be reached" in msg and "not in the local cache" in msg
    assert "checkpoint=PATH" in msg and "teacher.checkpoint" in msg
    assert "Retrying" not in caplog.text
    assert hub.HF_HUB_OFFLINE is False  # the offline switch is put back


def test_cached_weights_load_without_the_network(no_hub):
    """The hub cache as the hub client lays it out: refs/main names the snapshot holding the file."""
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", **KW).eval()
    repo = no_hub / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    safetensors.torch.save_file(ref.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    model, prov = create_model("vit_tiny_patch16_224", pretrained=True, **KW)
    assert prov["weights"]["kind"] == "timm-pretrained"
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_the_command_line_names_the_flag(tmp_path):
    env = dict(os.environ, HF_ENDPOINT=CLOSED, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0")
    argv = ["analyze", "vit_tiny_patch16_224", "--pretrained", "--data", "synthetic:shapes?n=4"]
    argv += ["--set", "img_size=16", "--set", "patch_size=4", "--out", str(tmp_path / "out")]
    r = subprocess.run(
        [sys.executable, "-m", "vitdistill", *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vitdistill analyze: error: cannot load the pretrained")
    assert "--checkpoint PATH" in lines[0] and "Retrying" not in r.stderr
