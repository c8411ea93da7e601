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


@pytest.mark.parametrize(
    "argv, widths",
    [
        (["cait_xxs24_224", "--set", "img_size=32", "--set", "patch_size=8", "--set", "depth=2"], "192x2"),
        (["pit_ti_224"], "64x2 + 128x6 + 256x4"),
        (["levit_128s"], "128x2 + 256x3 + 384x4"),
        (["swin_tiny_patch4_window7_224"], "96x2 + 192x2 + 384x6 + 768x2"),
    ],
)
def test_inspect_staged_and_class_attention_families(argv, widths, capsys):
    # cait and pit ended in a traceback from torch's module tracker; Swin showed one block per stage
    assert main(["inspect", *argv, "--no-throughput"]) == 0
    out, err = capsys.readouterr()
    row = out.splitlines()[2]
    assert widths in row and row.split()[0] == argv[0] and err == ""
    assert row.split()[2].endswith(("M", "G"))  # a MAC figure, not '-'


# ---- the settings: one declaration gives the flag, the keyword, the default, the check and the docs


def test_docs_hold_the_generated_table():
    from pathlib import Path

    from vitdistill.commands import flags
    from vitdistill.utils.inspect_options import InspectOptions

    docs = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    table = flags.markdown(InspectOptions)
    assert table in docs, "regenerate: python -m vitdistill.commands.flags inspect"
    assert table.count("\n") == len(InspectOptions.__dataclass_fields__) + 1


def test_no_flag_given_leaves_every_default_to_the_declaration():
    from vitdistill.cli import build_parser
    from vitdistill.commands.flags import options_from
    from vitdistill.utils.inspect_options import InspectOptions

    args = build_parser().parse_args(["inspect", "m"])
    assert options_from(args, InspectOptions) == {}
    args = build_parser().parse_args(["inspect", "m", "--no-throughput", "--iters", "2", "--amp", "fp16"])
    assert options_from(args, InspectOptions) == {"throughput": False, "iters": 2, "amp": "fp16"}


@pytest.mark.parametrize(
    ("kwargs", "python_says", "cli_argv", "cli_says"),
    [
        (
            {"batch_size": 0},
            "'batch_size' must be >= 1 (got 0)",
            ["--batch-size", "0"],
            "--batch-size must be >= 1",
        ),
        ({"iters": 0}, "'iters' must be >= 1 (got 0)", ["--iters", "0"], "--iters must be >= 1 (got 0)"),
        (
            {"warmup": -1},
            "'warmup' must be >= 0 (got -1)",
            ["--warmup", "-1"],
            "--warmup must be >= 0 (got -1)",
        ),
        (
            {"num_classes": -3},
            "'num_classes' must be >= 0",
            ["--num-classes", "-3"],
            "--num-classes must be >= 0",
        ),
    ],
)
def test_errors_name_the_keyword_in_python_and_the_flag_on_the_command_line(
    kwargs, python_says, cli_argv, cli_says, capsys
):
    from vitdistill.errors import UserError
    from vitdistill.models import inspect_models

    with pytest.raises(UserError) as err:
        inspect_models(["vit_tiny_patch16_224"], **kwargs)
    assert python_says in str(err.value) and set(err.value.settings) == set(kwargs)
    assert main(["inspect", "vit_tiny_patch16_224", *cli_argv]) == 2
    said = capsys.readouterr().err
    assert cli_says in said and "'" + next(iter(kwargs)) + "'" not in said


def test_an_unknown_keyword_names_the_closest():
    from vitdistill.models import inspect_models

    with pytest.raises(TypeError, match="did you mean batch_size"):
        inspect_models(["vit_tiny_patch16_224"], batchsize=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_cuda_names_the_keyword_in_python():
    from vitdistill.errors import UserError
    from vitdistill.models import inspect_models

    with pytest.raises(UserError, match="device='cpu'"):
        inspect_models(["vit_tiny_patch16_224"], device="cuda")
