"""Reading image files into 8-bit RGB, whatever their mode.

``PIL.Image.convert("RGB")`` is wrong for two common cases: 16-bit greyscale PNGs (values up to
65535 are clipped at 255, so most pixels turn white) and images with transparency (the alpha
channel is dropped, so fully transparent pixels show whatever colour they happen to store,
often black). Both are handled here: 16-bit data is rescaled to 8 bits and transparency is
composited over a white background.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageFile

#: Colour that transparent pixels are composited over.
BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB (see module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            # Float images are taken to be in [0, 1] when they fit there, else min-max scaled.
            arr = arr.astype(np.float64)
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            if lo < 0.0 or hi > 1.0:
                arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
            arr8 = np.clip(np.rint(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
        else:
            # 16-bit (and 32-bit "I", which PNG decoders use for 16-bit data): full scale 65535.
            arr = arr.astype(np.int64)
            arr8 = np.clip((arr * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "L" and "transparency" in img.info:
        return to_rgb(img.convert("LA"))
    return img.convert("RGB")


#: Images with more pixels than this are not decoded (a "decompression bomb": a small file that
#: expands to gigabytes); they are skipped and counted like unreadable files. The setting is the
#: environment variable ``VITDISTILL_MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_PIXELS_ENV = "VITDISTILL_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit in force: ``VITDISTILL_MAX_IMAGE_PIXELS`` if set, else :data:`MAX_IMAGE_PIXELS`."""
    from vitdistill.errors import UserError

    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(float(raw))
    except (ValueError, OverflowError):
        limit = 0
    if limit < 1:
        raise UserError(f"{MAX_IMAGE_PIXELS_ENV} must be a positive number of pixels (got {raw!r})")
    return limit


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open, fully decode and convert an image file; raises ``OSError``/``ValueError`` if unreadable.

    Decoding is forced here (``load()``) so that truncated files fail now, inside the data set's
    error handling, rather than later inside a transform. An image over the pixel limit
    (:func:`max_image_pixels`) raises ``ValueError`` before anything is decoded.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Another library switched on silent acceptance of truncated files; we want to know.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow refuses beyond twice this in open(); we refuse beyond it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ValueError(f"image has more than {limit} pixels ({MAX_IMAGE_PIXELS_ENV})") from None
    with img:
        w, h = img.size
        if w * h > limit:
            raise ValueError(
                f"image is {w}x{h} = {w * h} pixels, over the limit of {limit} ({MAX_IMAGE_PIXELS_ENV})"
            )
        img.load()
        return to_rgb(img)


def pil_to_tensor(img: Image.Image):
    """8-bit RGB PIL image -> float tensor (3, H, W) in [0, 1] (used when no transform is given)."""
    import torch

    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
