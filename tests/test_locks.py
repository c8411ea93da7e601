"""Run folders are owned: a second train / analyze / demo into a folder in use fails at once.

The holder is a real ``vitdistill train`` in another process; the competitors run in this one
(``flock`` locks belong to open files, so a second command in any process conflicts).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vitdistill.cli import main
from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.errors import UserError
from vitdistill.utils.lock import LOCK_NAME, FolderLock, folder_lock, hold_folder, releases_folders

DATA = "synthetic:shapes?n=192&n_val=16&size=16&types=3"
KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)


def _config(path: Path, epochs: int) -> Path:
    cfg = {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": KW},
        "data": {"train": DATA, "batch_size": 16},
        "epochs": epochs,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"holder ended early ({proc.returncode}): {err[-2000:]}")
        assert time.time() < end, "timed out waiting for the holder"
        time.sleep(0.05)


def _one_line_error(capsys, argv: list[str]) -> str:
    t0 = time.time()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert time.time() - t0 < 60  # "at once": no waiting for the holder (generous for a loaded CI)
    return err


def test_second_command_into_a_folder_in_use_fails_and_a_killed_holder_never_blocks(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = _config(tmp_path / "c.yaml", epochs=4)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    holder = subprocess.Popen(
        [sys.executable, "-m", "vitdistill", "train", "--config", str(cfg), "--output", str(run)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: (run / "checkpoints" / "last.pt").is_file(), holder)
        os.kill(holder.pid, signal.SIGSTOP)  # frozen mid-run: the folder is in use
        assert (run / LOCK_NAME).read_text().split() == [str(holder.pid), "train"]
        before = sorted(p.name for p in run.rglob("*"))
        argvs = {
            "train": ["train", "--config", str(cfg), "--output", str(run), "--resume", "auto"],
            "train (fresh)": ["train", "--config", str(cfg), "--output", str(run)],
            "analyze": [
                "analyze",
                "--checkpoint",
                str(run),
                "--data",
                DATA,
                "--out",
                str(run),
                "--no-progress",
            ],
            "demo": ["demo", "--quick", "--out", str(run), "--no-progress"],
        }
        for what, argv in argvs.items():
            err = _one_line_error(capsys, argv)
            assert f"in use by vitdistill train (PID {holder.pid})" in err, (what, err)
        assert sorted(p.name for p in run.rglob("*")) == before  # the competitors wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_NAME).is_file()  # the dead holder's lock file stays behind ...
    done = ckpt_mod.load(run / "checkpoints" / "last.pt")["epoch"]
    assert done < 4
    rc = main(
        ["train", "--config", str(cfg), "--output", str(run), "--resume", "auto"]
    )  # ... and is no obstacle
    assert rc == 0, capsys.readouterr().err
    assert ckpt_mod.load(run / "checkpoints" / "last.pt")["epoch"] == 4
    assert not (run / LOCK_NAME).exists()  # released at the end


def test_lock_is_exclusive_across_open_files_and_released_in_order(tmp_path):
    a = FolderLock(tmp_path / "f", "train")
    with pytest.raises(UserError, match=rf"in use by vitdistill train \(PID {os.getpid()}\)"):
        FolderLock(tmp_path / "f", "analyze")
    a.release()
    with folder_lock(tmp_path / "f", "analyze") as b:
        assert b is not None and (tmp_path / "f" / LOCK_NAME).read_text() == f"{os.getpid()} analyze\n"
    assert not (tmp_path / "f" / LOCK_NAME).exists()


def test_folder_created_only_for_the_lock_is_removed_on_failure(tmp_path):
    @releases_folders
    def failing(folder):
        hold_folder(folder, "analyze")
        raise UserError("bad input")

    with pytest.raises(UserError):
        failing(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError):
        failing(tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_other_ranks_of_a_torchrun_job_do_not_lock(tmp_path, monkeypatch):
    with folder_lock(tmp_path, "train"):
        monkeypatch.setenv("RANK", "1")
        with folder_lock(tmp_path, "train") as lock:
            assert lock is None
