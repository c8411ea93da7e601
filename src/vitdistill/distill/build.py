"""The training config's teacher, built through :mod:`vitdistill.models.loading`.

Students are built from their model spec (:func:`vitdistill.models.loading.create_from_spec`);
the spec helpers are re-exported here for the trainer's callers.
"""

from __future__ import annotations

from torch import nn

from vitdistill.checkpoints import head_classes, read_state_dict
from vitdistill.errors import UserError
from vitdistill.models.loading import (  # noqa: F401  (re-exported: the trainer and results use them)
    check_name,
    create_from_spec,
    load_weights,
    model_spec,
    saved_model_spec,
)


def build_teacher(cfg_teacher: dict) -> nn.Module:
    """The frozen teacher in eval mode: timm name + kwargs, pretrained or a local file.

    A teacher trained by vitdistill (run folder or export) may omit ``name``: its saved model
    spec rebuilds it exactly (Lift / WideLast teachers included).
    """
    import timm

    name = cfg_teacher.get("name")
    ckpt = cfg_teacher.get("checkpoint")
    trust = bool(cfg_teacher.get("trust_checkpoint"))
    opt_in = "--trust-checkpoint (or teacher.trust_checkpoint: true)"
    if not name:
        spec = saved_model_spec(ckpt) if ckpt else None
        if spec is None:
            if ckpt:  # an unreadable or refused file says so first
                read_state_dict(ckpt, trust=trust, opt_in=opt_in)
            raise UserError(
                "teacher.name is not set (and teacher.checkpoint is not a vitdistill run or export "
                "that records its model)"
            )
        teacher = create_from_spec(spec)
        load_weights(teacher, ckpt, role="teacher", trust=trust, opt_in=opt_in)
        teacher.requires_grad_(False)
        return teacher.eval()
    check_name(name, "teacher")
    kwargs = dict(cfg_teacher.get("kwargs") or {})
    state = None
    if ckpt:
        state, _ = read_state_dict(ckpt, trust=trust, opt_in=opt_in)
        n_head = head_classes(state)
        if "num_classes" not in kwargs and n_head is not None:
            kwargs["num_classes"] = n_head  # a teacher trained on other data keeps its classes
    try:
        teacher = timm.create_model(name, pretrained=bool(cfg_teacher.get("pretrained")), **kwargs)
    except TypeError as e:
        raise UserError(f"cannot build teacher {name!r} with kwargs {kwargs}: {e}") from None
    except (RuntimeError, OSError) as e:
        if cfg_teacher.get("pretrained"):
            raise UserError(
                f"cannot load pretrained weights for teacher {name!r} ({str(e).splitlines()[0][:200]}); "
                "download them into the timm/HF cache or use teacher.checkpoint: FILE"
            ) from None
        raise
    if state is not None:
        load_weights(teacher, ckpt, role="teacher", state=state)
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher
