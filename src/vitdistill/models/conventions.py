"""Initialisation conventions of the Lift / WideLast students: ``published`` or ``timm``.

The paper's published training code built its students in two ways that differ from timm's
``VisionTransformer`` in small details:

* Lift: the lifting projector's LayerNorm has PyTorch's default eps (1e-5, timm's ViT uses 1e-6),
  and the projector Linear and the new head keep PyTorch's default Linear initialisation
  (kaiming-uniform weights, uniform non-zero bias) instead of timm's trunc-normal 0.02 / zero bias.
* WideLast: ``cls_token`` is drawn from a trunc-normal with std 0.02 (timm: normal, std 1e-6).

Everything else is timm's initialisation in both codes (the published code built its backbones
with timm). ``init="published"`` gives the published details, ``init="timm"`` timm's. The
registered paper students default to ``published``; the builders (a remedy on any base) to
``timm``. The value is a keyword of the student classes, the registered models and the builders,
and a model spec records it in its ``kwargs`` when it is ``published``: a spec without it (every
spec saved before the choice existed) is built with timm's conventions, as it was then.
"""

from __future__ import annotations

from collections.abc import Mapping

from vitdistill.errors import UserError

__all__ = [
    "INITS",
    "PUBLISHED_DEFAULT",
    "check_init",
    "published_decays_embeddings",
    "resolve_init",
    "saved_init",
]

INITS = ("published", "timm")

# Registered students whose default is the published code's initialisation (the uniform-width
# control is a plain timm ViT, built by timm in the published code too: both conventions agree).
PUBLISHED_DEFAULT = (
    "deit_tiny_lift_patch16_224",
    "deit_tiny_widelast_patch16_224",
    "deit_tiny_widelast_fixed_step_patch16_224",
    "deit_tiny_widelast_heads_linear_patch16_224",
    "deit_tiny_widelast_fixed_linear_patch16_224",
)

LIFT_NORM_EPS = 1e-5  # the published projector's nn.LayerNorm(out_dim)
CLS_TOKEN_STD = 0.02  # the published WideLast's trunc-normal cls_token


def check_init(init) -> str:
    if init not in INITS:
        raise UserError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    return init


def _has_choice(name: str, remedy: str) -> bool:
    """Whether the two conventions build different models (Lift / WideLast students)."""
    return remedy in ("lift", "widelast") or name.split(".")[0] in PUBLISHED_DEFAULT


def resolve_init(name: str, remedy: str, init: str, kwargs: Mapping) -> dict:
    """The spec kwargs of a new description: ``init`` (auto, published or timm) resolved and
    recorded when it is ``published`` on a Lift / WideLast student.

    ``auto`` is the model's own convention: published for the registered paper students, timm for
    a remedy on any base (or what ``kwargs['init']`` already says).
    """
    kwargs = dict(kwargs)
    given = kwargs.pop("init", None)
    if init == "auto":
        default = "published" if name.split(".")[0] in PUBLISHED_DEFAULT else "timm"
        init = check_init(given) if given is not None else default
    elif given is not None and check_init(given) != check_init(init):
        raise UserError(f"model.init={init} and model.kwargs.init={given} disagree; set only one")
    if check_init(init) == "published" and _has_choice(name, remedy):
        kwargs["init"] = "published"
    return kwargs


def saved_init(name: str, remedy: str, kwargs: Mapping) -> dict:
    """The build kwargs of a recorded spec: without ``init`` it was built with timm's conventions
    (the registered students now default to ``published``, so that is said explicitly)."""
    kwargs = dict(kwargs)
    if remedy == "none" and name.split(".")[0] in PUBLISHED_DEFAULT:
        kwargs.setdefault("init", "timm")
    return kwargs


WRAPPED_CONTROL = "deit_tiny_uniform219_patch16_224"


def published_decays_embeddings(model) -> bool:
    """Whether the published code weight-decayed this student's ``pos_embed`` / ``cls_token``.

    Its optimizer factory exempted what the model's ``no_weight_decay()`` lists. timm's own models
    (DeiT-Tiny, DeiT with a distillation token) have it; the published Lift, WideLast and
    width-219 students were wrappers that did not forward it, so their embeddings were decayed.
    """
    from vitdistill.models.lift import LiftVisionTransformer
    from vitdistill.models.widelast import WideLastVisionTransformer

    if isinstance(model, LiftVisionTransformer | WideLastVisionTransformer):
        return True
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or "").split(".")[0] == WRAPPED_CONTROL
