"""The demo's settings and folder layout (shared by the study and the report, which import only this)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vitdistill.demo.methods import BY_KEY, DEFAULT_METHODS, METHODS
from vitdistill.errors import UserError

STAGE_DIRS = ("1-data", "2-teacher", "3-teacher-analysis", "4-students", "5-student-analysis", "6-report")
# The demo's size settings: positive integers, each also a flag of `vitdistill demo`.
SIZE_FIELDS = (
    "seeds",
    "epochs",
    "teacher_epochs",
    "img_size",
    "patch_size",
    "teacher_width",
    "teacher_depth",
    "student_width",
    "student_depth",
    "train_images",
    "val_images",
    "batch_size",
    "analysis_images",
)


@dataclass
class DemoSettings:
    """Everything that changes the demo's numbers (recorded in ``OUT/demo.json``).

    ``None`` fields take the full or ``quick`` preset in :meth:`resolved`. Seeds are
    ``seed_offset .. seed_offset + seeds - 1``: two studies with disjoint ranges are independent
    replications. ``workers`` (parallel training processes) changes only the wall time.
    """

    quick: bool = False
    data: str | None = None
    device: str = "cpu"
    seed_offset: int = 0
    workers: int | None = None
    seeds: int | None = None
    epochs: int | None = None
    teacher_epochs: int | None = None
    img_size: int | None = None
    patch_size: int | None = None
    teacher_width: int | None = None
    teacher_depth: int | None = None
    student_width: int | None = None
    student_depth: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    batch_size: int | None = None
    analysis_images: int | None = None
    methods: tuple[str, ...] = field(default_factory=lambda: DEFAULT_METHODS)

    # Width ratio 2x and depth ratio 2x, as CaiT-S24 (384 wide, 24 blocks) over DeiT-Tiny (192, 12).
    FULL = {
        "seeds": 4,
        "epochs": 16,
        "teacher_epochs": 20,
        "img_size": 32,
        "patch_size": 4,
        "teacher_width": 64,
        "teacher_depth": 4,
        "student_width": 32,
        "student_depth": 2,
        "train_images": 2000,
        "val_images": 3000,
        "batch_size": 32,
        "analysis_images": 300,
    }
    QUICK = {
        "seeds": 2,
        "epochs": 1,
        "teacher_epochs": 2,
        "img_size": 32,
        "patch_size": 8,
        "teacher_width": 32,
        "teacher_depth": 2,
        "student_width": 16,
        "student_depth": 1,
        "train_images": 256,
        "val_images": 128,
        "batch_size": 64,
        "analysis_images": 24,
    }

    def resolved(self) -> DemoSettings:
        preset = self.QUICK if self.quick else self.FULL
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in preset.items():
            if values[k] is None:
                values[k] = v
        if values["workers"] is None:
            values["workers"] = 1 if self.quick else max(1, min(2, os.cpu_count() or 1))
        values["methods"] = tuple(values["methods"])
        s = DemoSettings(**values)
        s.validate()
        return s

    def validate(self) -> None:
        from vitdistill.utils.options import INT64

        for name in (*SIZE_FIELDS, "workers"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"'{name}' must be >= 1 (got {v})", settings=(name,))
            if v is not None and v >= INT64:  # said before any stage starts, not by a training run's config
                raise UserError(f"'{name}' must fit in a signed 64-bit integer (got {v})", settings=(name,))
        if self.seed_offset < 0:
            raise UserError(f"'seed_offset' must be >= 0 (got {self.seed_offset})", settings=("seed_offset",))
        self._validate_seed_range()
        if self.data is not None and not str(self.data).startswith("synthetic:"):
            from pathlib import Path

            if not Path(self.data).expanduser().exists():  # said before any stage starts
                raise UserError(f"data folder {self.data} does not exist")
        if self.img_size % self.patch_size:
            raise UserError(
                f"img_size={self.img_size} must be a multiple of patch_size={self.patch_size}",
                settings=("img_size", "patch_size"),
            )
        for name in ("teacher_width", "student_width"):
            if getattr(self, name) % 16:
                raise UserError(
                    f"'{name}' must be a multiple of 16 (got {getattr(self, name)})", settings=(name,)
                )
        if self.student_width >= self.teacher_width:
            raise UserError(
                f"the student must be narrower than the teacher (student width {self.student_width}, "
                f"teacher width {self.teacher_width})"
            )
        if self.batch_size > self.train_images:
            raise UserError(
                f"batch_size={self.batch_size} is larger than the training set ({self.train_images} images)",
                settings=("batch_size",),
            )
        if self.data is None and self.img_size < 16:
            raise UserError(
                "'img_size' must be at least 16 for the synthetic data set", settings=("img_size",)
            )
        if self.data is None:
            self._validate_memory()
        if not self.methods:
            raise UserError(f"'methods' names no arm; methods: {', '.join(m.key for m in METHODS)}")
        unknown = [m for m in self.methods if m not in BY_KEY or m == "teacher"]
        if unknown:
            raise UserError(
                f"unknown demo method {unknown[0]!r}; methods: {', '.join(m.key for m in METHODS)}"
            )
        self._validate_device()

    def _validate_seed_range(self) -> None:
        """Said before any stage starts: every seed must be one a training run accepts."""
        from vitdistill.utils.options import SEED_LIMIT

        last = self.seed_offset + self.seeds - 1
        if last >= SEED_LIMIT:
            raise UserError(
                f"'seed_offset' + 'seeds' - 1 must be at most {SEED_LIMIT - 1}, the largest training seed "
                f"(got seeds {self.seed_offset}..{last})",
                settings=("seed_offset", "seeds"),
            )

    def _validate_memory(self) -> None:
        """The synthetic set is decoded once into float32 tensors: refuse one larger than this machine's memory."""
        need = (self.train_images + self.val_images) * 3 * self.img_size**2 * 4
        try:
            have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name: cannot tell
            return
        if need > have:
            raise UserError(
                f"the decoded data set (train_images={self.train_images}, val_images={self.val_images}, "
                f"img_size={self.img_size}) needs {need / 2**30:.3g} GiB as float32, more than this machine's "
                f"{have / 2**30:.3g} GiB of memory",
                settings=("train_images", "val_images", "img_size"),
            )

    def _validate_device(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise UserError(
                    f"device={self.device!r}: CUDA is not available on this machine; use device='cpu'",
                    settings=("device",),
                )
        elif self.device != "cpu":
            raise UserError(f"'device' must be cpu or cuda (got {self.device!r})", settings=("device",))

    @property
    def synthetic(self) -> bool:
        return self.data is None

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    def data_spec(self) -> str:
        if self.data is not None:
            return str(self.data)
        spec = f"synthetic:shapes?n={self.train_images}&n_val={self.val_images}"
        if self.img_size != 32:
            spec += f"&size={self.img_size}"
        return spec

    def key(self) -> dict[str, Any]:
        """The settings that change the numbers (``workers`` does not)."""
        d = asdict(self)
        d.pop("workers")
        d["methods"] = list(self.methods)
        d["data_spec"] = self.data_spec()
        return d


def heads(width: int) -> int:
    """Attention heads for a width: heads of 16 channels (DeiT-Tiny's 3 heads of 64, scaled down)."""
    return max(1, width // 16)
