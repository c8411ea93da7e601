"""Training and validation sets that never share an image.

Validation data comes from, in order: an explicit validation source, a seeded held-out fraction of
the training images, or the training source's own validation split (a ``val/`` subfolder, a
``validation`` split, a synthetic set's ``val`` split). A folder or list without one is refused
rather than validated on its own training images, and so is any pair that shares an image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vitdistill.data.datasets import build_dataset
from vitdistill.data.images import pil_to_tensor
from vitdistill.data.subset import subset_positions
from vitdistill.errors import UserError

WAYS_OUT = "set data.val to a validation source, or hold out a fraction of the training images with data.val_fraction (e.g. 0.1)"


def _keep_image(img):
    """The base set's transform while a :class:`Part` reads it: images stay PIL for the part's own."""
    return img


class Part(Dataset):
    """Some positions of a data set, as a data set with its own transform (items as the base's)."""

    def __init__(self, base, positions, info: dict[str, Any]):
        base.transform = _keep_image
        self.base, self.positions = base, [int(p) for p in positions]
        self.transform = None
        self.classes = list(getattr(base, "classes", []))
        self._info = info

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def sample_ids(self) -> list[str]:
        ids = self.base.sample_ids
        return [ids[p] for p in self.positions]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        img, label, _ = self.base[self.positions[index]]
        if img is not None:
            img = self.transform(img) if self.transform is not None else pil_to_tensor(img)
        return img, label, index

    def describe(self) -> dict[str, Any]:
        ids = "\n".join(self.sample_ids).encode()
        return {**self._info, "num_images": len(self), "fingerprint": hashlib.sha256(ids).hexdigest()[:16]}


def hold_out(base, fraction: float, seed: int, caps: tuple) -> tuple[Part, Part]:
    """(training part, validation part): a seeded ``fraction`` of ``base`` held out for validation."""
    n = len(base)
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise UserError(
            f"data.val_fraction={fraction} of {n} images leaves no training or no validation image"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = []
    for role, chosen, cap in (("train", order[n_val:], caps[0]), ("val", order[:n_val], caps[1])):
        chosen = np.sort(chosen)
        chosen = chosen[subset_positions(len(chosen), cap)]
        source = base.describe()
        info = {
            "kind": "held_out",
            "role": role,
            "val_fraction": fraction,
            "seed": seed,
            "of": source["spec"],
        }
        info["of_source"] = {k: source.get(k) for k in ("kind", "spec", "name", "split", "folder")}
        parts.append(Part(base, chosen, {**info, "of_num_images": n, "max_images": cap}))
    return parts[0], parts[1]


def train_val_sets(d: dict, seed: int) -> tuple:
    """The training and validation sets of the ``data`` config section (transforms not yet set)."""
    fraction, strict = d.get("val_fraction"), d["strict"]
    caps = (d["max_train_images"], d["max_val_images"])
    if fraction is not None:
        if not 0 < fraction < 1:
            raise UserError(f"data.val_fraction must be in (0, 1) (got {fraction})")
        if d["val"]:
            raise UserError("set data.val or data.val_fraction, not both")
        base = build_dataset(d["train"], "train", transform=None, strict=strict)
        if getattr(base, "streaming", False):
            raise UserError(f"{d['train']} is streamed, so no fraction can be held out: set data.val")
        return hold_out(base, fraction, seed, caps)  # one base set, each part with its own transform
    train_ds = build_dataset(d["train"], "train", transform=None, strict=strict, max_images=caps[0])
    if d["val"]:
        val_ds = build_dataset(d["val"], "val", transform=None, strict=strict, max_images=caps[1])
    else:
        val_ds = _own_val_split(d["train"], strict, caps[1])
    _check_disjoint(train_ds, val_ds)
    return train_ds, val_ds


def _own_val_split(spec: str, strict: bool, cap):
    """The training source's validation split; refused when it has none (it would be the training set)."""
    try:
        val_ds = build_dataset(spec, "val", transform=None, strict=strict, max_images=cap)
    except UserError as e:
        raise UserError(f"{spec} has no validation split ({e}): {WAYS_OUT}") from None
    if not getattr(val_ds, "streaming", False) and val_ds.describe().get("split") is None:
        raise UserError(
            f"{spec} has no validation split (no val/ subfolder), so validating on it would score "
            f"the training images: {WAYS_OUT}"
        )
    return val_ds


def _file_keys(ids: list[str], follow_files: bool) -> dict[str, str]:
    """Per-image id -> where the image really is: image files under their folder's real path (one
    ``realpath`` per folder, not per image), and with ``follow_files`` each linked file followed to
    its target. Ids that are not files on disk (synthetic, Hugging Face rows) stay as they are."""
    real_dirs: dict[str, str] = {}
    keys = {}
    for i in ids:
        parent, name = os.path.split(i)
        if parent not in real_dirs:
            real_dirs[parent] = os.path.realpath(parent) if parent and os.path.isdir(parent) else ""
        if not real_dirs[parent]:
            keys[i] = i
        elif follow_files and os.path.islink(i):
            keys[i] = os.path.realpath(i)
        else:
            keys[i] = os.path.join(real_dirs[parent], name)
    return keys


def _check_disjoint(train_ds, val_ds) -> None:
    """Refuse a validation set that shares images with the training set: by per-image id, with
    links resolved (a ``val/`` that links to training folders or files shares their images).
    Only the validation images are checked for being links themselves: there are few of them."""
    if getattr(train_ds, "streaming", False) or getattr(val_ds, "streaming", False):
        return
    train_keys = set(_file_keys(train_ds.sample_ids, follow_files=False).values())
    shared = {i for i, k in _file_keys(val_ds.sample_ids, follow_files=True).items() if k in train_keys}
    if shared:
        example = min(shared)
        raise UserError(
            f"the validation data shares {len(shared)} image(s) with the training data (e.g. {example}): {WAYS_OUT}"
        )


def source_key(rec: dict | None) -> tuple | None:
    """What identifies the images a data set record describes (a held-out part: its base set)."""
    if not isinstance(rec, dict):
        return None
    if rec.get("kind") == "held_out":
        return source_key(rec.get("of_source"))
    kind, spec = rec.get("kind"), rec.get("spec")
    if kind == "folder" and rec.get("folder"):
        return ("folder", str(Path(rec["folder"]).resolve()))
    if kind == "list" and spec:
        return ("list", str(Path(spec).resolve()))
    if kind in ("hfds", "hfids"):
        return ("hf", rec.get("name") or spec, rec.get("split"))
    if kind in ("synthetic", "wds"):
        return (kind, spec, rec.get("split"))
    return None


def same_source(trained_on: dict | None, data: dict | None) -> bool:
    """Whether ``data`` reads the images of the training-data record ``trained_on``."""
    key = source_key(trained_on)
    return key is not None and key == source_key(data)
