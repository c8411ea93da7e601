"""Loss terms of distillation, each a plain function of tensors (arXiv 2511.15572, distillation losses).

Kept free of models and config so each can be checked against a hand computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """CE with label smoothing; ``target`` is class indices or (after mixup) soft targets.

    Soft targets already carry the smoothing (timm's Mixup folds it in), so it is not applied twice;
    they go through timm's ``SoftTargetCrossEntropy``, the loss timm's own training script pairs with Mixup.
    """
    logits = logits.float()
    if target.ndim == logits.ndim:
        from timm.loss import SoftTargetCrossEntropy

        return SoftTargetCrossEntropy()(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def soft_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, averaged over the batch ("batchmean")."""
    T = float(temperature)
    log_s = F.log_softmax(student_logits.float() / T, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (T * T)


def hard_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the student against the teacher's argmax (DeiT's hard distillation)."""
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1))


def normalize_tokens(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``layernorm``: per-token LayerNorm over channels without affine parameters; ``none``: as is."""
    if mode == "none":
        return x
    if mode == "layernorm":
        return F.layer_norm(x.float(), (x.shape[-1],))
    raise ValueError(f"unknown feature normalisation {mode!r}")


def feature_mse(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every token and channel."""
    return F.mse_loss(student_tokens.float(), teacher_tokens.float())


def token_spectrum(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> 2-D real FFT over the (H, W) token grid per channel, real & imag stacked.

    Returns (B, C, H, W//2+1, 2) with ``norm='ortho'`` so the transform preserves energy.
    """
    B, N, C = tokens.shape
    H, W = grid
    if H * W != N:
        raise ValueError(f"{N} tokens do not form a {H}x{W} grid")
    x = tokens.float().transpose(1, 2).reshape(B, C, H, W)
    f = torch.fft.rfft2(x, norm="ortho")
    return torch.stack((f.real, f.imag), dim=-1)


def spectral_loss(
    student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """MSE between the token-grid spectra of student and teacher (the "spectral" feature loss)."""
    return F.mse_loss(token_spectrum(student_tokens, grid), token_spectrum(teacher_tokens, grid))


def grid_of(num_tokens: int) -> tuple[int, int]:
    """A square grid for ``num_tokens`` (the trainer passes the model's real grid when it knows it)."""
    side = int(round(num_tokens**0.5))
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens are not a square grid")
    return side, side


def pool_channels(tokens: torch.Tensor, channels: int) -> torch.Tensor:
    """Shrink the last axis of ``tokens`` from C_t to ``channels`` by adaptive average pooling.

    Output channel ``i`` is the mean of input channels ``floor(i * C_t / channels)`` up to (not
    including) ``ceil((i + 1) * C_t / channels)``: the bins of adaptive average pooling, so for an
    integer ratio (384 -> 192) channel ``c`` is the mean of channels ``2c`` and ``2c + 1``, and for a
    non-integer ratio (384 -> 219) neighbouring bins share a boundary channel. This is how the
    paper's baseline fits a wide teacher's tokens to a narrow student without a learned projector.
    ``channels == C_t`` returns ``tokens`` unchanged; ``channels > C_t`` is a ValueError (pooling
    cannot widen). The result is computed in ``tokens``' dtype with gradients flowing through.
    """
    c_t = tokens.shape[-1]
    channels = int(channels)
    if channels < 1 or channels > c_t:
        raise ValueError(
            f"cannot pool {c_t} channels to {channels}: pooling only narrows (1 <= channels <= {c_t})"
        )
    if channels == c_t:
        return tokens
    lead = tokens.shape[:-1]
    flat = tokens.reshape(-1, 1, c_t)
    return F.adaptive_avg_pool1d(flat, channels).reshape(*lead, channels)
