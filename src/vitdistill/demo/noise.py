"""Where the spread of a paired contrast comes from: evaluation or training.

A run's validation top-1 is measured on a finite set of images, so even a fixed pair of trained
models gives a contrast that would move on another validation set of the same size: that is
**evaluation noise**. For one seed it is the variance over images of the per-image contrast
(``sum(coef * correct[arm][i])``) divided by the number of images, which keeps the pairing
(arms that fail on the same images cancel). The rest of the seed-to-seed variance of the
contrast is **training noise**: how the runs themselves differ from seed to seed.

    var(per-seed contrast) = evaluation variance (mean over seeds) + training variance

Every run records which validation images its scored model got right (``val_correct``, packed
bits), so the split is computed from the runs' own files.
"""

from __future__ import annotations

import base64
import math

import numpy as np


def pack(correct) -> str:
    """A boolean vector (numpy or torch) as base64 text of its packed bits."""
    bits = np.asarray(correct, dtype=bool)
    return base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    """The first ``n`` booleans of :func:`pack`'s text."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    bits = np.unpackbits(raw)[:n].astype(bool)
    if bits.shape[0] != n:
        raise ValueError(f"packed vector holds {bits.shape[0]} values, expected {n}")
    return bits


def evaluation_variance(coefs: dict[str, int], correct: dict[str, np.ndarray]) -> float:
    """One seed's evaluation variance of a contrast, in squared top-1 points."""
    per_image = sum(c * correct[a].astype(np.float64) for a, c in coefs.items())
    n = per_image.shape[0]
    if n < 2:
        return float("nan")
    return float(per_image.var(ddof=1) / n * 1e4)


def split(coefs: dict[str, int], seeds: list[int], correct: dict[str, dict[int, np.ndarray]], sd) -> dict:
    """``{"sd", "eval_sd", "train_sd", "eval_share"}`` of one contrast (points; share of variance).

    ``sd`` is the seed-to-seed standard deviation of the per-seed contrast. Training variance is
    what remains after the evaluation variance, floored at 0 (with few seeds the estimate of the
    total can fall below the evaluation part by chance).
    """
    ev = [evaluation_variance(coefs, {a: correct[a][s] for a in coefs}) for s in seeds]
    eval_var = sum(ev) / len(ev)
    if math.isnan(eval_var):  # a single validation image: no variance over images
        return {"sd": sd, "eval_sd": None, "train_sd": None, "eval_share": None}
    if sd is None:
        return {"sd": None, "eval_sd": math.sqrt(eval_var), "train_sd": None, "eval_share": None}
    total = sd * sd
    return {
        "sd": sd,
        "eval_sd": math.sqrt(eval_var),
        "train_sd": math.sqrt(max(0.0, total - eval_var)),
        "eval_share": min(1.0, eval_var / total) if total > 0 else None,
    }


def splits(cs: dict[str, dict], coefs: dict[str, dict[str, int]], correct: dict) -> dict[str, dict]:
    """The split of every contrast whose runs all recorded their correct images."""
    out = {}
    for name, c in cs.items():
        arms = coefs[name]
        if all(a in correct and all(s in correct[a] for s in c["seeds"]) for a in arms):
            out[name] = split(arms, c["seeds"], correct, c["sd"])
    return out
