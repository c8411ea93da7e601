"""Every rank stops at the same check when one rank alone sees a non-finite loss (real gloo group)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vitdistill.distill import finite
from vitdistill.errors import UserError

# per rank: first step with a non-finite value for each of (loss, ce, kd); -1: none
SEEN = {0: [-1, -1, -1], 1: [7, 7, -1]}


def _rank(rank: int, world: int, init_file: str, ckpt_dir: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        first_bad = torch.tensor(SEEN[rank], dtype=torch.long)
        out[rank] = finite.across_ranks(first_bad).tolist()
        try:
            finite.check_loss(first_bad, ["loss", "ce", "kd"], ckpt_dir)
            out[f"stopped{rank}"] = None
        except UserError as e:
            out[f"stopped{rank}"] = str(e)
        finite.check_loss(torch.tensor([-1, -1, -1]), ["loss", "ce", "kd"], ckpt_dir)  # all finite: passes
        out[f"clean{rank}"] = True
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path), out), nprocs=2, join=True)
        out = dict(out)
    assert out[0] == out[1] == [7, 7, -1]  # the earliest step any rank saw, per term
    for rank in (0, 1):
        msg = out[f"stopped{rank}"]
        assert msg is not None and "non-finite loss at optimizer step 7 (term: ce)" in msg
        assert "no checkpoint was written" in msg and out[f"clean{rank}"]


def test_one_process_is_unchanged(tmp_path):
    assert not (dist.is_available() and dist.is_initialized())
    t = torch.tensor([-1, 3, 5])
    assert finite.across_ranks(t).tolist() == [-1, 3, 5] and finite.across_ranks(None) is None
    with pytest.raises(UserError, match="optimizer step 3 \\(term: ce\\)"):
        finite.check_loss(t, ["loss", "ce", "kd"], tmp_path)
    assert os.listdir(tmp_path) == []
