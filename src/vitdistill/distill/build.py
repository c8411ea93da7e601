"""The training config's teacher, built by :func:`vitdistill.models.loading.create_model`.

Students are built from their model spec (:func:`vitdistill.models.loading.create_from_spec`);
the spec helpers are re-exported here for older imports.
"""

from __future__ import annotations

from torch import nn

from vitdistill.models.loading import (  # noqa: F401  (re-exported for older imports)
    check_name,
    create_from_spec,
    create_model,
    load_weights,
    model_spec,
    saved_model_spec,
)

TEACHER_OPT_IN = "--trust-checkpoint (or teacher.trust_checkpoint: true)"


def build_teacher(cfg_teacher: dict) -> nn.Module:
    """The frozen teacher in eval mode from a config's ``teacher`` section (name + kwargs, with
    pretrained weights or a local file; a vitdistill run or export may omit the name)."""
    teacher, _ = create_model(
        cfg_teacher.get("name"),
        cfg_teacher.get("checkpoint"),
        pretrained=bool(cfg_teacher.get("pretrained")),
        trust_checkpoint=bool(cfg_teacher.get("trust_checkpoint")),
        role="teacher",
        opt_in=TEACHER_OPT_IN,
        **(cfg_teacher.get("kwargs") or {}),
    )
    return teacher.requires_grad_(False)
