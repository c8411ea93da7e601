"""WideLast: a ViT student whose last block(s) run at the teacher's width.

Instead of lifting the student's output after the fact (Lift), WideLast lets the last ``num_wide``
blocks compute at ``wide_dim``: the first of them starts with an entry projection
Linear(d_s -> wide_dim, no bias) + LayerNorm applied to every token, then runs a standard pre-norm
timm block at ``wide_dim``. The projection lives *inside* that block so ``len(blocks)`` and block
indices stay those of the base ViT and timm's ``forward_intermediates`` works unchanged.
"""

from __future__ import annotations

import torch
from timm.layers import LayerNorm, get_norm_layer
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from vitdistill.errors import UserError
from vitdistill.models.conventions import CLS_TOKEN_STD, check_init
from vitdistill.models.lift import TokenProjector, _device_dtype, _finish_init

__all__ = ["SCHEDULES", "WideEntryBlock", "WideLastVisionTransformer", "widelast_tail"]


class WideEntryBlock(Block):
    """A timm ``Block`` at ``dim`` preceded by the entry projection ``in_dim -> dim`` (all tokens)."""

    def __init__(
        self, in_dim: int, dim: int, num_heads: int, norm_layer=LayerNorm, device=None, dtype=None, **kwargs
    ) -> None:
        super().__init__(
            dim=dim, num_heads=num_heads, norm_layer=norm_layer, device=device, dtype=dtype, **kwargs
        )
        self.entry = TokenProjector(in_dim, dim, norm_layer=norm_layer, device=device, dtype=dtype)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # timm's Block.forward written out (TorchScript cannot compile ``super().forward``);
        # a test checks it against Block.forward on the projected tokens.
        x = self.entry(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


SCHEDULES = ("heads_step", "fixed_step", "heads_linear", "fixed_linear")


def widelast_tail(
    embed_dim: int,
    num_heads: int,
    wide_dim: int,
    num_wide: int = 1,
    schedule: str = "heads_step",
    wide_num_heads: int | None = None,
) -> list[tuple[int, int]]:
    """(width, heads) of each of the last ``num_wide`` blocks under a widening schedule.

    ``heads_step``: all at ``wide_dim``, heads keep the base head dim (DeiT-Tiny: 384 / 6 heads).
    ``fixed_step``: all at ``wide_dim`` with the base head count (384 / 3 heads of 128).
    ``heads_linear``: widths step linearly from the base to ``wide_dim`` (rounded down to the base
    head dim), heads = width / head dim (DeiT-Tiny, 3 blocks: 256/4, 320/5, 384/6).
    ``fixed_linear``: the same ramp with the base head count, widths rounded down to a multiple of
    8 x heads (DeiT-Tiny, 3 blocks: 240, 312, 384, all 3 heads). ``wide_num_heads`` overrides the
    head count of the step schedules.
    """
    if schedule not in SCHEDULES:
        raise UserError(f"unknown WideLast schedule {schedule!r} (use {', '.join(SCHEDULES)})")
    head_dim = embed_dim // num_heads
    n = int(num_wide)
    if schedule.endswith("_step"):
        widths = [int(wide_dim)] * n
    else:
        ramp = [embed_dim + (wide_dim - embed_dim) * k // n for k in range(1, n + 1)]
        unit = head_dim if schedule == "heads_linear" else 8 * num_heads
        widths = [max(unit, w - w % unit) for w in ramp[:-1]] + [int(wide_dim)]
    if schedule.startswith("fixed"):
        heads = [int(wide_num_heads or num_heads)] * n
    elif wide_num_heads is not None and schedule == "heads_step":
        heads = [int(wide_num_heads)] * n
    else:
        bad = [w for w in widths if w % head_dim]
        if bad:
            raise UserError(
                f"wide_dim={wide_dim} is not a multiple of the base head dim {head_dim}; "
                "pass wide_num_heads explicitly or use a fixed_* schedule"
            )
        heads = [w // head_dim for w in widths]
    for w, h in zip(widths, heads, strict=True):
        if w % h:
            raise UserError(f"WideLast width {w} is not divisible by its {h} heads")
    return list(zip(widths, heads, strict=True))


class _WideBlocks:
    """``block_fn`` for ``VisionTransformer``: base-width blocks, then the wide tail.

    A tail block whose width differs from its input's starts with an entry projection.
    """

    def __init__(self, depth: int, tail: list[tuple[int, int]]) -> None:
        self.first_wide = depth - len(tail)
        self.tail = tail

    def __call__(self, dim: int, num_heads: int, depth: int, **kwargs) -> nn.Module:
        if depth < self.first_wide:
            return Block(dim=dim, num_heads=num_heads, depth=depth, **kwargs)
        k = depth - self.first_wide
        width, heads = self.tail[k]
        in_dim = dim if k == 0 else self.tail[k - 1][0]
        if in_dim != width:
            return WideEntryBlock(in_dim=in_dim, dim=width, num_heads=heads, depth=depth, **kwargs)
        return Block(dim=width, num_heads=heads, depth=depth, **kwargs)


class WideLastVisionTransformer(VisionTransformer):
    """timm ViT whose last ``num_wide`` blocks, final norm and head work at ``wide_dim``.

    ``schedule`` (see :func:`widelast_tail`) sets the width and heads of each of those blocks; the
    default ``heads_step`` keeps the base head dimension (``embed_dim // num_heads``; 64 for DeiT),
    so ``wide_dim // head_dim`` heads, unless ``wide_num_heads`` is given. MLP ratio, qkv bias, norm
    layer and attention (timm's SDPA ``Attention``) are those of the base. ``init="published"``
    draws ``cls_token`` from a trunc-normal with std 0.02, as the published code did; ``"timm"``
    keeps timm's ViT initialisation (std 1e-6). Every other tensor starts as timm's ViT init.
    """

    def __init__(
        self,
        wide_dim: int = 384,
        num_wide: int = 1,
        wide_num_heads: int | None = None,
        schedule: str = "heads_step",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        global_pool: str = "token",
        fc_norm: bool | None = None,
        final_norm: bool = True,
        norm_layer=None,
        weight_init: str = "",
        init: str = "timm",
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        check_init(init)
        if "block_fn" in kwargs:
            raise UserError("WideLast builds its own blocks; block_fn cannot be overridden")
        if global_pool in ("map", "prr"):
            raise UserError(f"WideLast does not support attention pooling (global_pool={global_pool!r})")
        if not 1 <= int(num_wide) <= int(depth):
            raise UserError(f"num_wide must be between 1 and depth={depth}, got {num_wide}")
        if int(wide_dim) <= 0:
            raise UserError(f"wide_dim must be a positive width, got {wide_dim}")
        tail = widelast_tail(embed_dim, num_heads, int(wide_dim), int(num_wide), schedule, wide_num_heads)
        super().__init__(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            global_pool=global_pool,
            fc_norm=fc_norm,
            final_norm=final_norm,
            norm_layer=norm_layer,
            block_fn=_WideBlocks(depth, tail),
            weight_init="skip",
            device=device,
            dtype=dtype,
            **kwargs,
        )
        dd = {"device": device, "dtype": dtype}
        self.wide_dim = int(wide_dim)
        self.num_wide = int(num_wide)
        self.schedule = schedule
        self.init = init
        self.tail_widths = [w for w, _ in tail]
        self.wide_num_heads = tail[-1][1]
        self.first_wide = depth - self.num_wide
        norm = get_norm_layer(norm_layer) or LayerNorm
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm
        self.norm = norm(self.wide_dim, **dd) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = norm(self.wide_dim, **dd) if final_norm and use_fc_norm else nn.Identity()
        self.num_features = self.head_hidden_size = self.wide_dim
        self.head = (
            nn.Linear(self.wide_dim, self.num_classes, **dd) if self.num_classes > 0 else nn.Identity()
        )
        for i, w in zip(range(self.first_wide, depth), self.tail_widths, strict=True):
            self.feature_info[i]["num_chs"] = w
        _finish_init(self, weight_init)
        if init == "published" and weight_init != "skip" and self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=CLS_TOKEN_STD)

    def block_widths(self) -> list[int]:
        return [self.embed_dim] * self.first_wide + list(self.tail_widths)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head at ``wide_dim`` (timm's would be built at the backbone width)."""
        if global_pool in ("map", "prr"):
            raise UserError(f"WideLast does not support attention pooling (global_pool={global_pool!r})")
        super().reset_classifier(num_classes, global_pool)
        dd = _device_dtype(self.blocks[-1])
        self.head = nn.Linear(self.head_hidden_size, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def forward_intermediates(
        self, x: torch.Tensor, indices=None, return_prefix_tokens: bool = False, norm: bool = False, **kwargs
    ):
        """timm's ``forward_intermediates``; the final norm (``norm=True``) exists only at ``wide_dim``."""
        if norm and not isinstance(self.norm, nn.Identity):
            take, _ = feature_take_indices(len(self.blocks), indices)
            widths = self.block_widths()
            narrow = [int(i) for i in take if widths[i] != self.wide_dim]
            if narrow:
                fits = [i for i, w in enumerate(widths) if w == self.wide_dim]
                raise UserError(
                    f"norm=True applies the final LayerNorm({self.wide_dim}) and only fits the "
                    f"{self.wide_dim}-wide blocks {fits}; blocks {narrow} are narrower"
                )
        return super().forward_intermediates(
            x, indices, return_prefix_tokens=return_prefix_tokens, norm=norm, **kwargs
        )
