"""Weights that are not finite floating point never reach a model; integer buffers still load.

Files are written here with NaN, Inf, integer, complex and bool tensors where the model has
floating-point weights, and loaded through every path that reads weights into a model:
``create_model`` with a checkpoint, a run folder, the registered students' ``pretrained_cfg_overlay``
file and an export loaded by timm's ``local-dir:``. Each refusal is one UserError naming the tensor.
"""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vitdistill  # noqa: F401  (registers the students)
from vitdistill.checkpoints import check_values
from vitdistill.errors import UserError
from vitdistill.models import create_model

BASE = "vit_tiny_patch16_224"
KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=3)
BAD = {
    "nan": lambda t: t.clone().fill_(float("nan")),
    "inf": lambda t: t.clone().fill_(float("-inf")),
    "int8": lambda t: t.to(torch.int8),
    "complex64": lambda t: t.to(torch.complex64),
    "bool": lambda t: t > 0,
}
SAYS = {"nan": "holds NaN values", "inf": "holds Inf values", "int8": "is int8", "complex64": "is complex64"}
SAYS["bool"] = "is bool"


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return timm.create_model(BASE, **KW).eval()


def _spoiled(model, key: str, how: str) -> dict:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[key] = BAD[how](sd[key])
    return sd


@pytest.mark.parametrize("how", list(BAD))
def test_a_checkpoint_with_bad_values_is_refused_naming_the_tensor(reference, tmp_path, how):
    key = "blocks.1.mlp.fc1.weight"
    file = tmp_path / "w.pt"
    torch.save(_spoiled(reference, key, how), file)
    with pytest.raises(UserError, match=rf"tensor '{key}' {SAYS[how]}") as e:
        create_model(BASE, checkpoint=file, **KW)
    assert "\n" not in str(e.value)


def test_one_bad_value_among_good_ones_is_found(reference, tmp_path):
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    sd["pos_embed"][0, 3, 5] = float("inf")
    safetensors.torch.save_file(sd, str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError, match="tensor 'pos_embed' holds Inf"):
        create_model(BASE, checkpoint=tmp_path / "w.safetensors", **KW)


def test_integer_buffers_load_as_they_are(tmp_path):
    """BatchNorm's step counters are int64 in every timm CNN; they are not weights to refuse."""
    torch.manual_seed(0)
    ref = timm.create_model("test_resnet", num_classes=3).eval()
    ints = [k for k, v in ref.state_dict().items() if not v.is_floating_point()]
    assert ints and all(k.endswith("num_batches_tracked") for k in ints)
    torch.save(ref.state_dict(), tmp_path / "r.pt")
    model, _ = create_model("test_resnet", checkpoint=tmp_path / "r.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_the_registered_students_file_is_checked(tmp_path):
    kw = dict(img_size=16, patch_size=4, num_classes=3)
    student = timm.create_model("deit_tiny_lift_patch16_224", **kw)
    file = tmp_path / "lift.safetensors"
    safetensors.torch.save_file(_spoiled(student, "head.weight", "nan"), str(file))
    with pytest.raises(UserError, match="tensor 'head.weight' holds NaN"):
        timm.create_model(
            "deit_tiny_lift_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kw
        )


def test_an_export_read_by_local_dir_is_checked(tmp_path):
    student = vitdistill.models.create_lift(BASE, 32, **KW)
    folder = tmp_path / "exp"
    folder.mkdir()
    safetensors.torch.save_file(
        _spoiled(student, "norm.proj.weight", "int8"), str(folder / "model.safetensors")
    )
    args = dict(base=BASE, lift_dim=32, **KW)
    cfg = {"num_classes": 3, "input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}
    config = {"architecture": "vitdistill_lift", "num_classes": 3, "model_args": args, "pretrained_cfg": cfg}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="tensor 'norm.proj.weight' is int8"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    with pytest.raises(UserError, match="tensor 'norm.proj.weight' is int8"):
        create_model(folder)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    where=st.integers(0, 63),
    value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
)
def test_any_non_finite_entry_is_named(shape, where, value, dtype):
    own = {"a": torch.zeros(shape), "steps": torch.zeros((), dtype=torch.long)}
    bad = torch.zeros(shape, dtype=dtype)
    bad.view(-1)[where % bad.numel()] = value
    check_values({"a": torch.zeros(shape, dtype=dtype), "steps": torch.tensor(7)}, own, "f")  # clean
    with pytest.raises(UserError, match="f: tensor 'a' holds (NaN|Inf) values"):
        check_values({"a": bad, "steps": torch.tensor(7)}, own, "f")


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_weights_are_checked_and_load(reference, dtype):
    own = reference.state_dict()
    check_values({"head.bias": own["head.bias"].to(dtype)}, own, "f")  # finite float8 loads
    for value in (float("nan"), float("inf")) if dtype == torch.float8_e5m2 else (float("nan"),):
        bad = own["head.bias"].clone()
        bad[0] = value
        bad = bad.to(dtype)  # e4m3fn has no Inf (a cast saturates it), only NaN
        with pytest.raises(UserError, match="f: tensor 'head.bias' holds (NaN|Inf) values"):
            check_values({"head.bias": bad}, own, "f")


def test_weights_timm_reads_itself_are_checked_too(reference, tmp_path):
    """A plain timm name with ``pretrained_cfg_overlay=dict(file=...)``: timm opens the file, and
    the model it built is checked before anyone uses it."""
    file = tmp_path / "w.safetensors"
    safetensors.torch.save_file(_spoiled(reference, "blocks.0.norm1.weight", "inf"), str(file))
    with pytest.raises(
        UserError, match="pretrained weights of vit_tiny_patch16_224: tensor 'blocks.0.norm1.weight'"
    ):
        create_model(BASE, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **KW)


def test_finite_weights_whose_activations_overflow_stop_analyze_in_one_line(reference, tmp_path, capsys):
    """Every weight is finite, but the activations overflow float32: analyze says so, and writes nothing."""
    from vitdistill.cli import main

    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    sd["patch_embed.proj.weight"] *= 1e30
    sd["blocks.0.mlp.fc1.weight"] *= 1e37
    safetensors.torch.save_file(sd, str(tmp_path / "w.safetensors"))
    model = [BASE, *(a for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
                     for a in ("--set", f"{k}={KW[k]}"))]  # fmt: skip
    argv = ["analyze", *model, "--checkpoint", str(tmp_path / "w.safetensors"), "--images", "4",
            "--data", "synthetic:shapes?n=8&n_val=4&size=16&types=3", "--batch-size", "4",
            "--permutations", "0", "--rotation-images", "0", "--no-plots", "--no-progress", "--out", str(tmp_path / "an")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layer 0 gives features that are not finite" in err[0], err
    assert not (tmp_path / "an").exists()
