"""One ``--set KEY=VALUE`` rule for every command: YAML values, plain or dotted keys."""

from __future__ import annotations

import json

import pytest

from vitdistill.cli import main
from vitdistill.distill.config import resolve
from vitdistill.errors import UserError
from vitdistill.utils.overrides import parse_set, parse_sets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("img_size=32", ("img_size", 32)),
        ("loss.alpha=0.9", ("loss.alpha", 0.9)),
        ("flag=True", ("flag", True)),
        ("flag=false", ("flag", False)),
        ("x=null", ("x", None)),
        ("x=", ("x", None)),
        ("amp=bf16", ("amp", "bf16")),
        ("loss.pairs=[[-1, -1]]", ("loss.pairs", [[-1, -1]])),
        (" depth = 2", ("depth", 2)),
        ("name=a=b", ("name", "a=b")),
        ("bad=a: b: c", ("bad", "a: b: c")),  # YAML cannot read it: the text itself
    ],
)
def test_values_are_read_as_yaml(text, expected):
    assert parse_set(text) == expected


@pytest.mark.parametrize("text", ["img_size", "=3", "1x=2", "a..b=1", "a b=1", "loss.=1"])
def test_malformed_pairs_are_user_errors(text):
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_set(text)


def test_last_value_wins():
    assert parse_sets(["depth=2", "depth=3", "img_size=32"]) == {"depth": 3, "img_size": 32}


def test_train_and_model_commands_read_the_same_bool():
    cfg = resolve({}, overrides=["ema.enabled=True"])
    assert cfg["ema"]["enabled"] is True
    assert parse_sets(["ema.enabled=True"])["ema.enabled"] is True


def test_analyze_passes_yaml_bools_to_timm(tmp_path):
    """``--set qkv_bias=False`` reaches timm as the bool False (not the truthy string "False")."""
    out = tmp_path / "an"
    argv = ["analyze", "vit_tiny_patch16_224", "--data", "synthetic:shapes", "--images", "2"]
    argv += ["--set", "img_size=32", "--set", "patch_size=8", "--set", "depth=1", "--set", "qkv_bias=False"]
    argv += ["--out", str(out), "--layers", "last", "--permutations", "0", "--rotation-images", "0"]
    assert main([*argv, "--no-plots", "--no-progress"]) == 0
    kwargs = json.loads((out / "summary.json").read_text())["provenance"]["model_kwargs"]
    assert kwargs["qkv_bias"] is False and kwargs["img_size"] == 32
