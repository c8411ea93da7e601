"""The training sampler: each rank's share of one shared permutation per epoch, in global batches.

``data.batch_size`` is the GLOBAL batch per optimizer step. Each step takes the next
``batch_size`` indices of one shared permutation and splits them into ``world_size x grad_accum``
micro-batches, so 1 process and N processes see the same images per step. Each image's
augmentation is seeded from (seed, epoch, position in the epoch's order) (:class:`SeededSamples`),
whatever the number of DataLoader workers.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from vitdistill.utils.options import SEED_LIMIT


class EpochSampler(Sampler[int]):
    """This rank's indices for one epoch, in global-batch order (repeated augmentation optional).

    One permutation per epoch (seeded by seed + epoch, identical on every rank). With
    ``repeats`` r > 1 each index appears r times in a row (DeiT's repeated augmentation) and the
    list is cut back to the data set length, so an epoch keeps its length. Only whole global
    batches are used. Step s, micro-step a, rank k reads the slice
    ``[s*G + (a*W + k)*m, ... + m)`` with G the global batch, W ranks and m the micro-batch.

    ``set_epoch(e, start_step=s)`` starts the epoch at optimizer step s (a mid-epoch resume):
    the skipped images are never read. With ``seeded=True`` each item is ``(index, seed)``, the
    seed a function of (seed, epoch, position in the epoch's order) for :class:`SeededSamples`.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        world: int,
        rank: int,
        accum: int,
        repeats: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        max_steps: int | None = None,
        seeded: bool = False,
    ):
        self.n, self.G, self.W, self.rank, self.accum = n, global_batch, world, rank, accum
        self.m = global_batch // (world * accum)
        self.repeats, self.shuffle, self.seed, self.seeded = repeats, shuffle, seed, seeded
        self.steps = n // global_batch if max_steps is None else min(n // global_batch, max_steps)
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accum * self.m

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.repeats > 1:
            order = order.repeat_interleave(self.repeats)[: self.n]
        order = order.tolist()
        for s in range(self.start_step, self.steps):
            for a in range(self.accum):
                start = s * self.G + (a * self.W + self.rank) * self.m
                for pos in range(start, start + self.m):
                    yield (order[pos], sample_seed(self.seed, self.epoch, pos)) if self.seeded else order[pos]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for the image at ``position`` of an epoch's order (splitmix64 of the three)."""
    mask = (1 << 64) - 1
    x = ((seed * 1_000_003 + epoch) * (1 << 32) + position + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1


class SeededSamples(Dataset):
    """Reads ``(index, seed)`` keys, seeding the RNGs the transforms draw from before each image.

    An image's augmentation then depends on (seed, epoch, position) only: not on the number of
    DataLoader workers, nor on which worker reads it or what that worker read before. This is
    what lets a mid-epoch resume skip to its position without replaying the skipped images. In
    the main process (``num_workers: 0``) the RNG states are put back afterwards, so the model's
    own random draws (drop path, mixup) follow one stream whatever the data loading does.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list:
        """A batch at once (the DataLoader calls this): the main process saves its RNGs once."""
        if get_worker_info() is not None:
            return [self._read(key) for key in keys]
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            return [self._read(key) for key in keys]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])

    def _read(self, key):
        index, seed = key
        random.seed(seed)
        np.random.seed(seed % SEED_LIMIT)
        torch.default_generator.manual_seed(seed)  # the CPU generator only: the CUDA ones are the model's
        return self.dataset[index]
