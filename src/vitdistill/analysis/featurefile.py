"""Features on disk: an append-only (images, N, C) array plus the image indices, resumable by length.

Pass 1 writes the features of the layers that need shared-basis curves here and pass 2 reads
them back in chunks; ``save_features`` keeps such files as results.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vitdistill.errors import UserError


class FeatureFile:
    """Append-only raw (images, N, C) array on disk plus the image indices, resumable by length."""

    def __init__(self, path: Path, dtype: str = "float32"):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.ids: list[int] = []
        self.shape: tuple[int, int] | None = None
        self._fh = None

    def _open(self) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - stays open across batches

    def write(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        self._open()
        self.shape = (int(x.shape[1]), int(x.shape[2]))
        self._fh.write(x.detach().to("cpu", torch.float32).numpy().astype(self.dtype).tobytes())
        self.ids.extend(int(i) for i in ids)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def state_dict(self) -> dict:
        self.flush()
        return {"ids": list(self.ids), "shape": self.shape}

    def load_state_dict(self, sd: dict) -> None:
        self.close()
        self.ids, self.shape = list(sd["ids"]), sd["shape"]
        size = len(self.ids) * (int(np.prod(self.shape)) if self.shape else 0) * self.dtype.itemsize
        if self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(size)
        elif size:
            raise UserError(
                f"cannot resume: scratch file {self.path} is gone; start again without 'resume'",
                settings=("resume",),
            )

    def chunks(self, images_per_chunk: int):
        """Yield (features (b, N, C) float32, ids) in the order written, one chunk at a time."""
        self.flush()
        if not self.ids:
            return
        per = int(np.prod(self.shape))
        with open(self.path, "rb") as f:
            for s in range(0, len(self.ids), images_per_chunk):
                ids = self.ids[s : s + images_per_chunk]
                a = np.fromfile(f, dtype=self.dtype, count=per * len(ids)).reshape(len(ids), *self.shape)
                yield torch.from_numpy(a.astype(np.float32)), torch.tensor(ids, dtype=torch.int64)
