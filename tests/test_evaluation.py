"""The one evaluation loop and the one device/autocast helper, against counts done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from vitdistill.data import collate_skip
from vitdistill.distill.evaluate import ShardSampler, evaluate_loader
from vitdistill.errors import UserError
from vitdistill.utils.device import amp_dtype, autocast, resolve_device


class FixedLogits(nn.Module):
    """Returns a preset row of logits for each image (the image's first pixel is its index)."""

    def __init__(self, logits: torch.Tensor, two_heads: bool = False):
        super().__init__()
        self.register_buffer("table", logits)
        self.two_heads = two_heads

    def forward(self, x):
        out = self.table[x[:, 0, 0, 0].long()]
        return (out, out) if self.two_heads else out


def _items(labels):
    return [(torch.full((3, 2, 2), float(i)), int(y), i) for i, y in enumerate(labels)]


@pytest.mark.parametrize("two_heads", [False, True])
def test_topk_and_loss_match_a_numpy_count(two_heads):
    rng = np.random.default_rng(0)
    n, classes = 37, 7
    logits = rng.normal(size=(n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    loader = DataLoader(_items(labels), batch_size=8, collate_fn=collate_skip)
    got = evaluate_loader(FixedLogits(torch.from_numpy(logits), two_heads), loader, torch.device("cpu"))
    order = np.argsort(-logits, axis=1)
    top1 = 100 * np.mean(order[:, 0] == labels)
    top5 = 100 * np.mean([labels[i] in order[i, :5] for i in range(n)])
    z = logits - logits.max(1, keepdims=True)
    ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(n), labels])
    assert got["n"] == n and got["skipped"] == 0
    assert got["top1"] == pytest.approx(top1, abs=1e-9)
    assert got["top5"] == pytest.approx(top5, abs=1e-9)
    assert got["loss"] == pytest.approx(ce, rel=1e-5)


def test_fewer_than_five_classes_counts_every_image_in_top5():
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    loader = DataLoader(_items([0, 0]), batch_size=2, collate_fn=collate_skip)
    got = evaluate_loader(FixedLogits(logits), loader, torch.device("cpu"))
    assert got["top1"] == 50.0 and got["top5"] == 100.0


def test_shards_cover_every_index_once():
    shards = [list(ShardSampler(10, 3, r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_devices_and_amp():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16") is torch.float16
    assert amp_dtype("none") is None and amp_dtype(None) is None and amp_dtype(True) is torch.bfloat16
    with pytest.raises(UserError, match="unknown amp mode"):
        amp_dtype("fp8")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.bfloat16
    with autocast(torch.device("cpu"), None):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype is torch.float32


# ---- the settings: one declaration gives the flag, the keyword, the default, the check and the docs


def test_docs_hold_the_generated_table():
    from pathlib import Path

    from vitdistill.commands import flags
    from vitdistill.utils.eval_options import EvalOptions

    docs = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    assert flags.markdown(EvalOptions) in docs, "regenerate: python -m vitdistill.commands.flags eval"


def test_no_flag_given_leaves_every_default_to_the_declaration():
    from vitdistill.cli import build_parser
    from vitdistill.commands.flags import options_from
    from vitdistill.utils.eval_options import EvalOptions

    args = build_parser().parse_args(["eval", "m", "--data", "d"])
    assert options_from(args, EvalOptions) == {}
    args = build_parser().parse_args(["eval", "m", "--data", "d", "--workers", "2", "--strict"])
    assert options_from(args, EvalOptions) == {"num_workers": 2, "strict": True}


@pytest.mark.parametrize(
    ("kwargs", "python_says", "cli_argv", "cli_says"),
    [
        (
            {"batch_size": 0},
            "'batch_size' must be >= 1 (got 0)",
            ["--batch-size", "0"],
            "--batch-size must be >= 1",
        ),
        (
            {"num_workers": -1},
            "'num_workers' must be >= 0",
            ["--workers", "-1"],
            "--workers must be >= 0 (got -1)",
        ),
        (
            {"crop_pct": 1.5},
            "'crop_pct' must be in (0, 1]",
            ["--crop-pct", "1.5"],
            "--crop-pct must be in (0, 1]",
        ),
        ({"max_images": 0}, "'max_images' must be >= 1", ["--max-images", "0"], "--max-images must be >= 1"),
    ],
)
def test_errors_name_the_keyword_in_python_and_the_flag_on_the_command_line(
    kwargs, python_says, cli_argv, cli_says, capsys
):
    from vitdistill.cli import main
    from vitdistill.distill import evaluate

    with pytest.raises(UserError) as err:
        evaluate("vit_tiny_patch16_224", "synthetic:shapes", **kwargs)
    assert python_says in str(err.value) and set(err.value.settings) == set(kwargs)
    assert main(["eval", "vit_tiny_patch16_224", "--data", "synthetic:shapes", *cli_argv]) == 2
    said = capsys.readouterr().err
    assert cli_says in said and f"'{next(iter(kwargs))}'" not in said and len(said.strip().splitlines()) == 1


def test_an_unknown_keyword_names_the_closest():
    from vitdistill.distill import evaluate

    with pytest.raises(TypeError, match="did you mean batch_size"):
        evaluate("vit_tiny_patch16_224", "synthetic:shapes", batchsize=2)
