"""`vitdistill inspect` end to end through the CLI entry point."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from vitdistill.cli import main
from vitdistill.models import count_macs, count_params


def test_inspect_table_and_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(
        [
            "inspect",
            "deit_tiny_lift_patch16_224",
            "vit_tiny_patch16_224",
            "widelast:vit_tiny_patch16_224:384",
            "--set",
            "img_size=32",
            "--set",
            "patch_size=8",
            "--num-classes",
            "10",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--json",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == [
        "deit_tiny_lift_patch16_224",
        "vit_tiny_patch16_224",
        "widelast:vit_tiny_patch16_224:384",
    ]
    ref = timm.create_model("deit_tiny_lift_patch16_224", img_size=32, patch_size=8, num_classes=10)
    assert rows[0]["params"] == count_params(ref) and rows[0]["macs"] == count_macs(ref)
    assert rows[0]["token_grid"] == [4, 4] and rows[0]["widths"] == "192x12" and rows[0]["head_width"] == 384
    assert rows[2]["widths"] == "192x11 + 384x1"
    assert all(r["throughput"] > 0 and r["batch_size"] == 2 and r["device"] == "cpu" for r in rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "params", "MACs/img"]
    for r in rows:
        line = next(ln for ln in lines if ln.startswith(r["model"] + " "))
        assert f"{r['params']:,}" in line and r["widths"] in line and "4x4" in line


def test_inspect_no_throughput(capsys):
    assert (
        main(
            ["inspect", "vit_tiny_patch16_224", "--no-throughput", "--set", "img_size=32", "--set", "depth=2"]
        )
        == 0
    )
    line = capsys.readouterr().out.splitlines()[2]
    assert "192x2" in line and line.rstrip().endswith("-")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["inspect", "deit_tiny_lift_patch16_244"], "deit_tiny_lift_patch16_224"),
        (["inspect", "vit_tiny_patch16_224", "--set", "img_size"], "KEY=VALUE"),
        (["inspect", "vit_tiny_patch16_224", "--set", "nonsense_arg=1", "--no-throughput"], "cannot build"),
        (["inspect", "lift:resnet18:384", "--no-throughput"], "VisionTransformer"),
    ],
)
def test_inspect_user_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_inspect_cuda_without_cuda(capsys):
    assert main(["inspect", "vit_tiny_patch16_224", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
