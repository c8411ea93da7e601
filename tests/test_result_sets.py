"""Results appear as a whole or not at all: a writer killed at any step leaves the old set or the new one.

A folder holds a complete older analysis (with PDFs, and the user's own files). The writer of a
newer analysis (other images, saved features, no PDFs) runs in a forked child that dies
(``os._exit``) right after step k, for every k until the writer completes. After each kill the
folder must equal the old set or the new set exactly, with no temporary file in it; the next
writer's clean-up must remove every leftover and keep the user's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vitdistill.analysis import report
from vitdistill.cli import main
from vitdistill.utils import io
from vitdistill.utils.io import SET_MANIFEST, clean_stale_sets, result_set

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
DATA = "synthetic:shapes?n=12&n_val=8&size=16&types=3"
FAST = [
    "--batch-size",
    "4",
    "--permutations",
    "2",
    "--bootstrap",
    "20",
    "--rotation-images",
    "3",
    "--no-progress",
]
USER = ("notes.txt", "mine")  # the user's own entries in the result folder


def snapshot(folder: Path) -> dict[str, str]:
    """Content hash of every entry except the lock and the user's files (npz by array content)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[0] in USER or rel.name == ".vitdistill.lock":
            continue
        if p.is_dir():
            out[str(rel)] = "dir"
        elif p.name == SET_MANIFEST:  # its staging folder name is random
            out[str(rel)] = str(json.loads(p.read_text())["entries"])
        elif p.suffix == ".npz":  # zip members carry their write time
            with np.load(p) as z:
                out[str(rel)] = hashlib.sha256(
                    b"".join(k.encode() + z[k].tobytes() for k in sorted(z.files))
                ).hexdigest()
        else:
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def user_files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.parts[len(folder.parts)] in USER
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    old = root / "old"
    assert main(["analyze", *TINY, "--data", DATA, "--out", str(old), *FAST, "--images", "4", "--pdf"]) == 0
    (old / "notes.txt").write_text("mine, keep")
    (old / "mine").mkdir()
    (old / "mine" / "a.txt").write_text("also mine")
    captured = {}
    real = report.write_outputs

    def capture(out, *args):
        captured["args"] = args
        shutil.copytree(args[-1], root / "bins")  # the saved features, before the run removes them
        return real(out, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "write_outputs", capture)
        argv = [*TINY, "--data", DATA, "--out", str(root / "scratch"), *FAST, "--save-features", "--no-plots"]
        argv = ["analyze", *argv]  # no plots: a faster writer (the old set's plots must still go)
        assert main(argv) == 0
    return root, old, captured["args"]


def _write(setup, folder: Path, stop_at: int | None) -> int:
    """The real writer into ``folder`` (a copy of the old set) in a child; it dies after step ``stop_at``."""
    root, old, args = setup
    shutil.copytree(old, folder)
    bins = folder.parent / f"{folder.name}-bins"
    shutil.copytree(root / "bins", bins)
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            steps = []

            def hook(label: str) -> None:
                steps.append(label)
                if len(steps) == stop_at:
                    (folder.parent / f"{folder.name}.step").write_text(label)  # outside the folder
                    os._exit(70)

            io.after_step = hook
            report.write_outputs(folder, *args[:-1], bins)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_kill_at_every_step_leaves_the_old_or_the_new_set(setup, tmp_path):
    _, old, _ = setup
    old_snap, users = snapshot(old), user_files(old)
    assert _write(setup, tmp_path / "ref", None) == 0
    new_snap = snapshot(tmp_path / "ref")
    assert new_snap != old_snap and "features/manifest.json" in new_snap and "sep_curves.pdf" in old_snap
    assert not any(name.endswith(".png") for name in new_snap)
    assert user_files(tmp_path / "ref") == users
    tried, mixed, labels = 0, [], []
    for k in range(1, 200):
        work = tmp_path / f"w{k}"
        code = _write(setup, work, k)
        if code == 0:
            break  # the writer finished before step k: every step has been tried
        assert code == 70
        tried += 1
        labels.append((tmp_path / f"w{k}.step").read_text())
        after_kill = snapshot(work)
        if after_kill not in (old_snap, new_snap):
            mixed.append((k, labels[-1], sorted(set(after_kill.items()) ^ set(old_snap.items()))[:4]))
        clean_stale_sets(work, report.owned)  # what the next writer does first
        assert not list(tmp_path.glob(f".w{k}.staging-*")), labels[-1]
        assert snapshot(work) == after_kill, labels[-1]  # the clean-up changes no result
        assert user_files(work) == users, labels[-1]
    assert not mixed, mixed
    assert tried >= 15 and "swapped" in labels and "carried" in labels, labels
    print(f"kill points tried: {tried}, mixed folders: {len(mixed)}")


def test_a_failing_writer_leaves_the_old_set_and_no_staging(tmp_path):
    folder = tmp_path / "r"
    with result_set(folder) as stage:
        (stage / "a.txt").write_text("1")
    with pytest.raises(OSError), result_set(folder) as stage:
        (stage / "a.txt").write_text("2")
        raise OSError(28, "No space left on device")
    assert (folder / "a.txt").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert json.loads((folder / SET_MANIFEST).read_text())["entries"] == ["a.txt"]


def test_entries_of_the_old_set_go_others_stay(tmp_path):
    folder = tmp_path / "r"
    with result_set(folder) as stage:
        (stage / "a.txt").write_text("1")
        (stage / "b.txt").write_text("1")
    (folder / "user.txt").write_text("u")
    (folder / "legacy.png").write_text("old plot from a set without a manifest")
    with result_set(folder, owned=lambda name: name.endswith(".png")) as stage:
        (stage / "a.txt").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == [SET_MANIFEST, "a.txt", "user.txt"]
    assert (folder / "a.txt").read_text() == "2"


def _consistent(folder: Path) -> int:
    """The number of images of the one complete set in ``folder`` (every file agrees with summary.json)."""
    s = json.loads((folder / "summary.json").read_text())
    n = s["images"]
    assert len((folder / "images.txt").read_text().splitlines()) == n
    assert len((folder / "per_image.csv").read_text().splitlines()) == n + 1
    with np.load(folder / "curves.npz") as z:
        assert len(z["L1__svd_per_image_d"]) == n
    assert (folder / "sep_curves.pdf").exists() == s["options"]["pdf"]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".curves")]
    return n


@pytest.mark.slow
def test_a_real_analyze_killed_while_writing_leaves_one_whole_set(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    assert main(["analyze", *TINY, "--data", DATA, "--out", str(out), *FAST, "--images", "4", "--pdf"]) == 0
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "vitdistill", "analyze", *TINY, "--data", DATA, "--out", str(out), *FAST]
    proc = subprocess.Popen(
        [*argv, "--images", "8"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    end = time.time() + 300
    while not list(tmp_path.glob(".o.staging-*")) and proc.poll() is None and time.time() < end:
        time.sleep(0.002)
    time.sleep(0.05)  # somewhere inside the writing of the new set
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert _consistent(out) in (4, 8)
    assert main([*argv[3:], "--images", "6"]) == 0  # the next run into the folder tidies up
    assert _consistent(out) == 6 and not list(tmp_path.glob(".o.staging-*"))
