"""``optim.decay_embeddings``: the param groups of every paper student, by parameter name.

The published optimizer factory exempted what a model's ``no_weight_decay()`` lists, plus every
1-D tensor and bias. timm's DeiT-Tiny has the method; the published Lift, WideLast and width-219
students were wrappers without it, so their ``pos_embed`` / ``cls_token`` were decayed.
"""

from __future__ import annotations

import pytest
import timm
from hypothesis import given, settings
from hypothesis import strategies as st

import vitdistill.models  # noqa: F401  (registers the students)
from _helpers import TINY_KW
from vitdistill.distill import config as C
from vitdistill.distill.optim import build_optimizer
from vitdistill.distill.task import StudentWithProjectors
from vitdistill.errors import UserError
from vitdistill.models import create_lift, create_widelast

EMBEDDINGS = {"student.pos_embed", "student.cls_token", "student.dist_token"}
WRAPPED = [  # the published code decayed their embeddings
    "deit_tiny_lift_patch16_224",
    "deit_tiny_widelast_patch16_224",
    "deit_tiny_widelast_fixed_step_patch16_224",
    "deit_tiny_widelast_heads_linear_patch16_224",
    "deit_tiny_widelast_fixed_linear_patch16_224",
    "deit_tiny_uniform219_patch16_224",
]
TIMM_OWN = ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"]  # ... and exempted theirs


def _decayed(student, mode) -> set[str]:
    cfg = C.resolve({"optim": {"decay_embeddings": mode, "weight_decay": 0.05, "lr": 1e-3}})
    trainable = StudentWithProjectors(student, [], False)
    optimizer, _ = build_optimizer(cfg, trainable)
    wd = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(trainable.named_parameters())
    assert {id(p) for p in names.values()} == set(wd)
    assert {wd[id(p)] for p in names.values()} == {0.0, 0.05}
    return {n for n, p in names.items() if wd[id(p)] == 0.05}


def _by_hand(student, embeddings: bool) -> set[str]:
    """Matrices decay, 1-D tensors and biases never; the embeddings as asked."""
    names = {f"student.{n}" for n, p in student.named_parameters() if p.ndim > 1 and not n.endswith(".bias")}
    return names if embeddings else names - EMBEDDINGS


@pytest.mark.parametrize("name", WRAPPED + TIMM_OWN)
def test_published_decay_per_student(name):
    student = timm.create_model(name, **dict(TINY_KW, depth=4))
    wrapped = name in WRAPPED
    published = _decayed(student, "published")
    assert published == _by_hand(student, embeddings=wrapped)
    assert published == _decayed(student, wrapped)  # the published rule is one of the two plain ones
    assert ("student.pos_embed" in published) is wrapped and ("student.cls_token" in published) is wrapped
    assert (
        "student.blocks.0.attn.qkv.weight" in published and "student.blocks.0.norm1.weight" not in published
    )
    if "distilled" in name:
        assert "student.dist_token" not in published
    # vitdistill's default: the same rule for every student, embeddings never decayed
    assert _decayed(student, False) == _by_hand(student, embeddings=False)


def test_published_decay_on_builder_students_and_plain_timm_models():
    kw = dict(TINY_KW, num_classes=10)
    for student in (
        create_lift("vit_tiny_patch16_224", 32, **kw),
        create_widelast("vit_tiny_patch16_224", 32, **kw),
    ):
        assert _decayed(student, "published") == _by_hand(student, embeddings=True)
    plain = timm.create_model("vit_tiny_patch16_224", **kw)  # timm's: no_weight_decay() was read
    assert _decayed(plain, "published") == _by_hand(plain, embeddings=False)
    # a timm DeiT at width 219 is not the registered control (the published code wrapped only that one)
    wide = timm.create_model("deit_tiny_patch16_224", **dict(kw, embed_dim=18))
    assert _decayed(wide, "published") == _by_hand(wide, embeddings=False)


@given(
    st.one_of(
        st.text(max_size=12),
        st.integers(),
        st.floats(allow_nan=True),
        st.lists(st.booleans(), max_size=2),
        st.none(),
    )
)
@settings(max_examples=60, deadline=None)
def test_decay_embeddings_accepts_false_true_published_only(value):
    over = (
        [f"optim.decay_embeddings={value}"] if isinstance(value, str) else [("optim.decay_embeddings", value)]
    )
    try:
        got = C.resolve(None, over)["optim"]["decay_embeddings"]
    except UserError as e:
        assert "optim.decay_embeddings" in str(e)
        return
    # what --set reads as YAML: only false, true and published are accepted, as such
    assert got in (False, True, "published") and (got is True or got is False or got == "published")
