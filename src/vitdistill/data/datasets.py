"""Data sets from image folders, image lists and the built-in synthetic sets.

Every item is ``(image, label, index)``: ``index`` is the item's position in the data set, so
per-image results (e.g. ranks in ``per_image.csv``) can be traced back to ``sample_ids[index]``.
Unreadable files give ``(None, label, index)`` unless ``strict=True``; :func:`collate_skip`
drops those items and reports how many it dropped, so a bad file costs one image, not a run.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils.misc import natural_key
from torch.utils.data import Dataset

from vitdistill.data.images import load_rgb, pil_to_tensor
from vitdistill.data.subset import subset_positions
from vitdistill.errors import UserError
from vitdistill.utils.markers import is_output

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "validation", "valid"), "test": ("test",)}


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


class ImageFileDataset(Dataset):
    """Images read from files, with integer labels (-1 = unlabelled)."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        classes: Sequence[str],
        transform: Callable | None = None,
        strict: bool = False,
        info: dict[str, Any] | None = None,
    ):
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths = list(paths)
        self.labels = [int(v) for v in labels]
        self.classes = list(classes)
        self.transform = transform
        self.strict = strict
        self._info = dict(info or {})
        self._warned = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def sample_ids(self) -> list[str]:
        return self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path, label = self.paths[index], self.labels[index]
        try:
            img = self._load(index)
        except (OSError, ValueError, SyntaxError) as e:
            # PIL reports truncated/corrupt files as OSError, some decoders as ValueError/SyntaxError.
            if self.strict:
                raise UserError(f"cannot read image {path}: {e}") from None
            self._warned += 1  # one line each (the first few), the total is in the results
            if self._warned <= 5:
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                more = "; further ones are skipped quietly and counted" if self._warned == 5 else ""
                print(f"vitdistill: skipping unreadable image {path}: {why}{more}", file=sys.stderr)
            return None, label, index
        return (self.transform(img) if self.transform is not None else pil_to_tensor(img)), label, index

    def _load(self, index: int):
        """The decoded RGB image of item ``index`` (subclasses read other stores)."""
        return load_rgb(self.paths[index])

    def fingerprint(self) -> str:
        """Hash of (file, label) pairs: two runs saw the same list iff the fingerprints agree."""
        h = hashlib.sha256()
        for p, y in zip(self.paths, self.labels, strict=True):
            h.update(f"{p}\t{y}\n".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        counts = np.bincount([y for y in self.labels if y >= 0], minlength=self.num_classes)
        return {
            **self._info,
            "num_images": len(self),
            "num_classes": self.num_classes,
            "classes": self.classes if self.num_classes <= 100 else self.classes[:100] + ["..."],
            "images_per_class_min": int(counts.min()) if counts.size else 0,
            "images_per_class_max": int(counts.max()) if counts.size else 0,
            "strict": self.strict,
            "fingerprint": self.fingerprint(),
        }


def _folder_for_split(root: Path, split: str) -> tuple[Path, str | None]:
    """``root/<split>`` when the folder is split into train/val subfolders, else ``root`` itself."""
    names = SPLIT_ALIASES.get(split, (split,))
    for name in names:
        if (root / name).is_dir():
            return root / name, name
    present = [n for group in SPLIT_ALIASES.values() for n in group if (root / n).is_dir()]
    if present:
        raise UserError(
            f"{root} is split into {', '.join(sorted(present))}/ but has no '{split}' subfolder; "
            f"pick split={' or '.join(repr(p) for p in sorted(present))}"
        )
    return root, None


class _Walk:
    """One walk over a data folder: links are followed, each real folder (device, inode) is visited
    once, and output folders (they carry a marker) and names that are not UTF-8 are skipped; each
    kind of skip is counted."""

    def __init__(self, *tops: Path):
        self.seen: set[tuple[int, int]] = set()
        self.skipped = {"link_loops": 0, "non_utf8_names": 0, "output_folders": 0}
        self.tops = [Path(os.path.realpath(t)) for t in tops]
        self.known(*tops)

    def known(self, *folders: str | os.PathLike) -> None:
        """Mark ``folders`` as visited: a link that leads back to one of them is a loop."""
        for f in folders:
            st = os.stat(f)
            self.seen.add((st.st_dev, st.st_ino))

    def first_visit(self, path: str | os.PathLike) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.seen or self._holds_a_top(path):
            self.skipped["link_loops"] += 1
            return False
        self.seen.add(key)
        return True

    def _holds_a_top(self, path: str | os.PathLike) -> bool:
        """A link to a folder above the data (``..`` twice, ``/``) leads back into it: a loop,
        and following it would walk everything around the data as well."""
        real = Path(os.path.realpath(path))
        return any(real == top or real in top.parents for top in self.tops)

    def usable(self, name: str) -> bool:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
            self.skipped["non_utf8_names"] += 1
            return False
        return True

    def keep_dir(self, parent: str | os.PathLike, name: str) -> bool:
        if name.startswith(".") or not self.usable(name):
            return False
        full = os.path.join(parent, name)
        if is_output(full):
            self.skipped["output_folders"] += 1
            return False
        return True

    def class_dirs(self, folder: Path) -> list[str]:
        names = [d.name for d in folder.iterdir() if d.is_dir() and self.keep_dir(folder, d.name)]
        loops = [n for n in names if self._holds_a_top(folder / n)]  # `here -> .`: not a class
        self.skipped["link_loops"] += len(loops)
        names = [n for n in names if n not in loops]
        return sorted(names, key=natural_key)

    def images_under(self, folder: Path) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = [
                d
                for d in dirnames
                if self.keep_dir(dirpath, d) and self.first_visit(os.path.join(dirpath, d))
            ]
            found.extend(os.path.join(dirpath, f) for f in filenames if _is_image(f) and self.usable(f))
        return sorted(found, key=natural_key)

    def report(self, root: Path) -> dict[str, int]:
        """The skip counts (for the data set's description); one line on stderr when any is non-zero."""
        said = {"link_loops": "link loops", "non_utf8_names": "names that are not UTF-8",
                "output_folders": "vitdistill output folders"}  # fmt: skip
        parts = [f"{n} {said[k]}" for k, n in self.skipped.items() if n]
        if parts:
            print(f"vitdistill: data folder {root}: skipped {', '.join(parts)}", file=sys.stderr)
        return {f"skipped_{k}": n for k, n in self.skipped.items()}


def _capped(paths, labels, classes, transform, strict, info: dict, max_images) -> ImageFileDataset:
    """The data set of ``paths`` cut to at most ``max_images``, evenly spread (recorded in ``info``)."""
    keep = subset_positions(len(paths), max_images)
    info = {**info, "max_images": max_images}
    return ImageFileDataset(
        [paths[i] for i in keep], [labels[i] for i in keep], classes, transform, strict, info
    )


def image_folder(
    root: str | os.PathLike,
    split: str = "train",
    transform: Callable | None = None,
    strict: bool = False,
    max_images: int | None = None,
) -> ImageFileDataset:
    """An ImageFolder: one subfolder per class (searched recursively for images).

    When ``root`` holds ``train/`` and ``val/`` subfolders, ``split`` picks one and the class list
    is the union of both splits' class folders, so class indices agree between splits even if a
    class is missing from one of them. A folder of images with no class subfolders is one
    class named after the folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise UserError(f"{root} is neither a folder nor an image list")
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"data folder {root!s:.200} has a name that is not valid UTF-8; rename it") from None
    folder, split_dir = _folder_for_split(root, split)
    walk = _Walk(root, folder)
    if split_dir is not None:
        split_roots = [root / n for g in SPLIT_ALIASES.values() for n in g if (root / n).is_dir()]
        classes = sorted({c for r in split_roots for c in walk.class_dirs(r)}, key=natural_key)
    else:
        classes = walk.class_dirs(folder)
    paths: list[str] = []
    labels: list[int] = []
    if classes:
        walk.known(*(folder / c for c in classes if (folder / c).is_dir()))
        for i, c in enumerate(classes):
            if (folder / c).is_dir():
                imgs = walk.images_under(folder / c)
                paths += imgs
                labels += [i] * len(imgs)
    else:
        names = sorted(os.listdir(folder), key=natural_key)
        paths = [os.path.join(folder, f) for f in names if _is_image(f) and walk.usable(f)]
        labels = [0] * len(paths)
        classes = [folder.name] if paths else []
    if not paths:
        raise UserError(
            f"no images found in {folder} (expected class subfolders holding {', '.join(IMAGE_EXTENSIONS[:4])}... files)"
        )
    info = {"kind": "folder", "spec": str(root), "split": split_dir, "folder": str(folder)}
    info.update(walk.report(root))
    return _capped(paths, labels, classes, transform, strict, info, max_images)


def image_list(
    list_file: str | os.PathLike,
    transform: Callable | None = None,
    strict: bool = False,
    max_images: int | None = None,
) -> ImageFileDataset:
    """A text file of image paths, one per line, optionally ``<TAB>label`` after the path.

    Relative paths are relative to the list file. Labels may be integers (class ``k`` is then
    named ``"k"``) or class names (sorted naturally). Blank lines and lines starting with ``#`` are
    ignored. Without labels every image gets label -1 (fine for analysis, not for training).
    """
    list_file = Path(list_file).expanduser()
    base = list_file.parent
    entries: list[tuple[str, str | None]] = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"image list {list_file} is not UTF-8 text (byte {e.start})") from None
    for lineno, raw in enumerate(io.StringIO(text, newline=None), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) > 2:
            raise UserError(
                f"{list_file}:{lineno}: expected 'path' or 'path<TAB>label', got {len(parts)} fields"
            )
        path = parts[0].strip()
        label = parts[1].strip() if len(parts) == 2 and parts[1].strip() else None
        entries.append((str(path if os.path.isabs(path) else base / path), label))
    if not entries:
        raise UserError(f"image list {list_file} names no images")
    given = [lab is not None for _, lab in entries]
    if any(given) and not all(given):
        raise UserError(f"image list {list_file}: some lines have a label and some do not; label all or none")
    if all(given):
        names = [lab for _, lab in entries]
        if all(n.lstrip("-").isdigit() for n in names):
            ints = [int(n) for n in names]
            if min(ints) < 0:
                raise UserError(f"image list {list_file}: negative label {min(ints)}")
            classes = [str(k) for k in range(max(ints) + 1)]
            labels = ints
        else:
            classes = sorted(set(names), key=natural_key)
            index = {c: i for i, c in enumerate(classes)}
            labels = [index[n] for n in names]
    else:
        classes, labels = [], [-1] * len(entries)
    paths = [p for p, _ in entries]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing and strict:
        raise UserError(
            f"image list {list_file}: {len(missing)} listed file(s) do not exist, e.g. {missing[0]}"
        )
    info = {"kind": "list", "spec": str(list_file), "split": None, "missing_files": len(missing)}
    return _capped(paths, labels, classes, transform, strict, info, max_images)


def build_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    transform: Callable | None = None,
    strict: bool = False,
    max_images: int | None = None,
) -> Dataset:
    """The data set named by ``spec``: an ImageFolder directory, an image-list file, ``synthetic:NAME[?k=v&...]``,
    or one of timm's sources ``hfds/NAME``, ``hfids/NAME``, ``wds/DIR`` (see :mod:`vitdistill.data.timm_sources`).

    Items are ``(image, label, index)``; with ``transform=None`` images are float tensors in
    [0, 1] of shape (3, H, W). Use :func:`collate_skip` as the DataLoader's ``collate_fn``.
    """
    spec_s = str(spec)
    if spec_s.startswith("synthetic:"):
        from vitdistill.data.synthetic import build_synthetic

        return build_synthetic(spec_s, split=split, transform=transform, max_images=max_images)
    if _timm_source(spec_s):
        return _timm_dataset(spec_s, split, transform, strict, max_images)
    if not spec_s.strip():
        raise UserError(
            "empty data spec: give a folder, an image-list file, synthetic:NAME, hfds/NAME or wds/DIR"
        )
    path = Path(spec_s).expanduser()
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise UserError(f"{path} is a single image; give its folder or a text file listing images")
        return image_list(path, transform=transform, strict=strict, max_images=max_images)
    if not path.exists() and ":" in spec_s.split("/")[0] and not os.path.isabs(spec_s):
        from vitdistill.data.synthetic import SYNTHETIC

        raise UserError(
            f"unknown data spec {spec_s!r}: built-in sets are written synthetic:NAME ({', '.join(sorted(SYNTHETIC))})"
        )
    return image_folder(path, split=split, transform=transform, strict=strict, max_images=max_images)


def _timm_source(spec: str) -> bool:
    from vitdistill.data.timm_sources import timm_prefix

    return timm_prefix(spec) is not None and not Path(spec).expanduser().exists()


def _timm_dataset(spec: str, split: str, transform, strict: bool, max_images: int | None):
    """``hfds/`` (random access) or a streamed ``hfids/`` / ``wds/`` source, read by timm."""
    from vitdistill.data import timm_sources

    if timm_sources.timm_prefix(spec) == "hfds":
        return timm_sources.hfds_dataset(spec, split, transform, strict, max_images)
    if max_images is not None:
        raise UserError(
            f"{spec} is streamed (no random access), so it cannot be cut to an even subset of "
            f"{max_images} images; use an hfds/ source or an image folder"
        )
    return timm_sources.stream_dataset(spec, split, transform)


def collate_skip(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Collate ``(image, label, index)`` items, dropping unreadable ones (image ``None``).

    Returns ``(images, labels, indices, n_skipped)``. A batch in which every item was skipped
    gives empty tensors (``images.shape[0] == 0``); callers should skip it.
    """
    kept = [item for item in batch if item is not None and item[0] is not None]
    n_skipped = len(batch) - len(kept)
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), n_skipped
    images = torch.stack([torch.as_tensor(item[0]) for item in kept])
    labels = torch.tensor([int(item[1]) for item in kept], dtype=torch.long)
    indices = torch.tensor([int(item[2]) for item in kept], dtype=torch.long)
    return images, labels, indices, n_skipped
