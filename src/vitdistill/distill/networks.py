"""The networks of a training run: the student, the frozen teacher, the task that joins them,
the student's EMA and the module the loop calls (compiled, in DDP under torchrun).

Plain functions of the resolved config; the trainer calls them in order and keeps what they return.
"""

from __future__ import annotations

import torch
from torch import nn

from vitdistill.distill import config as config_mod
from vitdistill.distill import inputs
from vitdistill.distill.task import DistillTask
from vitdistill.errors import UserError
from vitdistill.models import as_spec, create_model
from vitdistill.models.profile import count_params


def build_student(model_cfg: dict, num_classes: int) -> tuple[nn.Module, dict, int]:
    """(student, its model spec, its parameter count), with its starting weights."""
    spec = as_spec(model_cfg, num_classes)
    student, _ = create_model(
        spec,
        model_cfg["checkpoint"] or None,
        pretrained=model_cfg["pretrained"],
        trust_checkpoint=model_cfg["trust_checkpoint"],
        role="student",
        opt_in="model.trust_checkpoint: true",
    )
    return student.train(), spec, count_params(student)


def frozen_teacher(cfg_teacher: dict) -> nn.Module:
    """The frozen teacher in eval mode from a config's ``teacher`` section (name + kwargs, with
    pretrained weights or a local file; a vitdistill run or export may omit the name)."""
    teacher, _ = create_model(
        cfg_teacher.get("name"),
        cfg_teacher.get("checkpoint"),
        pretrained=bool(cfg_teacher.get("pretrained")),
        trust_checkpoint=bool(cfg_teacher.get("trust_checkpoint")),
        role="teacher",
        opt_in="teacher.trust_checkpoint: true",
        **(cfg_teacher.get("kwargs") or {}),
    )
    return teacher.requires_grad_(False)


def build_teacher(config: dict, student: nn.Module) -> tuple[nn.Module | None, tuple]:
    """(the frozen teacher when a loss term needs it, else None; the student's input size)."""
    from vitdistill.data import resolve_data_config
    from vitdistill.data.transforms import model_input_size

    teacher = None
    if config_mod.needs_teacher(config["loss"]):
        teacher = frozen_teacher(config["teacher"])
    input_size = tuple(model_input_size(student) or resolve_data_config(student)["input_size"])
    if teacher is None:
        return None, input_size
    t_size = model_input_size(teacher)
    if (
        t_size is not None
        and tuple(t_size) != input_size
        and not getattr(getattr(teacher, "patch_embed", None), "dynamic_img_size", False)
    ):
        raise UserError(
            f"teacher expects input {tuple(t_size[1:])} but the student sees "
            f"{input_size[1:]}: set teacher.kwargs.img_size (and patch_size) to match"
        )
    return teacher, input_size


def build_task(
    config: dict, student: nn.Module, teacher: nn.Module | None, input_size, num_classes: int, device
) -> tuple[DistillTask, tuple | None]:
    """(the loss computation on ``device``, the teacher's input re-normalisation or None)."""
    renorm = inputs.teacher_renorm(student, teacher) if config["teacher"]["renormalize"] else None
    teacher = teacher.to(device) if teacher is not None else None
    student = student.to(device)
    task = DistillTask(student, teacher, config["loss"], input_size, num_classes, renorm).to(device)
    if config["channels_last"]:
        task.trainable.to(memory_format=torch.channels_last)
    return task, renorm


def build_ema(config: dict, student: nn.Module):
    """timm's EMA of the student (``ema.enabled``), or None."""
    ema_cfg = config["ema"]
    if not ema_cfg["enabled"]:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(student, decay=ema_cfg["decay"], use_warmup=ema_cfg["warmup"])


def wrap_trainable(config: dict, trainable: nn.Module, distributed: bool, device: torch.device) -> nn.Module:
    """What the loop calls: ``trainable``, compiled (``compile``) and in DDP when distributed."""
    model = trainable
    if config["compile"]:
        model = torch.compile(model)
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        model = DDP(model, device_ids=ids, broadcast_buffers=False)
    return model
