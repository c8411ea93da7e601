"""A crafted pickle never runs: every command that reads a file refuses it with one line, exit 2.

Each planted file holds an object whose ``__reduce__`` creates a marker file when unpickled in
full. The commands must refuse the file (one line on stderr, exit 2) and the marker must never
appear. With the explicit opt-in a legacy checkpoint (weights next to an argparse Namespace, as
DeiT writes them) loads.
"""

from __future__ import annotations

import argparse
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from vitdistill.cli import main

TINY_KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
TINY = ["vit_tiny_patch16_224"] + [a for k, v in TINY_KW.items() for a in ("--set", f"{k}={v}")]
DATA = "synthetic:shapes?n=12&n_val=6&size=16&types=3"  # 6 classes
FAST = ["--permutations", "0", "--rotation-images", "0", "--no-plots", "--no-progress", "--images", "4"]


class Payload:
    """Unpickling this creates ``marker`` (an empty file): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def tiny_model(num_classes: int = 6):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=num_classes, **TINY_KW)


def plant(path: Path, marker: Path, kind: str = "state") -> Path:
    """A torch file whose unpickling runs the payload; ``kind`` picks the shape around it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = tiny_model().state_dict()
    obj = {
        "state": {"state_dict": sd, "args": Payload(marker)},
        "run": {"student": sd, "epoch": 1, "model_spec": None, "extra": Payload(marker)},
        "analysis": {"fingerprint": "x", "done": [], "skipped": 0, "evil": Payload(marker)},
    }[kind]
    torch.save(obj, path)
    return path


def _refused(capsys, argv: list[str], marker: Path) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), f"the payload ran: {argv}"
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_planted_file_really_runs_code_when_fully_unpickled(tmp_path):
    """The harness can fail: fully unpickling a planted file does write the marker."""
    marker = tmp_path / "ran"
    torch.load(plant(tmp_path / "x.pt", marker), weights_only=False)
    assert marker.exists()


def _run_folder(root: Path, marker: Path) -> Path:
    plant(root / "checkpoints" / "last.pt", marker, "run")
    return root


def _train_cfg(tmp_path: Path, **sections) -> Path:
    cfg = {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": dict(TINY_KW)},
        "data": {"train": DATA, "batch_size": 6},
        "epochs": 1,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
        **sections,
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _teacher(ckpt: Path, name: bool = True) -> dict:
    t = {"checkpoint": str(ckpt)}
    if name:
        t.update(name="vit_tiny_patch16_224", kwargs=dict(TINY_KW))
    return {"teacher": t, "loss": {"alpha": 0.5}}


def _zipped_legacy(path: Path, marker: Path) -> Path:
    """The payload in the legacy (pre-1.6, non-zip) torch format."""
    torch.save(
        {"model": {"w": torch.zeros(2)}, "x": Payload(marker)}, path, _use_new_zipfile_serialization=False
    )
    return path


LOAD_PATHS = {
    "analyze --checkpoint FILE": lambda t, m: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        str(plant(t / "w.pth", m)),
        "--out",
        str(t / "o"),
        *FAST,
    ],
    "analyze --checkpoint legacy-format FILE": lambda t, m: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        str(_zipped_legacy(t / "old.pth", m)),
        "--out",
        str(t / "o"),
        *FAST,
    ],
    "analyze --checkpoint RUN_DIR": lambda t, m: [
        "analyze",
        "--data",
        DATA,
        "--checkpoint",
        str(_run_folder(t / "run", m)),
        "--out",
        str(t / "o"),
        *FAST,
    ],
    "analyze --checkpoint DIR/pytorch_model.bin": lambda t, m: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        str(plant(t / "hf" / "pytorch_model.bin", m).parent),
        "--out",
        str(t / "o"),
        *FAST,
    ],
    "analyze --checkpoint DIR/model.pt": lambda t, m: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        str(plant(t / "d" / "model.pt", m).parent),
        "--out",
        str(t / "o"),
        *FAST,
    ],
    "analyze --resume (planted state)": lambda t, m: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--out",
        str(plant(t / "o" / ".analysis_state" / "rank0.pt", m, "analysis").parents[1]),
        "--resume",
        *FAST,
    ],
    "eval MODEL --checkpoint FILE": lambda t, m: [
        "eval",
        "vit_tiny_patch16_224",
        "--data",
        DATA,
        "--checkpoint",
        str(plant(t / "w.pth", m)),
        "--device",
        "cpu",
    ],
    "eval RUN": lambda t, m: ["eval", str(_run_folder(t / "run", m)), "--data", DATA, "--device", "cpu"],
    "eval RUN --checkpoint FILE": lambda t, m: [
        "eval",
        str(_run_folder(t / "run", t / "other-marker")),
        "--checkpoint",
        str(plant(t / "e.pt", m, "run")),
        "--data",
        DATA,
        "--device",
        "cpu",
    ],
    "export RUN": lambda t, m: ["export", str(_run_folder(t / "run", m)), "--out", str(t / "x")],
    "export RUN --checkpoint FILE": lambda t, m: [
        "export",
        str(t),
        "--checkpoint",
        str(plant(t / "e.pt", m, "run")),
        "--out",
        str(t / "x"),
    ],
    "train teacher.checkpoint FILE": lambda t, m: [
        "train",
        "--config",
        str(_train_cfg(t, **_teacher(plant(t / "t.pth", m)))),
        "--output",
        str(t / "r"),
    ],
    "train teacher.checkpoint RUN_DIR (no name)": lambda t, m: [
        "train",
        "--config",
        str(_train_cfg(t, **_teacher(_run_folder(t / "trun", m), name=False))),
        "--output",
        str(t / "r"),
    ],
    "train teacher.checkpoint RUN_DIR": lambda t, m: [
        "train",
        "--config",
        str(_train_cfg(t, **_teacher(_run_folder(t / "trun", m)))),
        "--output",
        str(t / "r"),
    ],
    "train model.checkpoint FILE": lambda t, m: [
        "train",
        "--config",
        str(
            _train_cfg(
                t,
                model={
                    "name": "vit_tiny_patch16_224",
                    "kwargs": dict(TINY_KW),
                    "checkpoint": str(plant(t / "s.pth", m)),
                },
            )
        ),
        "--output",
        str(t / "r"),
    ],
    "train --resume FILE": lambda t, m: [
        "train",
        "--config",
        str(_train_cfg(t)),
        "--output",
        str(t / "r"),
        "--resume",
        str(plant(t / "e.pt", m, "run")),
    ],
    "train --resume auto": lambda t, m: [
        "train",
        "--config",
        str(_train_cfg(t)),
        "--output",
        str(_run_folder(t / "r", m)),
        "--resume",
        "auto",
    ],
    "compare (planted curves.npz)": lambda t, m: [
        "compare",
        str(_planted_analysis(t / "a", m)),
        "--out",
        str(t / "c"),
    ],
}


def _planted_analysis(folder: Path, marker: Path) -> Path:
    """An analysis folder whose curves.npz holds a pickled object array."""
    folder.mkdir(parents=True)
    summary = {
        "model": "m",
        "svd": {"p99": {}},
        "pca": {"global": {}},
        "sep": {},
        "layers": [],
        "channels": 4,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    with zipfile.ZipFile(folder / "curves.npz", "w") as z:
        buf = np.lib.format.header_data_from_array_1_0(np.empty(1, dtype=object))
        with z.open("layers.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, buf)
            pickle.dump(np.array([Payload(marker)], dtype=object), f, protocol=3)
    return folder


@pytest.mark.parametrize("path", list(LOAD_PATHS))
def test_planted_pickle_is_refused(path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PAYLOAD-RAN"
    err = _refused(capsys, LOAD_PATHS[path](tmp_path, marker), marker)
    assert "pickle" in err or "not a curves file" in err, err


def test_planted_npz_really_runs_code_with_allow_pickle(tmp_path):
    marker = tmp_path / "ran"
    with np.load(_planted_analysis(tmp_path / "a", marker) / "curves.npz", allow_pickle=True) as z:
        z["layers"]
    assert marker.exists()


def test_refusal_names_the_opt_in(tmp_path, capsys):
    marker = tmp_path / "m"
    err = _refused(capsys, LOAD_PATHS["analyze --checkpoint FILE"](tmp_path, marker), marker)
    assert err.endswith("pass --trust-checkpoint") and "io.open" in err
    err = _refused(capsys, LOAD_PATHS["train teacher.checkpoint FILE"](tmp_path, marker), marker)
    assert "teacher.trust_checkpoint" in err
    err = _refused(capsys, LOAD_PATHS["train model.checkpoint FILE"](tmp_path, marker), marker)
    assert "model.trust_checkpoint" in err


def _legacy(path: Path, num_classes: int = 6) -> Path:
    """DeiT-style: the weights beside an argparse Namespace (harmless, but not tensors only)."""
    torch.save({"model": tiny_model(num_classes).state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    return path


def test_legacy_checkpoint_loads_with_the_opt_in(tmp_path, capsys):
    ck = _legacy(tmp_path / "deit.pth")
    args = ["analyze", *TINY, "--data", DATA, "--checkpoint", str(ck), "--out", str(tmp_path / "o"), *FAST]
    assert main(args) == 2 and "--trust-checkpoint" in capsys.readouterr().err
    assert main([*args, "--trust-checkpoint"]) == 0
    assert (tmp_path / "o" / "summary.json").is_file()
    ev = ["eval", "vit_tiny_patch16_224", "--data", DATA, "--checkpoint", str(ck), "--device", "cpu"]
    assert main(ev) == 2
    capsys.readouterr()
    assert main([*ev, "--trust-checkpoint"]) == 2  # built without TINY_KW: shapes differ, but it was read
    assert "does not fit" in capsys.readouterr().err


def test_legacy_teacher_and_student_load_with_the_opt_in(tmp_path, capsys):
    ck = _legacy(tmp_path / "deit.pth")
    sections = {
        **_teacher(ck),
        "model": {"name": "vit_tiny_patch16_224", "kwargs": dict(TINY_KW), "checkpoint": str(ck)},
    }
    cfg = _train_cfg(tmp_path, **sections)
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "r1")]) == 2
    assert "trust_checkpoint" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "r2"), "--trust-checkpoint"]) == 0
    over = ["--set", "teacher.trust_checkpoint=true", "--set", "model.trust_checkpoint=true"]
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "r3"), *over]) == 0
