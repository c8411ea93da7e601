"""One epoch's training statistics: loss sums, counts and the first non-finite step per term."""

from __future__ import annotations

import torch

from vitdistill.utils import dist as dist_mod


class EpochStats:
    """One epoch's running sums of the loss terms, kept on the device: no host sync per step.

    ``first_bad`` holds, per term, the first optimizer step with a non-finite value (-1: none).
    A mid-epoch checkpoint stores :meth:`state_dict` so a resumed epoch reports the same means.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.names: list[str] | None = None
        self.sums: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None
        self.n_steps, self.n_images, self.skipped, self.elapsed = 0, 0, 0, 0.0

    def add(self, terms: dict, n_images: int, acc: int, step: int) -> torch.Tensor:
        if self.names is None:
            self.names = list(terms)
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
            self.first_bad = torch.full((len(self.names),), -1, dtype=torch.long, device=self.device)
        vals = torch.stack([terms[k].detach().double() for k in self.names])
        self.sums += vals / acc
        self.first_bad = torch.where((~torch.isfinite(vals)) & (self.first_bad < 0), step, self.first_bad)
        self.n_images += n_images
        return vals

    def state_dict(self) -> dict:
        tensors = {"sums": self.sums, "first_bad": self.first_bad}
        return {
            "names": self.names,
            **{k: None if t is None else t.cpu() for k, t in tensors.items()},
            "n_steps": self.n_steps,
            "n_images": self.n_images,
            "skipped": int(self.skipped),
            "elapsed": self.elapsed,
        }

    def load_state_dict(self, st: dict) -> None:
        self.names = st["names"]
        self.sums = None if st["sums"] is None else st["sums"].to(self.device)
        self.first_bad = None if st["first_bad"] is None else st["first_bad"].to(self.device)
        self.n_steps, self.n_images, self.skipped = st["n_steps"], st["n_images"], st["skipped"]
        self.elapsed = st["elapsed"]

    def reduce(self, lr: float) -> dict:
        """The epoch record's training part: per-term means over all ranks' steps, counts, speed."""
        dev, k = self.device, len(self.names)
        counts = torch.tensor([self.n_steps, self.n_images, self.skipped], dtype=torch.float64, device=dev)
        total = dist_mod.all_reduce_sum(torch.cat([self.sums, counts]))
        out = {
            f"train_{name}": total[j].item() / max(total[k].item(), 1) for j, name in enumerate(self.names)
        }
        out.update(
            {
                "lr": lr,
                "images_per_s": total[k + 1].item() / max(self.elapsed, 1e-9),
                "train_images": int(total[k + 1].item()),
                "train_skipped": int(total[k + 2].item()),
                "epoch_time_s": self.elapsed,
            }
        )
        return out
