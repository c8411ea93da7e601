"""Lift: a ViT student that keeps its lifting projector at inference.

A narrow student regressing a wide teacher's tokens through a throw-away projector fails because
the teacher's token codes are spread over (nearly) all of its channels. Lift keeps the projector
Linear(d_s -> d_t, no bias) + LayerNorm(d_t) inside the model, applies it to every token of the last
block and classifies the mean of the lifted patch tokens, so the student's output space has the
teacher's width.

In timm's ``VisionTransformer`` the ``norm`` module is the map from block outputs to head features;
Lift puts its projector exactly there. ``forward_features`` and
``forward_intermediates(norm=True)`` therefore return lifted (teacher-width) tokens, and every
backbone key (``patch_embed``, ``cls_token``, ``pos_embed``, ``blocks.N``) stays timm's, so a plain
ViT checkpoint loads into a Lift student with ``strict=False`` (only ``norm``/``head`` differ).
"""

from __future__ import annotations

import functools

import torch
from timm.layers import LayerNorm, get_norm_layer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitdistill.errors import UserError
from vitdistill.models.conventions import LIFT_NORM_EPS, check_init

__all__ = ["TokenProjector", "LiftVisionTransformer"]


class TokenProjector(nn.Module):
    """Per-token Linear(in_dim -> out_dim, no bias) followed by a norm at ``out_dim``.

    Used as Lift's lifting projector and as WideLast's entry projection. No bias because the
    following LayerNorm re-centres anyway (as in the published remedies).
    """

    def __init__(self, in_dim: int, out_dim: int, norm_layer=None, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        norm_layer = get_norm_layer(norm_layer) or LayerNorm
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.proj = nn.Linear(in_dim, out_dim, bias=False, **dd)
        self.norm = norm_layer(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}"


def _device_dtype(module: nn.Module) -> dict:
    p = next(module.parameters(), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {}


def _finish_init(model: VisionTransformer, weight_init: str) -> None:
    """Run timm's ViT initialisation once every module (including the replaced ones) exists."""
    if weight_init != "skip":
        model.weight_init_mode = weight_init
        model.init_weights(needs_reset=False)


class LiftVisionTransformer(VisionTransformer):
    """timm ViT whose final norm is a retained lifting projector and whose head sits at ``lift_dim``.

    Pooling defaults to the mean of the patch tokens (prefix tokens excluded), as in the Lift
    remedy; the CLS token of the base architecture stays in the sequence. ``init="published"``
    builds the projector's norm as a LayerNorm with eps 1e-5 and keeps PyTorch's default
    initialisation of the projector and the head, as the published code did; ``"timm"`` uses the
    base's norm layer and timm's ViT initialisation everywhere.
    """

    def __init__(
        self,
        lift_dim: int = 384,
        global_pool: str = "avg",
        fc_norm: bool | None = False,
        norm_layer=None,
        weight_init: str = "",
        init: str = "timm",
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        check_init(init)
        if global_pool in ("map", "prr"):
            raise UserError(
                f"Lift does not support attention pooling (global_pool={global_pool!r}); use 'avg' or 'token'"
            )
        if fc_norm:
            raise UserError("Lift normalises every token inside its projector; fc_norm=True is not supported")
        if int(lift_dim) <= 0:
            raise UserError(f"lift_dim must be a positive width, got {lift_dim}")
        super().__init__(
            global_pool=global_pool,
            fc_norm=False,
            norm_layer=norm_layer,
            weight_init="skip",
            device=device,
            dtype=dtype,
            **kwargs,
        )
        dd = {"device": device, "dtype": dtype}
        self.lift_dim = int(lift_dim)
        self.init = init
        lift_norm = functools.partial(LayerNorm, eps=LIFT_NORM_EPS) if init == "published" else norm_layer
        self.norm = TokenProjector(self.embed_dim, self.lift_dim, norm_layer=lift_norm, **dd)
        self.fc_norm = nn.Identity()
        self.num_features = self.head_hidden_size = self.lift_dim
        self.head = (
            nn.Linear(self.lift_dim, self.num_classes, **dd) if self.num_classes > 0 else nn.Identity()
        )
        _finish_init(self, weight_init)
        if init == "published" and weight_init != "skip":
            # the published projector and head kept PyTorch's default Linear initialisation
            self.norm.proj.reset_parameters()
            if isinstance(self.head, nn.Linear):
                self.head.reset_parameters()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head at ``lift_dim`` (timm's would be built at the backbone width)."""
        if global_pool in ("map", "prr"):
            raise UserError(f"Lift does not support attention pooling (global_pool={global_pool!r})")
        super().reset_classifier(num_classes, global_pool)
        dd = _device_dtype(self.norm)
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)
