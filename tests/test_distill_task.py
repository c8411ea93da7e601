"""The distillation task on real (tiny, random-init) timm models: gradients, skipped terms, checks."""

from __future__ import annotations

import pytest
import timm
import torch

import vitdistill.models as vm
from vitdistill.distill import config as C
from vitdistill.distill.task import DistillTask, forward_with_taps
from vitdistill.errors import UserError
from vitdistill.models.taps import token_features

S_KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=5)
T_KW = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=5)


def _loss_cfg(**kw):
    return {**C.defaults()["loss"], **kw}


def _teacher():
    t = timm.create_model("vit_tiny_patch16_224", **T_KW).eval()
    t.requires_grad_(False)
    return t


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])


def _grad_norm(module):
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return sum(float(g.abs().sum()) for g in grads) if grads else 0.0


def test_forward_with_taps_matches_separate_passes():
    m = timm.create_model("vit_tiny_patch16_224", **S_KW).eval()
    x, _ = _batch()
    logits, feats = forward_with_taps(m, x, [1, 0], norm=False)
    torch.testing.assert_close(logits, m(x))
    for f, ref in zip(feats, token_features(m, x, [1, 0]), strict=True):
        torch.testing.assert_close(f, ref)
    cait = timm.create_model(
        "cait_xxs24_224",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        depth_token_only=1,
        num_classes=5,
    ).eval()
    lg, ft = forward_with_taps(cait, x, [1], norm=False)
    torch.testing.assert_close(lg, cait(x))
    torch.testing.assert_close(ft[0], token_features(cait, x, [1])[0])


@pytest.mark.parametrize("kind", ["projector", "pool", "lift", "widelast"])
def test_gradients_reach_trainable_parts_and_not_the_teacher(kind):
    teacher = _teacher()
    base = {k: v for k, v in S_KW.items()}
    if kind in ("projector", "pool"):
        student = timm.create_model("vit_tiny_patch16_224", **base)
    elif kind == "lift":
        student = vm.create_lift("vit_tiny_patch16_224", 32, **base)
    else:
        student = vm.create_widelast("vit_tiny_patch16_224", 32, num_wide=1, **base)
    proj = {"projector": "linear", "pool": "pool"}.get(kind, "auto")
    cfg = _loss_cfg(alpha=0.5, feat_weight=1.0, feat_loss="spectral", projector=proj)
    task = DistillTask(student, teacher, cfg, (3, 16, 16), 5)
    x, y = _batch()
    terms = task(x, y)
    assert set(terms) == {"ce", "kd", "feat", "loss"}
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert _grad_norm(student.blocks[0]) > 0 and _grad_norm(student.patch_embed) > 0
    if kind == "projector":
        assert len(task.trainable.projectors) == 1 and _grad_norm(task.trainable.projectors) > 0
    elif kind == "pool":
        assert not list(task.trainable.projectors.parameters()) and task.projector_modes == ["pool"]
    elif kind == "lift":
        assert len(task.trainable.projectors) == 0 or all(
            isinstance(p, torch.nn.Identity) for p in task.trainable.projectors
        )
        assert _grad_norm(student.norm) > 0  # the lifting projector
    else:
        assert _grad_norm(student.blocks[-1]) > 0 and student.blocks[-1] is not None
    # the feature term alone must also push gradients into the parts that produce distilled tokens
    task.zero_grad(set_to_none=True)
    task(x, y)["feat"].backward()
    target = {
        "projector": task.trainable.projectors,
        "pool": student.blocks[-1],
        "lift": student.norm,
        "widelast": student.blocks[-1],
    }[kind]
    assert _grad_norm(target) > 0


def test_zero_weight_terms_are_not_computed_and_teacher_not_run():
    teacher = _teacher()
    calls = []
    teacher.register_forward_pre_hook(lambda m, a: calls.append(1))
    hooks_fi = []
    orig = teacher.forward_intermediates

    def counting_fi(*a, **k):  # token taps go through forward_intermediates, not forward
        hooks_fi.append(1)
        return orig(*a, **k)

    teacher.forward_intermediates = counting_fi
    student = timm.create_model("vit_tiny_patch16_224", **S_KW)
    x, y = _batch()
    task = DistillTask(student, teacher, _loss_cfg(alpha=0.0, feat_weight=0.0), (3, 16, 16), 5)
    assert task.teacher is None
    assert set(task(x, y)) == {"ce", "loss"}
    assert not calls and not hooks_fi
    task = DistillTask(student, teacher, _loss_cfg(alpha=1.0, feat_weight=0.0), (3, 16, 16), 5)
    assert set(task(x, y)) == {"kd", "loss"}  # CE weight 1 - alpha = 0: not computed
    assert len(calls) == 1 and not hooks_fi


def test_teacher_input_is_renormalised():
    teacher = _teacher()
    seen = []
    teacher.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    student = timm.create_model("vit_tiny_patch16_224", **S_KW)
    renorm = (((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    task = DistillTask(student, teacher, _loss_cfg(alpha=0.5), (3, 16, 16), 5, teacher_renorm=renorm)
    x, y = _batch()
    task(x, y)
    raw = x * 0.5 + 0.5
    expect = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expect, rtol=1e-5, atol=1e-5)


def test_distillation_token_student_uses_dist_head_for_kd():
    teacher = _teacher()
    student = timm.create_model("deit_tiny_distilled_patch16_224", **S_KW)
    task = DistillTask(student, teacher, _loss_cfg(alpha=0.5, kd="hard"), (3, 16, 16), 5)
    task.train()
    x, y = _batch()
    terms = task(x, y)
    terms["kd"].backward()
    assert _grad_norm(student.head_dist) > 0 and _grad_norm(student.head) == 0
    with torch.no_grad():
        cls, dist = student(x)
        t = teacher(x)
    assert terms["kd"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(dist, t.argmax(1)).item(), rel=1e-5
    )


def test_grid_mismatch_and_class_mismatch_are_user_errors():
    student = timm.create_model("vit_tiny_patch16_224", **{**S_KW, "patch_size": 8})
    with pytest.raises(UserError, match="img_size / patch_size"):
        DistillTask(student, _teacher(), _loss_cfg(feat_weight=1.0), (3, 16, 16), 5)
    student = timm.create_model("vit_tiny_patch16_224", **{**S_KW, "num_classes": 7})
    with pytest.raises(UserError, match="teacher has 5, data has 7"):
        DistillTask(student, _teacher(), _loss_cfg(alpha=0.5), (3, 16, 16), 7)
    student = timm.create_model("vit_tiny_patch16_224", **S_KW)
    with pytest.raises(UserError, match="projector"):
        DistillTask(student, _teacher(), _loss_cfg(feat_weight=1.0, projector="none"), (3, 16, 16), 5)


@pytest.mark.parametrize("choice", ["auto", "pool"])
def test_pool_projector_regresses_the_channel_pooled_teacher(choice):
    """The feature term equals MSE(student tokens, teacher tokens averaged in channel pairs 32 -> 16)."""
    teacher = _teacher()
    student = timm.create_model("vit_tiny_patch16_224", **S_KW)
    task = DistillTask(student, teacher, _loss_cfg(feat_weight=1.0, projector=choice), (3, 16, 16), 5)
    assert task.projector_modes == ["pool"] and task.trainable.state_dict().keys() == {
        f"student.{k}" for k in student.state_dict()
    }
    x, y = _batch()
    with torch.no_grad():
        s_tok = token_features(student, x, [1])[0]
        t_tok = token_features(teacher, x, [2])[0]
        pooled = 0.5 * (t_tok[..., 0::2] + t_tok[..., 1::2])
        want = torch.mean((s_tok - pooled) ** 2)
        torch.testing.assert_close(task(x, y)["feat"], want)


def test_projector_choices_and_width_errors():
    teacher = _teacher()
    narrow = timm.create_model("vit_tiny_patch16_224", **S_KW)
    task = DistillTask(narrow, teacher, _loss_cfg(feat_weight=1.0, projector="linear"), (3, 16, 16), 5)
    assert task.projector_modes == ["linear"] and task.trainable.projectors[0].weight.shape == (32, 16)
    wide = timm.create_model("vit_tiny_patch16_224", **{**S_KW, "embed_dim": 48})
    with pytest.raises(UserError, match="wider than the teacher"):
        DistillTask(wide, teacher, _loss_cfg(feat_weight=1.0, projector="pool"), (3, 16, 16), 5)
    assert DistillTask(wide, teacher, _loss_cfg(feat_weight=1.0), (3, 16, 16), 5).projector_modes == [
        "linear"
    ]
    same = timm.create_model("vit_tiny_patch16_224", **{**S_KW, "embed_dim": 32})
    task = DistillTask(same, teacher, _loss_cfg(feat_weight=1.0), (3, 16, 16), 5)
    assert task.projector_modes == ["none"] and not list(task.trainable.projectors.parameters())
