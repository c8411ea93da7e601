"""Token taps: the per-block token features of a timm ViT, as (B, N, C) patch tokens.

Everything that looks inside a model (analysis, feature distillation) goes through here, and
everything here goes through timm's own ``forward_intermediates``: no hooks, no patched
methods, so a tap sees exactly the tensors timm computes and stays differentiable.

What a "layer" is depends on the family:

* ViT / DeiT / Eva and other models with a ``blocks`` sequence: the residual stream after each
  block, before the final norm (``norm=True`` applies the model's final norm instead). The
  prefix tokens (CLS, distillation and register tokens: ``num_prefix_tokens`` of them) are
  dropped, so only the N = H*W patch tokens remain.
* CaiT: the self-attention ``blocks`` only. The class-attention blocks that follow them update
  the class token alone and are not layers here.
* Swin and other staged models with ``layers``: the output of each stage, flattened to
  (B, H*W, C).

Only the blocks up to the deepest requested layer are run (``stop_early``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from vitdistill.errors import UserError, first_line

LayerSpec = None | str | int | Sequence[int]

#: CNN stages analysed by default: the last four, as the published CNN pipeline does (stem dropped)
DEFAULT_STAGES = 4

_FEATURE_NETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MAP_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    cls = type(model).__name__
    return f"{arch} ({cls})" if arch else cls


def _sequence(model: nn.Module, name: str) -> bool:
    seq = getattr(model, name, None)
    return isinstance(seq, nn.Sequential | nn.ModuleList) and len(seq) > 0


def _feature_info(model: nn.Module) -> list[dict]:
    """timm's per-stage description (``num_chs``, ``reduction``, ``module``), as a plain list."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    try:
        return [dict(i) for i in (info.info if hasattr(info, "info") else info)]
    except (TypeError, ValueError):
        return []


def tap_family(model: nn.Module) -> str:
    """How a model is tapped; UserError naming the model and the reason if it cannot be.

    ``blocks``: a transformer with a ``blocks`` sequence behind a patch embedding (ViT, DeiT,
    CaiT, Eva, ...); ``stages``: Swin-style ``layers``; ``maps``: any other model whose
    ``forward_intermediates`` gives its stage (or block) outputs, listed in ``feature_info``
    (CNNs and hybrids: ResNet, ConvNeXt, EfficientNet, LeViT, CoAtNet, FastViT, ...);
    ``features``: a model without ``forward_intermediates`` whose ``feature_info`` timm can
    wrap as a ``features_only`` network.
    """
    has_fi = callable(getattr(model, "forward_intermediates", None))
    staged = 0 < len(_feature_info(model)) < len(getattr(model, "blocks", ()))  # Hiera: blocks in stages
    if (
        has_fi
        and _sequence(model, "blocks")
        and getattr(model, "patch_embed", None) is not None
        and not staged
    ):
        return "blocks"
    if has_fi and _sequence(model, "layers") and getattr(model, "patch_embed", None) is not None:
        return "stages"
    if _feature_info(model):
        return "maps" if has_fi else "features"
    if has_fi and _sequence(model, "blocks"):
        return "blocks"
    if has_fi and _sequence(model, "layers"):
        return "stages"
    if not has_fi:
        raise UserError(
            f"model {_model_name(model)} cannot be tapped: it has neither forward_intermediates() nor "
            "timm's feature_info; taps need a timm model (a transformer, a CNN or a hybrid)"
        )
    raise UserError(
        f"model {_model_name(model)} cannot be tapped: it has no transformer `blocks`, no Swin-style "
        "`layers` and no timm feature_info naming its stages"
    )


def check_tappable(model: nn.Module) -> None:
    """Raise a UserError naming the model and the reason if its tokens cannot be tapped."""
    tap_family(model)


def _map_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """The (N, C) of every intermediate ``forward_intermediates`` gives (or the features_only view),
    from one probe at the model's input size, in eval mode (the mode is restored after), cached.

    timm's ``feature_info`` names the stages but does not always count the intermediates the
    same way (Hiera lists one more), so the count comes from what the model returns."""
    shapes = _MAP_SHAPES.get(model)
    if shapes is None:
        family = tap_family(model)
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                probe = torch.zeros(
                    1, 3, *_default_size(model), device=_device_of(model), dtype=_dtype_of(model)
                )
                if family == "features":
                    outs = _features_net(model)(probe)
                else:
                    outs = model.forward_intermediates(probe, output_fmt="NCHW", intermediates_only=True)
        except (RuntimeError, AssertionError, ValueError) as e:
            raise UserError(
                f"cannot read the stage outputs of {_model_name(model)} at its input size "
                f"{tuple(probe.shape[-2:])} ({first_line(e)}); build it with img_size set"
            ) from None
        finally:
            model.train(was)
        shapes = [tuple(_as_tokens(t, None, 0, model).shape[1:]) for t in outs]
        if not shapes:
            raise UserError(f"model {_model_name(model)} cannot be tapped: it returns no intermediates")
        _MAP_SHAPES[model] = shapes
    return shapes


def _isotropic(model: nn.Module) -> bool:
    """Every tap on one token grid (MLP-Mixer, ConvMixer, ...): its layers are blocks, not stages."""
    return len({n for n, _ in _map_shapes(model)}) == 1


def layer_unit(model: nn.Module) -> str:
    """What one layer of this model is: ``block`` (transformers and other models that keep one
    token grid throughout) or ``stage`` (Swin, CNNs, hybrids: the grid shrinks stage by stage)."""
    family = tap_family(model)
    return "block" if family == "blocks" or (family != "stages" and _isotropic(model)) else "stage"


def num_tap_layers(model: nn.Module) -> int:
    """How many layers can be tapped (blocks; CaiT self-attention blocks; Swin or CNN stages)."""
    family = tap_family(model)
    if family == "blocks":
        return len(model.blocks)
    if family == "stages":
        return len(model.layers)
    return len(_map_shapes(model))


def describe_taps(model: nn.Module, layers: Sequence[int]) -> dict:
    """What the analysed layers are, for the record: the family, the unit and, where timm names
    them, each layer's module and stride (``reduction``)."""
    info = _feature_info(model)
    info = info if len(info) == num_tap_layers(model) else []
    per = []
    for L in layers:
        row: dict = {"layer": int(L)}
        if info:
            row.update(module=info[L].get("module"), reduction=info[L].get("reduction"))
        per.append(row)
    return {"family": tap_family(model), "unit": layer_unit(model), "layers": per}


def default_layers(model: nn.Module) -> list[int]:
    """The layers analysed when none are named: every block of a transformer (or of another model
    that keeps one token grid, as MLP-Mixer) and every Swin stage; the last
    :data:`DEFAULT_STAGES` stages of a CNN or hybrid (the stem and early stages dropped)."""
    n = num_tap_layers(model)
    if tap_family(model) == "stages" or layer_unit(model) == "block":
        return list(range(n))
    return list(range(max(0, n - DEFAULT_STAGES), n))


def resolve_layers(model: nn.Module, spec: LayerSpec = None) -> list[int]:
    """Turn a layer spec into absolute block indices, in the order given, without repeats.

    ``spec`` is ``None`` or ``'auto'`` (:func:`default_layers`), ``'all'`` (every layer),
    ``'last'``, an int, a comma list such as ``'0,5,11'`` or ``'-1'``, or a sequence of ints.
    Negative indices count from the end.
    """
    n = num_tap_layers(model)
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return default_layers(model)
    if isinstance(spec, str) and spec.strip().lower() == "all":
        return list(range(n))
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "last":
            return [n - 1]
        try:
            items = [int(p) for p in text.split(",") if p.strip()]
        except ValueError:
            raise UserError(
                f"layers {spec!r} not understood: use 'auto', 'all', 'last' or comma-separated indices like 0,5,11"
            ) from None
        if not items:
            raise UserError(f"layers {spec!r} names no layer")
    else:
        items = [spec] if isinstance(spec, int | float) else list(spec)
        if not items:
            raise UserError("an empty list of layers names no layer")
        if not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items):
            raise UserError(f"layers must be integer indices; got {spec!r}")
        items = [int(i) for i in items]
    out: list[int] = []
    for i in items:
        if not -n <= i < n:
            raise UserError(
                f"layer {i} is out of range for {_model_name(model)}, which has {n} tappable layers "
                f"(valid: 0..{n - 1}, or -{n}..-1 from the end)"
            )
        a = i % n
        if a not in out:
            out.append(a)
    return out


def _patch_grid(model: nn.Module, height: int, width: int) -> tuple[int, int] | None:
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        return None
    if hasattr(pe, "dynamic_feat_size"):
        return tuple(pe.dynamic_feat_size((height, width)))
    grid = getattr(pe, "grid_size", None)
    return tuple(grid) if grid is not None else None


def _default_size(model: nn.Module) -> tuple[int, int]:
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    size = getattr(getattr(model, "stem", None), "img_size", None) if size is None else size
    if size is None:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    return (size, size) if isinstance(size, int) else tuple(size)


def feature_grid(model: nn.Module, image_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """The (H, W) token grid of the taps for an input of ``image_size`` (default: the model's).

    For staged models (Swin, CNNs, hybrids) this is the grid of the last stage.
    """
    image_size = _default_size(model) if image_size is None else image_size
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    last = [num_tap_layers(model) - 1]
    with torch.no_grad():
        probe = torch.zeros(1, 3, *image_size, device=_device_of(model), dtype=_dtype_of(model))
        family = tap_family(model)
        if family in ("maps", "features"):
            (out,) = _intermediates(model, probe, last, False, family)
            if out.ndim == 4:
                return int(out.shape[2]), int(out.shape[3])
            n = out.shape[1]
        else:
            n = token_features(model, probe, last)[0].shape[1]
    grid = _patch_grid(model, *image_size)
    if grid is not None and grid[0] * grid[1] == n:
        return grid
    side = int(round(n**0.5))
    if side * side != n:
        raise UserError(f"cannot infer a 2-D token grid for {_model_name(model)}: {n} tokens")
    return side, side


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _dtype_of(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def _features_net(model: nn.Module) -> nn.Module:
    """timm's ``features_only`` view of a model that lacks ``forward_intermediates``: the same
    modules (shared, not copied) rearranged to return every stage in ``feature_info``."""
    net = _FEATURE_NETS.get(model)
    if net is None:
        from timm.models._features import FeatureListNet

        n = len(_feature_info(model))
        why = ""
        for flatten in (False, True):  # stage modules named as children, or inside flattened sequences
            try:
                net = FeatureListNet(model, out_indices=tuple(range(n)), flatten_sequential=flatten)
                break
            except (AssertionError, KeyError, AttributeError, TypeError) as e:
                why = first_line(e)
        else:
            raise UserError(
                f"model {_model_name(model)} cannot be tapped: it has no forward_intermediates() and timm "
                f"cannot rearrange it into a features_only network ({why})"
            )
        _FEATURE_NETS[model] = net
    return net


def _intermediates(model: nn.Module, x: torch.Tensor, take: list[int], norm: bool, family: str):
    """The raw outputs of the layers ``take`` (ascending), as timm returns them."""
    if family == "features":
        if norm:
            raise UserError(f"the final norm cannot be applied to the stages of {_model_name(model)}")
        net = _features_net(model)
        net.train(model.training)
        outs = net(x)
        return [outs[i] for i in take]
    kwargs = dict(indices=take, norm=norm, stop_early=True, intermediates_only=True)
    if family == "blocks":
        try:
            return model.forward_intermediates(x, output_fmt="NLC", **kwargs)
        except AssertionError:  # a model that only speaks NCHW
            pass
    return model.forward_intermediates(x, output_fmt="NCHW", **kwargs)


def token_features(
    model: nn.Module, x: torch.Tensor, layers: LayerSpec = None, norm: bool = False
) -> list[torch.Tensor]:
    """Patch-token features (B, N, C) of the requested layers, in the order requested.

    Runs ``model.forward_intermediates`` up to the deepest requested layer and keeps gradients,
    so the same call serves analysis (under ``torch.inference_mode``) and distillation losses.
    A feature map (B, C, H, W) becomes N = H*W tokens of C channels (row-major over the grid).
    """
    family = tap_family(model)
    idx = resolve_layers(model, layers)
    take = sorted(idx)
    B, _, height, width = x.shape
    outs = _intermediates(model, x, take, norm, family)
    if len(outs) != len(take):
        raise RuntimeError(
            f"{_model_name(model)}.forward_intermediates returned {len(outs)} tensors for {len(take)} layers"
        )
    grid = _patch_grid(model, height, width) if family == "blocks" else None
    n_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0) if family == "blocks" else 0
    tokens = [_as_tokens(t, grid, n_prefix, model) for t in outs]
    by_layer = dict(zip(take, tokens, strict=True))
    return [by_layer[i] for i in idx]


def _as_tokens(t: torch.Tensor, grid, n_prefix: int, model: nn.Module) -> torch.Tensor:
    if t.ndim == 4:  # (B, C, H, W) -> (B, H*W, C)
        return t.flatten(2).transpose(1, 2)
    if t.ndim != 3:
        raise RuntimeError(f"unexpected intermediate of shape {tuple(t.shape)} from {_model_name(model)}")
    if grid is not None:
        n_patch = grid[0] * grid[1]
        if t.shape[1] == n_patch + n_prefix and n_prefix:
            return t[:, n_prefix:]
        if t.shape[1] != n_patch:
            raise RuntimeError(
                f"{_model_name(model)} returned {t.shape[1]} tokens, expected {n_patch} patch tokens"
            )
    return t


class TokenTaps:
    """A model plus a fixed choice of layers: ``TokenTaps(model, 'last')(images)``."""

    def __init__(self, model: nn.Module, layers: LayerSpec = "all", norm: bool = False):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.norm = norm

    @property
    def num_prefix_tokens(self) -> int:
        return int(getattr(self.model, "num_prefix_tokens", 0) or 0)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return token_features(self.model, x, self.layers, norm=self.norm)

    def named(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return dict(zip(self.layers, self(x), strict=True))
