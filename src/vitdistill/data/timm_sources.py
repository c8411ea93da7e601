"""Data sets that timm reads: ``hfds/`` (Hugging Face, random access), ``hfids/`` and ``wds/`` (streams).

The spec is timm's data-set name: ``hfds/NAME`` and ``hfids/NAME`` pass NAME to
``datasets.load_dataset`` (a hub id, or a local folder of parquet/arrow files; columns ``image`` and
``label`` unless ``?image=COL&label=COL`` say otherwise), ``wds/DIR`` reads
WebDataset tar shards from DIR, whose ``_info.json`` (timm's format) names each split's shards and
sizes. All are opened with ``timm.data.create_dataset``.

``hfds/`` sets are map-style: they behave like a folder (subsets, per-image ids
``hfds/NAME:SPLIT/ROW``, sharding over ranks, resumable runs). ``hfids/`` and ``wds/`` have no random
access: timm's reader shards them over ranks and loader workers and streams each part (in order,
or shuffled for training: :meth:`StreamDataset.for_training`), so they carry no per-image ids and
cannot be cut to an even subset; commands that need those say so.
"""

from __future__ import annotations

import importlib.util
import json
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from torch.utils.data import IterableDataset

from vitdistill.data.datasets import SPLIT_ALIASES, ImageFileDataset
from vitdistill.data.images import load_rgb, to_rgb
from vitdistill.data.subset import subset_positions
from vitdistill.errors import UserError, first_line

PREFIXES = ("hfds", "hfids", "wds")
MAX_CLASSES = 1_000_000  # more classes than any labelled image set: a larger label is a wrong column
_PACKAGE = {"hfds": "datasets", "hfids": "datasets", "wds": "webdataset"}


def timm_prefix(spec: str) -> str | None:
    """``hfds``, ``hfids`` or ``wds`` when ``spec`` names a timm-read data set (prefix case-insensitive)."""
    head, sep, _ = str(spec).partition("/")
    return head.lower() if sep and head.lower() in PREFIXES else None


def _split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """(prefix, name, options) of ``PREFIX/NAME[?key=value&...]``."""
    prefix = timm_prefix(spec)
    rest = str(spec).split("/", 1)[1]
    name, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = {"classes", "image", "label"} if prefix != "wds" else {"classes"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        takes = ", ".join(f"{k}=..." for k in sorted(allowed))
        raise UserError(f"{spec}: unknown option {unknown[0]!r} (a {prefix}/ source takes {takes})")
    if not name.strip():
        raise UserError(f"{spec}: give a data-set name or folder after {prefix}/")
    if "classes" in options and not (
        options["classes"].isdecimal() and 0 < int(options["classes"]) <= MAX_CLASSES
    ):
        raise UserError(
            f"{spec}: classes must be a positive whole number up to {MAX_CLASSES} (got {options['classes']!r})"
        )
    return prefix, name, options


def _need_package(prefix: str) -> None:
    pkg = _PACKAGE[prefix]
    if importlib.util.find_spec(pkg) is None:
        raise UserError(f"{prefix}/ sources need the '{pkg}' package: pip install 'vitdistill[datasets]'")


def _candidates(split: str) -> tuple[str, ...]:
    """Our split name and its usual spellings (``val`` is ``validation`` on the Hugging Face hub)."""
    names = SPLIT_ALIASES.get(split, (split,))
    return tuple(dict.fromkeys(("validation",) + names if split == "val" else names))


def _create(prefix: str, name: str, root: str | None, split: str, **kwargs):
    from timm.data import create_dataset

    try:
        return create_dataset(f"{prefix}/{name}", root=root, split=split, input_img_mode="RGB", **kwargs)
    except ImportError as e:
        raise UserError(f"{prefix}/{name}: {first_line(e)}") from None


def _hub_unreachable(name: str) -> bool:
    """True when ``name`` is no local folder, the hub is not declared offline, and it does not answer in 3 s.

    Without this check an unreachable hub costs half a minute of retries before the same error.
    """
    import os
    import socket
    from urllib.parse import urlparse

    if (
        Path(name).expanduser().exists()
        or os.environ.get("HF_DATASETS_OFFLINE")
        or os.environ.get("HF_HUB_OFFLINE")
    ):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return True
    return False


def _open_hf(prefix: str, name: str, split: str, options: dict, **kwargs):
    """timm's data set for the first spelling of ``split`` that the Hugging Face set has (no progress bars)."""
    import datasets.utils as hf_tqdm

    if _hub_unreachable(name):
        raise UserError(
            f"{prefix}/{name}: no such local folder and the Hugging Face hub is unreachable; give a local "
            "folder of parquet/arrow files, or set HF_DATASETS_OFFLINE=1 to read a set already in the cache"
        )
    keys = {"input_key": options.get("image", "image"), "target_key": options.get("label", "label")}
    kwargs.update(keys)

    was_off = hf_tqdm.are_progress_bars_disabled()
    hf_tqdm.disable_progress_bars()
    try:
        return _first_split(prefix, name, split, **kwargs)
    finally:
        if not was_off:
            hf_tqdm.enable_progress_bars()


def _no_column(prefix: str, name: str, e: KeyError) -> UserError:
    return UserError(
        f"{prefix}/{name} has no column {e}: name the image and label columns, "
        f"e.g. {prefix}/{name}?image=img&label=fine_label"
    )


def _first_split(prefix: str, name: str, split: str, **kwargs):
    tried = []
    for candidate in _candidates(split):
        try:
            return _create(prefix, name, None, candidate, **kwargs), candidate
        except KeyError as e:
            raise _no_column(prefix, name, e) from None
        except ValueError as e:
            if "split" not in str(e).lower():
                raise UserError(f"{prefix}/{name}: {first_line(e)}") from None
            tried.append(candidate)
        except (FileNotFoundError, ConnectionError, OSError) as e:
            raise UserError(
                f"{prefix}/{name}: cannot open the data set ({first_line(e)}); "
                "give a local folder of parquet/arrow files or a reachable hub id"
            ) from None
    raise UserError(f"{prefix}/{name} has no split named {' or '.join(map(repr, tried))}")


def _class_indices(spec: str, column: str, raw: list, num_classes: int | None) -> list[int]:
    """The labels as class indices ``0..num_classes-1`` (``None``: up to MAX_CLASSES), or one line."""
    labels = []
    for row, y in enumerate(raw):
        whole = isinstance(y, numbers.Integral) or (isinstance(y, numbers.Real) and float(y).is_integer())
        if whole and 0 <= int(y) < (num_classes or MAX_CLASSES):
            labels.append(int(y))
            continue
        if not whole or int(y) < 0:
            why = "labels must be class indices, whole numbers from 0"
        elif num_classes:
            why = f"the set has {num_classes} classes"
        else:
            why = f"a label above {MAX_CLASSES - 1} needs the class count: ?classes=N"
        raise UserError(f"{spec}: row {row} has label {y!r} in column {column!r}; {why}")
    return labels


class HfdsDataset(ImageFileDataset):
    """A Hugging Face data set read through timm's ``hfds`` reader, row by row.

    Items and ids follow :class:`ImageFileDataset`; an item's id is ``hfds/NAME:SPLIT/ROW``.
    """

    def __init__(self, reader, rows, labels, classes, transform, strict, info):
        ids = [f"hfds/{info['name']}:{info['split']}/{r}" for r in rows]
        super().__init__(ids, labels, classes, transform, strict, info)
        self.reader, self.rows = reader, [int(r) for r in rows]

    def _load(self, index: int):
        fileobj, _ = self.reader[self.rows[index]]
        with fileobj:
            return load_rgb(fileobj)


def hfds_dataset(spec, split, transform=None, strict=False, max_images=None) -> HfdsDataset:
    prefix, name, options = _split_spec(spec)
    _need_package(prefix)
    ds, hf_split = _open_hf(prefix, name, split, options)
    reader = ds.reader
    columns, table = set(reader.dataset.column_names), reader.dataset.data
    # timm casts the image column, which adds it (all null) when the set has none by that name
    if len(reader.dataset) and table.column(reader.image_key).null_count == len(table):
        raise _no_column(prefix, name, KeyError(reader.image_key))
    for key in str(reader.label_key).split(","):
        if key not in columns:
            raise _no_column(prefix, name, KeyError(key))
    try:
        raw = list(reader.iter_targets())
    except KeyError as e:
        raise _no_column(prefix, name, e) from None
    classes = sorted(reader.class_to_idx, key=reader.class_to_idx.get)
    if not classes and raw:
        given = int(options["classes"]) if "classes" in options else None
        all_labels = _class_indices(spec, reader.label_key, raw, given)
        classes = [str(k) for k in range(given or max(all_labels) + 1)]
    else:
        all_labels = _class_indices(spec, reader.label_key, raw, len(classes))
    rows = subset_positions(len(all_labels), max_images).tolist()
    info = {"kind": "hfds", "spec": str(spec), "name": name, "split": hf_split, "max_images": max_images}
    return HfdsDataset(reader, rows, [all_labels[r] for r in rows], classes, transform, strict, info)


class StreamDataset(IterableDataset):
    """An ``hfids/`` or ``wds/`` source streamed through timm's reader, items ``(image, label, -1)``.

    Streams have no positions: the index is -1 and there are no per-image ids. ``transform`` is
    applied here (set it after building, as for the other sets); ``set_epoch`` reshuffles a
    training stream.
    """

    streaming = True

    def __init__(self, timm_ds, num_classes: int, transform: Callable | None, info: dict):
        self.timm_ds, self.transform, self._info = timm_ds, transform, dict(info)
        self.num_classes = num_classes
        self.classes = [str(k) for k in range(self.num_classes)]

    def __len__(self) -> int:
        return int(self._info.get("num_images") or 0)

    def for_training(self, seed: int, batch_size: int) -> StreamDataset:
        """The same source opened for training: shuffled (shards and samples, seeded), same transform."""
        info = self._info
        stream = stream_dataset(info["spec"], info["asked_split"], self.transform, True, seed, batch_size)
        stream._info = dict(info)
        return stream

    def set_epoch(self, epoch: int) -> None:
        self.timm_ds.set_epoch(epoch)

    def __getitem__(self, index):
        refuse_stream(self, "this reads images by position")

    def set_loader_cfg(self, num_workers: int) -> None:
        self.timm_ds.set_loader_cfg(num_workers=num_workers)

    def __iter__(self):
        from vitdistill.data.images import pil_to_tensor

        for img, label in self.timm_ds:
            img = to_rgb(img)
            yield (self.transform(img) if self.transform is not None else pil_to_tensor(img)), int(label), -1

    def describe(self) -> dict[str, Any]:
        return {**self._info, "num_classes": self.num_classes, "per_image_ids": False}


def _wds_info(root: Path, spec: str) -> dict:
    info_file = root / "_info.json"
    if not root.is_dir():
        raise UserError(f"{spec}: {root} is not a folder of WebDataset shards")
    if not info_file.is_file():
        raise UserError(
            f"{spec}: {root} has no _info.json naming its splits (timm's format: "
            '{"splits": {"train": {"name": "train", "num_samples": N, "filenames": [...], "shard_lengths": [...]}}})'
        )
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
        splits = info["splits"]
        if not isinstance(splits, dict):
            raise TypeError("'splits' is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{spec}: cannot read {info_file} ({first_line(e)})") from None
    return info


def stream_dataset(spec, split, transform=None, is_training=False, seed=0, batch_size=1) -> StreamDataset:
    prefix, name, options = _split_spec(spec)
    _need_package(prefix)
    common = {"is_training": is_training, "seed": seed, "batch_size": batch_size}
    if prefix == "wds":
        root = Path(name).expanduser()
        info = _wds_info(root, spec)
        present = [c for c in _candidates(split) if c in info["splits"]]
        if not present:
            raise UserError(
                f"{spec}: _info.json has splits {', '.join(sorted(info['splits']))}, none is {split!r}"
            )
        timm_ds, real_split = _create("wds", "", str(root), present[0], **common), present[0]
        n_images = int(info["splits"][real_split].get("num_samples") or 0)
        num_classes = options.get("classes", info.get("num_classes"))
    else:
        timm_ds, real_split = _open_hf(prefix, name, split, options, **common)
        n_images = int(getattr(timm_ds.reader, "num_samples", 0) or 0)
        num_classes = options.get("classes", len(getattr(timm_ds.reader, "class_to_idx", {})) or None)
    if num_classes is None:
        raise UserError(
            f'{spec}: the number of classes is unknown; add "num_classes" to _info.json or write {prefix}/{name}?classes=N'
        )
    try:
        num_classes = int(num_classes)
    except ValueError:
        raise UserError(f"{spec}: classes must be a whole number (got {num_classes!r})") from None
    info = {
        "kind": prefix,
        "spec": str(spec),
        "split": real_split,
        "num_images": n_images,
        "asked_split": split,
    }
    return StreamDataset(timm_ds, num_classes, transform, info)


def refuse_stream(ds, what: str) -> None:
    """One line when a command needs random access that a streamed source cannot give."""
    if getattr(ds, "streaming", False):
        raise UserError(
            f"{ds.describe()['spec']} is streamed (no random access), but {what}; "
            "use an hfds/ source or an image folder"
        )
