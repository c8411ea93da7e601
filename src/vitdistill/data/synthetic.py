"""Built-in, procedurally generated classification sets: ``synthetic:NAME[?key=value&...]``.

Images are drawn on the fly from ``(seed, split, index)`` with numpy, so the same spec gives the
same pixels on every machine and nothing is downloaded or stored.

``synthetic:shapes`` (the demo's set). Each image holds two *key* shapes, drawn from ``types``
shape kinds (square, disk, ring, diamond, plus, triangle, frame, bar), one above the other at
random positions. The class is the ordered pair (kind of the upper shape, kind of the lower
shape), so with ``types=5`` there are 5 * 4 = 20 classes and, e.g., "disk above ring" and "ring
above disk" are different classes. Recognising a class therefore needs both shapes *and* their
vertical relation: patches must exchange information across the image. Nuisances: random size,
slight rotation, saturation and brightness, fill textures, a textured background with a colour
gradient, contrast jitter, pixel noise and distractors (line segments and specks, which never
count towards the class). By default each kind keeps its own hue band (``kind_colors=1``), which
makes the kinds learnable within a CPU budget; ``kind_colors=0`` makes colour uninformative.
Left-right mirroring keeps the class (the relation is vertical), so horizontal-flip augmentation
is safe; vertical flips are not.

Options: ``n`` (train images, default 6000), ``n_val`` (val/test images, default n // 6, at
least 1), ``size`` (pixels, default 32), ``types`` (2..8, default 5), ``distractors`` (maximum
per image, default 2), ``noise`` (pixel noise std in [0, 1] units, default 0.05), ``textures``
(0: solid fills, 1: + stripes, 2: + checkerboards; default 1), ``rotation`` (maximum, radians,
default 0.2), ``shape_size`` (size multiplier, 0.5..1.5), ``kind_colors`` (0/1, default 1),
``seed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from vitdistill.data.images import pil_to_tensor
from vitdistill.data.subset import subset_positions
from vitdistill.errors import UserError, closest_names

GENERATOR_VERSION = 1
SHAPE_KINDS = ("square", "disk", "ring", "diamond", "plus", "triangle", "frame", "bar")
_SPLIT_CODE = {"train": 0, "val": 1, "validation": 1, "test": 2}
_SHARED: dict[tuple, tuple[dict, dict]] = {}
_SHARED_MAX = 6


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape of half-size ``r`` in its own (rotated) coordinates (u right, v down)."""
    au, av = np.abs(u), np.abs(v)
    if kind == "square":
        return (au <= r * 0.85) & (av <= r * 0.85)
    if kind == "disk":
        return u * u + v * v <= r * r
    if kind == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.5 * r) ** 2)
    if kind == "diamond":
        return au + av <= r
    if kind == "plus":
        w = 0.34 * r
        return ((au <= w) & (av <= r)) | ((av <= w) & (au <= r))
    if kind == "triangle":  # apex up
        return (v <= r * 0.8) & (v >= -r) & (au <= (v + r) * 0.55)
    if kind == "frame":
        m = r * 0.85
        return (au <= m) & (av <= m) & ((au >= 0.5 * m) | (av >= 0.5 * m))
    if kind == "bar":  # horizontal bar
        return (au <= r) & (av <= 0.3 * r)
    raise ValueError(kind)


class ShapesDataset(Dataset):
    """``synthetic:shapes``: class = (upper shape kind, lower shape kind); see module docstring."""

    name = "shapes"
    defaults: dict[str, Any] = {
        "n": 6000,
        "n_val": None,
        "size": 32,
        "types": 5,
        "distractors": 2,
        "noise": 0.05,
        "textures": 1,
        "rotation": 0.2,
        "shape_size": 1.0,
        "kind_colors": 1,
        "seed": 0,
    }

    def __init__(
        self,
        split: str = "train",
        transform: Callable | None = None,
        max_images: int | None = None,
        **options,
    ):
        opts = dict(self.defaults)
        opts.update(options)
        if opts["n_val"] is None:
            opts["n_val"] = max(1, int(opts["n"]) // 6)
        self.options = opts
        if split not in _SPLIT_CODE:
            raise UserError(f"synthetic:{self.name} has splits train, val and test (got {split!r})")
        self.split = split
        self.size = int(opts["size"])
        self.types = int(opts["types"])
        if not 2 <= self.types <= len(SHAPE_KINDS):
            raise UserError(f"synthetic:{self.name}: types must be 2..{len(SHAPE_KINDS)} (got {self.types})")
        if self.size < 16:
            raise UserError(f"synthetic:{self.name}: size must be at least 16 pixels (got {self.size})")
        if float(opts["noise"]) < 0 or int(opts["distractors"]) < 0 or float(opts["rotation"]) < 0:
            raise UserError(f"synthetic:{self.name}: noise, distractors and rotation must be >= 0")
        if not 0.5 <= float(opts["shape_size"]) <= 1.5:
            raise UserError(f"synthetic:{self.name}: shape_size must be in [0.5, 1.5]")
        if int(opts["textures"]) not in (0, 1, 2) or int(opts["kind_colors"]) not in (0, 1):
            raise UserError(f"synthetic:{self.name}: textures must be 0, 1 or 2 and kind_colors 0 or 1")
        self.kinds = SHAPE_KINDS[: self.types]
        self.pairs = [(a, b) for a in range(self.types) for b in range(self.types) if a != b]
        self.classes = [f"{self.kinds[a]}-above-{self.kinds[b]}" for a, b in self.pairs]
        total = int(opts["n"]) if split == "train" else int(opts["n_val"])
        if total <= 0:
            raise UserError(f"synthetic:{self.name}: n and n_val must be positive")
        self._positions = subset_positions(total, max_images)
        self.max_images = max_images
        self.transform = transform
        self._seed = int(opts["seed"])
        # Rendered images are shared by every data set object with the same options and split, so
        # the demo's many training runs in one process draw each image only once.
        key = (self.name, json.dumps(opts, sort_keys=True), split, GENERATOR_VERSION)
        if key not in _SHARED:
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = ({}, {})
        self._cache, self._layouts = _SHARED[key]
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float32)
        self._yy, self._xx = yy + 0.5, xx + 0.5

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_ids(self) -> list[str]:
        return [f"synthetic:{self.name}/{self.split}/seed{self._seed}/{int(i)}" for i in self._positions]

    def __len__(self) -> int:
        return len(self._positions)

    def render(self, index: int) -> tuple[np.ndarray, int]:
        """Image ``index`` of this split as uint8 (H, W, 3) and its label (cached in memory)."""
        gen_index = int(self._positions[index])
        hit = self._cache.get(gen_index)
        if hit is None:
            hit = self._draw(gen_index)
            self._cache[gen_index] = hit
        return hit

    def _draw(self, gen_index: int) -> tuple[np.ndarray, int]:
        S = self.size
        rng = np.random.default_rng([self._seed, _SPLIT_CODE[self.split], gen_index, GENERATOR_VERSION])
        label = int(rng.integers(len(self.pairs)))
        top, bottom = self.pairs[label]
        yy, xx = self._yy, self._xx

        # Background: dark random colour, a linear gradient towards a second colour, fine texture.
        c0 = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.35))
        c1 = _hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.35))
        ang = rng.uniform(0, 2 * np.pi)
        g = ((xx - S / 2) * np.cos(ang) + (yy - S / 2) * np.sin(ang)) / S + 0.5
        img = c0 * (1 - g[..., None]) + c1 * g[..., None]
        freq = rng.uniform(0.3, 1.2)
        tex = np.sin(xx * freq + rng.uniform(0, 6.3)) * np.sin(
            yy * rng.uniform(0.3, 1.2) + rng.uniform(0, 6.3)
        )
        img = img + (0.04 * tex)[..., None]

        # Distractors (drawn first, so key shapes stay whole): thin segments and small specks.
        for _ in range(int(rng.integers(0, int(self.options["distractors"]) + 1))):
            col = _hsv_to_rgb(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.45, 1.0))
            if rng.random() < 0.5:
                x0, y0 = rng.uniform(0, S, size=2)
                a = rng.uniform(0, np.pi)
                length = rng.uniform(0.25, 0.6) * S
                t = (xx - x0) * np.cos(a) + (yy - y0) * np.sin(a)
                dist = np.abs(-(xx - x0) * np.sin(a) + (yy - y0) * np.cos(a))
                m = (dist <= 0.6) & (t >= 0) & (t <= length)
            else:
                x0, y0 = rng.uniform(1, S - 1, size=2)
                m = (np.abs(xx - x0) <= 1.0) & (np.abs(yy - y0) <= 1.0)
            img[m] = col

        # Two key shapes: `top` strictly above `bottom` (centres apart by at least their radii).
        r_top, r_bot = rng.uniform(0.13, 0.2, size=2) * S * float(self.options["shape_size"])
        for _ in range(100):
            y_top = rng.uniform(r_top, S - r_top)
            y_bot = rng.uniform(r_bot, S - r_bot)
            if y_bot - y_top >= 0.9 * (r_top + r_bot) + 1:
                break
        else:  # very large shapes on a small canvas: place them as far apart as possible
            y_top, y_bot = r_top, S - r_bot
        layout = []
        for kind_i, r, cy in ((top, r_top, y_top), (bottom, r_bot, y_bot)):
            cx = rng.uniform(r, S - r)
            layout.append({"kind": self.kinds[kind_i], "cx": float(cx), "cy": float(cy), "r": float(r)})
            rot = rng.uniform(-1.0, 1.0) * float(self.options["rotation"])
            du, dv = xx - cx, yy - cy
            u = du * np.cos(rot) + dv * np.sin(rot)
            v = -du * np.sin(rot) + dv * np.cos(rot)
            m = _shape_mask(self.kinds[kind_i], u, v, r)
            hue = rng.random()
            if int(self.options["kind_colors"]):
                # Each kind keeps its own hue band: colour becomes a (partial) cue for the kind.
                hue = (kind_i / self.types + 0.08 * (hue - 0.5)) % 1.0
            fg = _hsv_to_rgb(hue, rng.uniform(0.3, 1.0), rng.uniform(0.6, 1.0))
            style = rng.integers(int(self.options["textures"]) + 1)
            if style == 0:
                fill = np.broadcast_to(fg, img.shape)
            else:
                alt = fg * rng.uniform(0.35, 0.7)
                period = rng.uniform(2.5, 4.5)
                if style == 1:
                    a = rng.uniform(0, np.pi)
                    phase = (xx * np.cos(a) + yy * np.sin(a)) / period
                    on = (np.floor(phase) % 2) == 0
                else:
                    on = ((np.floor(xx / period) + np.floor(yy / period)) % 2) == 0
                fill = np.where(on[..., None], fg, alt)
            img[m] = fill[m]

        # Global contrast/brightness jitter and pixel noise.
        img = (img - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.08, 0.08)
        img = img + rng.normal(0.0, float(self.options["noise"]), size=img.shape)
        self._layouts[gen_index] = layout
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), label

    def layout(self, index: int) -> list[dict[str, Any]]:
        """Kind, centre and half-size of image ``index``'s key shapes, upper one first."""
        self.render(index)
        return self._layouts[int(self._positions[index])]

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        arr, label = self.render(index)
        img = Image.fromarray(arr, mode="RGB")
        return (self.transform(img) if self.transform is not None else pil_to_tensor(img)), label, index

    def describe(self) -> dict[str, Any]:
        key = json.dumps({"name": self.name, "options": self.options, "v": GENERATOR_VERSION}, sort_keys=True)
        return {
            "kind": "synthetic",
            "spec": spec_string(self.name, self.options),
            "name": self.name,
            "split": self.split,
            "options": dict(self.options),
            "generator_version": GENERATOR_VERSION,
            "num_images": len(self),
            "num_classes": self.num_classes,
            "classes": self.classes,
            "image_size": self.size,
            "max_images": self.max_images,
            "fingerprint": hashlib.sha256(f"{key}|{self.split}|{self.max_images}".encode()).hexdigest()[:16],
        }


SYNTHETIC: dict[str, type[ShapesDataset]] = {"shapes": ShapesDataset}


def spec_string(name: str, options: dict[str, Any]) -> str:
    """The canonical ``synthetic:NAME?k=v`` spec (non-default options only)."""
    defaults = dict(SYNTHETIC[name].defaults)
    if "n_val" in defaults and defaults["n_val"] is None:
        defaults["n_val"] = max(1, int(options.get("n", defaults["n"])) // 6)  # derived default
    extra = [f"{k}={v}" for k, v in options.items() if k in defaults and v != defaults[k]]
    return f"synthetic:{name}" + (("?" + "&".join(extra)) if extra else "")


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``synthetic:shapes?n=200&size=48`` -> ``("shapes", {"n": 200, "size": 48})`` (values typed by the defaults)."""
    body = spec[len("synthetic:") :]
    name, _, query = body.partition("?")
    name = name.strip()
    if name not in SYNTHETIC:
        hint = closest_names(name, SYNTHETIC)
        raise UserError(
            f"unknown synthetic data set {name!r}; available: {', '.join(sorted(SYNTHETIC))}"
            + (f" (did you mean {hint[0]}?)" if hint else "")
        )
    defaults = SYNTHETIC[name].defaults
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in defaults:
            hint = closest_names(key, defaults)
            raise UserError(
                f"synthetic:{name} has no option {key!r}; options: {', '.join(defaults)}"
                + (f" (did you mean {hint[0]}?)" if hint else "")
            )
        kind = float if isinstance(defaults[key], float) else int
        try:
            options[key] = kind(value)
        except ValueError:
            raise UserError(
                f"synthetic:{name}: option {key} needs a {kind.__name__}, got {value!r}"
            ) from None
    return name, options


def build_synthetic(
    spec: str, split: str = "train", transform: Callable | None = None, max_images: int | None = None
):
    name, options = parse_spec(spec)
    return SYNTHETIC[name](split=split, transform=transform, max_images=max_images, **options)
