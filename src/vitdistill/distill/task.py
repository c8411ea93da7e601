"""Student + teacher + projectors -> a dict of loss terms.

timm ships a task API (``timm.task``) with logit and feature distillation tasks. Its feature task
distils pooled features of the final layer; here token-level features of chosen block pairs
are distilled (MSE or the token-grid spectral loss), Lift students are tapped after their lifting
projector, and the teacher is skipped whenever no term needs it. So the same idea (one module that
owns the trainable parts, wrapped by DDP; the frozen teacher outside it) is written out here.

The trainable part (:class:`StudentWithProjectors`) computes the student's logits and its tapped
(and projected) tokens in ONE forward pass via ``forward_intermediates``, so feature KD does not
run the student twice.
"""

from __future__ import annotations

import torch
from torch import nn

from vitdistill.distill import losses
from vitdistill.distill.config import default, needs_teacher
from vitdistill.errors import UserError


def _has_blocks(model: nn.Module) -> bool:
    """A transformer tapped block by block (a CNN's ``blocks``, as EfficientNet's, are not)."""
    from vitdistill.models.taps import tap_family

    return tap_family(model) == "blocks"


def forward_with_taps(model: nn.Module, x: torch.Tensor, layers: list[int], norm: bool):
    """(logits, [tokens (B, N, C) per layer]) from one pass; ``layers`` are absolute indices."""
    if not layers:
        return model(x), []
    take = sorted(set(layers))
    if _has_blocks(model):
        final, inter = model.forward_intermediates(
            x, indices=take, norm=norm, output_fmt="NLC", intermediates_only=False, stop_early=False
        )
        logits = model.forward_head(final)
        by_layer = dict(zip(take, inter, strict=True))
    else:  # staged models (Swin): taps and logits from separate passes
        from vitdistill.models.taps import token_features

        feats = token_features(model, x, take, norm=norm)
        logits = model(x)
        by_layer = dict(zip(take, feats, strict=True))
    return logits, [by_layer[i] for i in layers]


def teacher_features(model: nn.Module, x: torch.Tensor, layers: list[int], need_logits: bool):
    """Teacher logits (or None) and tokens; stops early when only tokens are needed."""
    if not layers:
        return model(x), []
    if not need_logits:
        from vitdistill.models.taps import token_features

        return None, token_features(model, x, layers)
    return forward_with_taps(model, x, layers, norm=False)


def projector_mode(choice: str, student_width: int, teacher_width: int) -> str:
    """How one tap pair bridges widths: ``pool``, ``linear`` or ``none`` (``auto`` resolved).

    ``pool`` (the paper's baseline) averages the teacher's channels down to the student's width and
    learns nothing; ``linear`` trains a student->teacher Linear that is discarded at export (the
    FitNets-style variant); ``none`` compares tokens as they are. ``auto`` is ``pool`` when the
    teacher is wider, ``none`` when the widths match and ``linear`` when the student is wider.
    """
    if choice == "auto":
        if teacher_width > student_width:
            return "pool"
        return "none" if teacher_width == student_width else "linear"
    if choice == "none" and student_width != teacher_width:
        raise UserError(
            f"loss.projector=none needs equal widths, but student tokens have {student_width} channels and the "
            f"teacher's {teacher_width}: use loss.projector=pool (the paper's baseline) or linear, or a remedy "
            f"(model.remedy=lift / widelast with model.width={teacher_width})"
        )
    if choice == "pool" and student_width > teacher_width:
        raise UserError(
            f"loss.projector=pool shrinks the teacher's tokens, but the student ({student_width} channels) is "
            f"wider than the teacher ({teacher_width}): use loss.projector=linear"
        )
    if choice not in ("pool", "linear", "none"):
        raise UserError(f"loss.projector must be auto, pool, linear or none; got {choice!r}")
    return choice


class StudentWithProjectors(nn.Module):
    """The trainable part: the student and one Linear per tap pair (Identity when none is learned).

    Only ``loss.projector=linear`` across different widths adds parameters here; a ``pool`` run's
    projectors are parameter-free, so its checkpoint holds the plain student's tensors only.
    """

    def __init__(
        self,
        student: nn.Module,
        student_layers: list[int],
        student_norm: bool,
        projector_dims: list[tuple[int, int]] | None = None,
    ):
        super().__init__()
        self.student = student
        self.student_layers = list(student_layers)
        self.student_norm = bool(student_norm)
        self.projectors = nn.ModuleList(
            nn.Linear(i, o, bias=False) if i != o else nn.Identity() for i, o in (projector_dims or [])
        )

    def no_weight_decay(self) -> set[str]:
        fn = getattr(self.student, "no_weight_decay", None)
        names = fn() if callable(fn) else set()
        return {f"student.{n}" for n in names}

    def forward(self, x: torch.Tensor):
        logits, feats = forward_with_taps(self.student, x, self.student_layers, self.student_norm)
        if self.projectors:
            feats = [proj(f) for proj, f in zip(self.projectors, feats, strict=True)]
        return logits, feats


def _probe_tokens(model: nn.Module, layers: list[int], norm: bool, input_size) -> list[tuple[int, ...]]:
    from vitdistill.models.taps import token_features

    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            x = torch.zeros(1, *input_size, device=p.device, dtype=p.dtype)
            return [tuple(t.shape[1:]) for t in token_features(model, x, layers, norm=norm)]
    finally:
        model.train(was)


class DistillTask(nn.Module):
    """Computes ``{'loss', 'ce', 'kd', 'feat', ...}`` for a batch; only terms with weight > 0."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        loss_cfg: dict,
        input_size,
        num_classes: int,
        teacher_renorm: tuple | None = None,
    ):
        super().__init__()
        self.cfg = dict(loss_cfg)
        self.alpha = float(loss_cfg["alpha"])
        self.w_ce = 1.0 - self.alpha
        self.w_feat = float(loss_cfg["feat_weight"])
        self.use_kd = self.alpha > 0
        self.use_feat = self.w_feat > 0
        self.teacher = teacher if needs_teacher(loss_cfg) else None
        if needs_teacher(loss_cfg) and teacher is None:
            raise UserError("loss.alpha or loss.feat_weight > 0 needs a teacher (teacher.name)")
        self.grid: tuple[int, int] | None = None
        s_layers: list[int] = []
        self.t_layers: list[int] = []
        dims: list[tuple[int, int]] = []
        self.projector_modes: list[str] = []  # per tap pair: pool, linear or none (auto resolved)
        self.t_pool: list[int | None] = []  # per tap pair: pool the teacher's tokens to this width
        remedy_norm = hasattr(student, "lift_dim")
        choice = loss_cfg.get("student_norm", default("loss.student_norm"))
        s_norm = remedy_norm if choice == "auto" else choice == "yes"
        if self.use_kd and self.teacher is not None:
            t_classes = getattr(self.teacher, "num_classes", None)
            if t_classes is not None and t_classes != num_classes:
                raise UserError(
                    f"logit KD needs the teacher to predict the data's classes: teacher has {t_classes}, "
                    f"data has {num_classes} (give a teacher trained on this data, or use feature KD only: loss.alpha=0)"
                )
        if self.use_feat:
            from vitdistill.models.taps import check_tappable, resolve_layers

            check_tappable(student)
            check_tappable(self.teacher)
            pairs = loss_cfg.get("pairs") or [[-1, -1]]
            s_layers = [resolve_layers(student, p[0])[0] for p in pairs]
            self.t_layers = [resolve_layers(self.teacher, p[1])[0] for p in pairs]
            s_shapes = _probe_tokens(student, s_layers, s_norm, input_size)
            t_shapes = _probe_tokens(self.teacher, self.t_layers, False, input_size)
            for (sn, sc), (tn, tc) in zip(s_shapes, t_shapes, strict=True):
                if sn != tn:
                    raise UserError(
                        f"student and teacher token grids differ ({sn} vs {tn} patch tokens at input "
                        f"{tuple(input_size[1:])}): give both the same img_size / patch_size "
                        "(model.kwargs and teacher.kwargs)"
                    )
                mode = projector_mode(loss_cfg.get("projector", default("loss.projector")), sc, tc)
                self.projector_modes.append(mode)
                self.t_pool.append(sc if mode == "pool" and sc != tc else None)
                dims.append((sc, tc) if mode == "linear" else (sc, sc))
            from vitdistill.models.taps import feature_grid

            self.grid = tuple(feature_grid(student, tuple(input_size[1:])))
        self.trainable = StudentWithProjectors(student, s_layers, s_norm, dims if self.use_feat else None)
        # Teacher re-normalisation: the loader normalises with the student's mean/std.
        if teacher_renorm is not None:
            (sm, ss), (tm, ts) = teacher_renorm
            scale = torch.tensor(ss) / torch.tensor(ts)
            shift = (torch.tensor(sm) - torch.tensor(tm)) / torch.tensor(ts)
            self.register_buffer("t_scale", scale.view(1, 3, 1, 1), persistent=False)
            self.register_buffer("t_shift", shift.view(1, 3, 1, 1), persistent=False)
        else:
            self.t_scale = self.t_shift = None
        self.distilled_student = bool(
            self.use_kd and callable(getattr(student, "set_distilled_training", None))
        )
        if self.distilled_student:
            student.set_distilled_training(True)

    @property
    def student(self) -> nn.Module:
        return self.trainable.student

    def run_teacher(self, x: torch.Tensor):
        """Teacher logits/tokens under inference mode, cloned so autograd may save them."""
        if self.teacher is None:
            return None, []
        with torch.inference_mode():
            if self.t_scale is not None:
                x = x * self.t_scale + self.t_shift
            logits, feats = teacher_features(
                self.teacher, x, self.t_layers if self.use_feat else [], need_logits=self.use_kd
            )
            feats = [
                f if c is None else losses.pool_channels(f, c)
                for f, c in zip(feats, self.t_pool, strict=True)
            ]
        return (logits.clone() if logits is not None else None), [f.clone() for f in feats]

    def losses(self, trainable_out, teacher_out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        (s_logits, s_feats), (t_logits, t_feats) = trainable_out, teacher_out
        if isinstance(s_logits, tuple):  # DeiT distillation token: (cls head, dist head)
            cls_logits, kd_logits = s_logits
        else:
            cls_logits = kd_logits = s_logits
        terms: dict[str, torch.Tensor] = {}
        total = 0.0
        if self.w_ce > 0:
            terms["ce"] = losses.cross_entropy(cls_logits, target, self.cfg["smoothing"])
            total = total + self.w_ce * terms["ce"]
        if self.use_kd:
            if self.cfg["kd"] == "soft":
                terms["kd"] = losses.soft_kd(kd_logits, t_logits, self.cfg["temperature"])
            else:
                terms["kd"] = losses.hard_kd(kd_logits, t_logits)
            total = total + self.alpha * terms["kd"]
        if self.use_feat:
            per_pair = []
            for s, t in zip(s_feats, t_feats, strict=True):
                s = losses.normalize_tokens(s, self.cfg["feat_norm"])
                t = losses.normalize_tokens(t, self.cfg["feat_norm"])
                if self.cfg["feat_loss"] == "mse":
                    per_pair.append(losses.feature_mse(s, t))
                else:
                    per_pair.append(losses.spectral_loss(s, t, self.grid))
            terms["feat"] = torch.stack(per_pair).mean()
            if len(per_pair) > 1:
                for i, v in enumerate(per_pair):
                    terms[f"feat{i}"] = v
            total = total + self.w_feat * terms["feat"]
        terms["loss"] = total if isinstance(total, torch.Tensor) else cls_logits.sum() * 0.0
        return terms

    def forward(self, x: torch.Tensor, target: torch.Tensor, trainable: nn.Module | None = None):
        """Loss terms for a batch; ``trainable`` is the (possibly DDP-wrapped) trainable module."""
        t_out = self.run_teacher(x)
        out = (trainable or self.trainable)(x)
        return self.losses(out, t_out, target)
