"""Every multi-file output is one set: a command killed after any single write leaves the old or the new set.

``export``, ``results`` and ``compare`` each replace an older output of their own kind. The real
command line runs in a forked child that dies (``os._exit``) right after its k-th completed write
or set step, for every k until it completes; after each kill the folder must hold exactly the old
set or exactly the new one, and the next command must leave no staging folder behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from vitdistill.cli import main
from vitdistill.utils import io
from vitdistill.utils.io import SET_MANIFEST
from vitdistill.utils.lock import LOCK_NAME

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
FAST = ["--batch-size", "4", "--permutations", "0", "--rotation-images", "0", "--no-plots", "--no-progress"]


def recipe(types: int, seed: int) -> dict:
    return {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 16, "patch_size": 4, "embed_dim": 16,
                                                             "depth": 2, "num_heads": 2}},
        "data": {"train": f"synthetic:shapes?n=12&n_val=8&size=16&types={types}", "batch_size": 8},
        "epochs": 1,
        "seed": seed,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.name == LOCK_NAME:
            continue
        if p.name == SET_MANIFEST:  # its staging folder name is random
            out[rel] = str(json.loads(p.read_text())["entries"])
        else:
            out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("made")
    for name, types, seed in (("runA", 2, 0), ("runB", 8, 1)):  # other class counts
        (root / f"{name}.yaml").write_text(json.dumps(recipe(types, seed)))
        assert main(["train", "--config", str(root / f"{name}.yaml"), "--output", str(root / name)]) == 0
    for name, n in (("an1", 4), ("an2", 6)):
        data = "synthetic:shapes?n=12&n_val=8&size=16&types=3"
        assert (
            main(["analyze", *TINY, "--data", data, "--images", str(n), *FAST, "--out", str(root / name)])
            == 0
        )
    return root


def _run_killed(argv: list[str], stop_at: int | None) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            steps = []

            def hook(label: str) -> None:
                steps.append(label)
                if len(steps) == stop_at:
                    os._exit(70)

            io.after_step = hook
            code = main(argv)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


CASES = {
    "export": (["export", "{runA}", "--out"], ["export", "{runB}", "--out"]),
    "results": (["results", "{runA}", "--out"], ["results", "{runA}", "{runB}", "--out"]),
    "compare": (["compare", "{an1}", "--out"], ["compare", "{an1}", "{an2}", "--out"]),
}


@pytest.mark.parametrize("command", list(CASES))
def test_a_kill_after_any_write_leaves_the_old_or_the_new_set(made, tmp_path, command):
    old_argv, new_argv = (
        [a.format(**{p.name: p for p in made.iterdir()}) for a in v] for v in CASES[command]
    )
    old = tmp_path / "old"
    assert main([*old_argv, str(old)]) == 0
    (old / "notes.txt").write_text("the user's")
    old_snap = snapshot(old)
    ref = tmp_path / "ref"
    shutil.copytree(old, ref)
    assert _run_killed([*new_argv, str(ref)], None) == 0
    new_snap = snapshot(ref)
    assert new_snap != old_snap and new_snap["notes.txt"] == old_snap["notes.txt"]
    tried = 0
    for k in range(1, 100):
        work = tmp_path / f"w{k}"
        shutil.copytree(old, work)
        code = _run_killed([*new_argv, str(work)], k)
        if code == 0:
            break  # finished before step k: every step has been tried
        assert code == 70, code
        tried += 1
        assert snapshot(work) in (old_snap, new_snap), k
        assert main([*new_argv, str(work)]) == 0  # the next writer cleans up and completes
        assert snapshot(work) == new_snap, k
        assert not [p.name for p in tmp_path.iterdir() if "staging" in p.name], k
    assert tried >= 4, tried
