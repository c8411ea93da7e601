"""Helpers shared by the training tests (imported as ``from _helpers import ...``)."""

from __future__ import annotations

DATA = "synthetic:shapes?n=48&n_val=16&size=16&types=3"  # 6 classes
TINY_KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)  # DeiT-Tiny's layout, small


def train_cfg(model: str, /, **over) -> dict:
    """A one-epoch CPU training config for ``model`` (at :data:`TINY_KW`) on :data:`DATA`; ``over``
    sets dotted keys (``**{"loss.alpha": 0.5}``) or whole sections (``model={...}``)."""
    cfg = {
        "model": {"name": model, "kwargs": dict(TINY_KW)},
        "data": {"train": DATA, "batch_size": 16},
        "epochs": 1,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "optim": {"lr": 1e-3},
        "sched": {"warmup_epochs": 1},
        "log": {"interval": 1, "progress": False},
    }
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = value
    return cfg
