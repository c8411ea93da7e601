"""One description of a model (the model spec) and the one loading path, old files included.

The run folders and exports here are written by hand in the formats vitdistill has written (a
run checkpoint whose spec predates ``widelast_schedule``, an export whose remedy student has no
timm architecture, the current ``vitdistill_lift`` export, a plain timm export with no vitdistill
block), then loaded through every entry point; each must give the very same logits.
"""

from __future__ import annotations

import copy
import json

import pytest
import safetensors.torch
import timm
import torch

from vitdistill.distill import config, export
from vitdistill.distill.networks import frozen_teacher
from vitdistill.errors import UserError
from vitdistill.models import as_spec, create_lift, create_model, create_widelast, spec_label

KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
BASE = "vit_tiny_patch16_224"
X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def _perturbed(sd: dict) -> dict:
    """Other weights of the same shapes (an EMA that differs from the raw student)."""
    return {k: v + 0.01 if v.is_floating_point() else v.clone() for k, v in sd.items()}


# ------------------------------------------------------------------ every description -> one spec


def test_strings_read_into_the_spec_by_hand():
    assert as_spec("lift:vit_tiny_patch16_224:96") == {
        "name": BASE,
        "remedy": "lift",
        "width": 96,
        "num_wide": 1,
        "widelast_schedule": "heads_step",
        "kwargs": {},
        "num_classes": None,
    }
    wide = as_spec("widelast:vit_tiny_patch16_224:128:2", 10, {"schedule": "fixed_step", "depth": 4})
    assert (wide["remedy"], wide["width"], wide["num_wide"]) == ("widelast", 128, 2)
    assert wide["widelast_schedule"] == "fixed_step" and wide["kwargs"] == {"depth": 4}
    assert wide["num_classes"] == 10
    plain = as_spec("vit_tiny_patch16_224.augreg_in21k", kwargs={"img_size": 32})
    assert plain["name"] == "vit_tiny_patch16_224.augreg_in21k" and plain["remedy"] == "none"
    assert spec_label(wide) == "vit_tiny_patch16_224+widelast" and spec_label(plain) == plain["name"]
    for bad in ("lift:vit_tiny_patch16_224", "lift:a:x", "widelast:a:1:2:3", "", None):
        with pytest.raises(UserError):
            as_spec(bad)


@pytest.mark.parametrize("remedy", ["lift", "widelast"])
def test_string_build_spec_and_train_config_are_one_spec(remedy):
    kw = dict(KW, depth=4)
    if remedy == "lift":
        made = create_lift(BASE, 32, **kw, num_classes=5)
        text = f"lift:{BASE}:32"
    else:
        made = create_widelast(BASE, 32, num_wide=2, schedule="fixed_linear", **kw, num_classes=5)
        text = f"widelast:{BASE}:32:2"
    cfg_model = {"name": BASE, "remedy": remedy, "width": 32, "kwargs": kw}
    if remedy == "widelast":
        cfg_model.update(num_wide=2, widelast_schedule="fixed_linear")
    from_config = as_spec(config.resolve({"model": cfg_model})["model"], 5)
    from_string = as_spec(text, 5, dict(kw, schedule="fixed_linear") if remedy == "widelast" else kw)
    from_build = as_spec(json.loads(json.dumps(made.build_spec)))  # as a JSON/YAML config holds it
    assert from_string == from_build == from_config
    rebuilt = create_model(from_config)[0]
    rebuilt.load_state_dict(made.state_dict())
    assert torch.equal(_logits(rebuilt), _logits(made))


def test_a_remedy_starts_from_the_base_weights_when_pretrained(tmp_path):
    base = timm.create_model(BASE, **KW, num_classes=4)
    file = tmp_path / "base.safetensors"
    safetensors.torch.save_file(base.state_dict(), str(file))
    model, prov = create_model(
        f"lift:{BASE}:32", None, True, 4, pretrained_cfg_overlay=dict(file=str(file)), **KW
    )
    assert torch.equal(model.blocks[1].mlp.fc2.weight, base.blocks[1].mlp.fc2.weight)
    assert prov["model"] == f"{BASE}+lift" and prov["weights"]["kind"] == "timm-pretrained"


def test_a_remedy_string_with_a_plain_weights_file(tmp_path):
    made = create_widelast(BASE, 32, **KW, num_classes=3).eval()
    file = tmp_path / "w.safetensors"
    safetensors.torch.save_file(made.state_dict(), str(file))
    model, prov = create_model(f"widelast:{BASE}:32", checkpoint=file, **KW)  # classes from the head
    assert torch.equal(_logits(model), _logits(made))
    assert prov["weights"]["kind"] == "checkpoint" and prov["model_kwargs"]["num_classes"] == 3
    with pytest.raises(UserError, match="does not fit"):
        create_model(f"lift:{BASE}:32", checkpoint=file, **KW)


def test_the_teacher_builds_through_create_model(tmp_path):
    with pytest.raises(UserError, match="unknown teacher model 'vit_tiny_patch16_22'; closest"):
        frozen_teacher({"name": "vit_tiny_patch16_22"})
    ref = timm.create_model(BASE, **KW, num_classes=7).eval()
    file = tmp_path / "t.safetensors"
    safetensors.torch.save_file(ref.state_dict(), str(file))
    teacher = frozen_teacher({"name": BASE, "checkpoint": str(file), "kwargs": KW})
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.num_classes == 7 and torch.equal(_logits(teacher), _logits(ref))
    with pytest.raises(UserError, match="no teacher model name given"):
        frozen_teacher({"checkpoint": str(file)})


# ------------------------------------------------------------------ files in the formats written before


SPEC_V1 = {  # a run checkpoint's spec before widelast_schedule existed
    "name": BASE,
    "remedy": "widelast",
    "width": 32,
    "num_wide": 1,
    "kwargs": dict(KW),
    "num_classes": 6,
}


@pytest.fixture
def old_run(tmp_path):
    """A run folder as the first trainer wrote it: checkpoints/last.pt with raw and EMA weights."""
    student = create_widelast(BASE, 32, num_wide=1, **KW, num_classes=6).eval()
    ema = copy.deepcopy(student)
    ema.load_state_dict(_perturbed(student.state_dict()))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    state = {
        "format_version": 1,
        "epoch": 0,
        "student": student.state_dict(),
        "ema": ema.state_dict(),
        "model_spec": dict(SPEC_V1),
        "optimizer": {"state": {}, "param_groups": []},
    }
    torch.save(state, run / "checkpoints" / "last.pt")
    (run / "config.yaml").write_text(
        "model:\n  name: vit_tiny_patch16_224\n  remedy: widelast\n  width: 32\n  num_wide: 1\n"
    )
    return run, _logits(student), _logits(ema)


def test_an_old_run_folder_loads_through_every_path(old_run, tmp_path):
    run, raw, ema = old_run
    assert torch.equal(_logits(create_model(run)[0]), raw)
    assert torch.equal(_logits(create_model(run, ema=True)[0]), ema)
    model, prov = create_model(run / "checkpoints" / "last.pt")
    assert torch.equal(_logits(model), raw) and prov["weights"]["model_spec"] == SPEC_V1
    model, prov = create_model(None, run)  # analyze --checkpoint RUN
    assert torch.equal(_logits(model), raw)
    assert prov["model"] == f"{BASE}+widelast" and prov["weights"]["kind"] == "vitdistill checkpoint"
    assert torch.equal(_logits(create_model(BASE, run)[0]), raw)  # the base's name: the recorded model
    assert torch.equal(_logits(create_model(None, run, ema=True)[0]), ema)
    assert torch.equal(_logits(frozen_teacher({"checkpoint": str(run)})), raw)
    conf = export(run, tmp_path / "exp")
    assert conf["architecture"] == "vitdistill_widelast" and conf["vitdistill"]["model_spec"] == SPEC_V1
    assert torch.equal(_logits(create_model(tmp_path / "exp")[0]), raw)
    assert torch.equal(_logits(timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)), raw)


def _write_export(folder, model, config: dict) -> None:
    folder.mkdir()
    safetensors.torch.save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))


PRETRAINED_CFG = {"num_classes": 6, "input_size": [3, 16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}


def test_an_export_without_a_timm_architecture_loads(tmp_path):
    """The first exports gave a remedy-on-base student ``architecture: null``."""
    student = create_widelast(BASE, 32, num_wide=1, **KW, num_classes=6).eval()
    config_v1 = {
        "architecture": None,
        "num_classes": 6,
        "num_features": 32,
        "model_args": dict(KW),
        "pretrained_cfg": PRETRAINED_CFG,
        "vitdistill": {"model_spec": SPEC_V1, "weights": "raw", "source": "run/checkpoints/last.pt"},
    }
    _write_export(tmp_path / "exp", student, config_v1)
    want = _logits(student)
    assert torch.equal(_logits(create_model(tmp_path / "exp")[0]), want)
    assert torch.equal(_logits(create_model(str(tmp_path / "exp"))[0]), want)
    model, prov = create_model(None, tmp_path / "exp")
    assert torch.equal(_logits(model), want) and prov["weights"]["kind"] == "vitdistill checkpoint"


def test_a_lift_export_loads_through_timm_and_vitdistill(tmp_path):
    student = create_lift(BASE, 32, **KW, num_classes=6).eval()
    spec = {**SPEC_V1, "remedy": "lift", "widelast_schedule": "heads_step"}
    config_v2 = {
        "architecture": "vitdistill_lift",
        "num_classes": 6,
        "num_features": 32,
        "model_args": dict(base=BASE, lift_dim=32, **KW),
        "pretrained_cfg": PRETRAINED_CFG,
        "vitdistill": {"model_spec": spec, "weights": "raw", "source": "run/checkpoints/last.pt"},
    }
    _write_export(tmp_path / "exp", student, config_v2)
    want = _logits(student)
    assert torch.equal(_logits(timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)), want)
    assert torch.equal(_logits(create_model(tmp_path / "exp")[0]), want)
    assert torch.equal(_logits(create_model(None, tmp_path / "exp")[0]), want)
    del config_v2["vitdistill"]  # timm's fields alone rebuild it too
    (tmp_path / "exp" / "config.json").write_text(json.dumps(config_v2))
    assert torch.equal(_logits(create_model(tmp_path / "exp")[0]), want)


def test_a_plain_timm_export_loads_by_its_config(tmp_path):
    ref = timm.create_model(BASE, **KW, num_classes=6).eval()
    plain = {"architecture": BASE, "num_classes": 6, "model_args": dict(KW), "pretrained_cfg": PRETRAINED_CFG}
    _write_export(tmp_path / "exp", ref, plain)
    want = _logits(ref)
    assert torch.equal(_logits(create_model(tmp_path / "exp")[0]), want)
    model, prov = create_model(None, tmp_path / "exp")  # name and kwargs from config.json
    assert torch.equal(_logits(model), want)
    assert prov["model"] == BASE and prov["weights"]["kind"] == "checkpoint"


def test_a_widelast_schedule_survives_export_and_local_dir(tmp_path):
    student = create_widelast(BASE, 32, num_wide=2, schedule="fixed_linear", **KW, num_classes=6).eval()
    spec = {**SPEC_V1, "num_wide": 2, "widelast_schedule": "fixed_linear"}
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"epoch": 0, "student": student.state_dict(), "model_spec": spec}, run / "checkpoints" / "last.pt"
    )
    conf = export(run, tmp_path / "exp")
    assert conf["model_args"]["schedule"] == "fixed_linear"
    loaded = timm.create_model(f"local-dir:{tmp_path / 'exp'}", pretrained=True)
    assert loaded.block_widths() == student.block_widths() == [16, 32]  # heads_step: [32, 32]
    assert torch.equal(_logits(loaded), _logits(student))
