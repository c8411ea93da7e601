"""Every paper recipe parses and builds its student (and teacher) at full size, random init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitdistill.distill import config
from vitdistill.distill.task import DistillTask, frozen_teacher
from vitdistill.models import block_widths, count_params, create_model

PAPER = sorted((Path(config.__file__).parents[1] / "configs" / "paper").glob("*.yaml"))
PARAMS = {  # 1000 classes (docs/models.md)
    "deit_tiny_patch16_224": 5_717_416,
    "deit_tiny_lift_patch16_224": 5_983_528,
    "deit_tiny_widelast_patch16_224": 7_313_896,
    "deit_tiny_widelast_fixed_step_patch16_224": 7_313_896,
    "deit_tiny_widelast_heads_linear_patch16_224": 8_628_264,
    "deit_tiny_widelast_fixed_linear_patch16_224": 8_458_816,
    "deit_tiny_uniform219_patch16_224": 7_372_759,
}


@pytest.fixture(scope="module")
def teacher():
    cfg = config.resolve(PAPER[0])["teacher"] | {"name": "cait_s24_224.fb_dist_in1k", "pretrained": False}
    return frozen_teacher(cfg)  # random init: no download


def test_the_published_variants_are_shipped():
    names = {p.stem for p in PAPER}
    assert {
        "featkd_mse_linear",
        "uniform219_spectral",
        "uniform219_alone",
        "widelast_fixed_step_softkd_mse",
        "widelast_heads_linear_softkd_mse",
        "widelast_fixed_linear_softkd_mse",
    } <= names


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_recipe_builds_its_models(path, teacher):
    cfg = config.resolve(path)
    student = create_model(cfg["model"], num_classes=1000)[0]
    assert count_params(student) == PARAMS[cfg["model"]["name"]]
    lc = cfg["loss"]
    if lc["alpha"] == 0 and lc["feat_weight"] == 0:
        assert path.stem.endswith("_alone") and cfg["teacher"]["name"] is None
        return
    assert cfg["teacher"]["name"] == "cait_s24_224.fb_dist_in1k" and cfg["teacher"]["pretrained"]
    task = DistillTask(student, teacher, lc, (3, 224, 224), 1000)
    if lc["feat_weight"] > 0:
        narrow = block_widths(student)[-1] < 384 and not hasattr(student, "lift_dim")
        # a narrower student meets the teacher through pooling, except in the clearly named variants
        want = ("linear" if path.stem.endswith("_linear") else "pool") if narrow else "none"
        assert task.projector_modes == [want]
        linear = [p for p in task.trainable.projectors.parameters()]
        assert bool(linear) == (want == "linear")
        assert lc["feat_weight"] == 0.2 and lc["alpha"] in (0.0, 0.9)
    if path.stem == "uniform219_spectral":  # the published control: feature-only, spectral
        assert (lc["alpha"], lc["feat_loss"], task.t_pool) == (0.0, "spectral", [219])
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        assert student.eval()(x).shape == (1, 1000)
