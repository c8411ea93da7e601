"""Every user mistake, in every command: exit status 2, exactly one line on stderr, no traceback.

The table holds the mistakes a careless user makes: wrong paths (missing, a file where a folder
is wanted, a parent that is a file, a place nobody can write to), out-of-range numbers, damaged
or empty files, options given a value that starts with '-', and mismatched inputs. Most run
in-process (``vitdistill.cli.main``); a few through a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from vitdistill.cli import main

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
DATA = "synthetic:shapes?n=12&n_val=6&size=16&types=3"
FAST = ["--no-progress", "--permutations", "0", "--rotation-images", "0", "--no-plots", "--images", "4"]
KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
UNWRITABLE = "/proc/vitdistill-nowhere/out"  # no one, root included, can create anything here


@pytest.fixture(scope="module")
def e(tmp_path_factory) -> dict[str, str]:
    """Paths the mistakes point at: real files and folders of every kind."""
    t = tmp_path_factory.mktemp("bad")
    (t / "file.txt").write_text("a plain file\n")
    (t / "empty.pt").write_bytes(b"")
    (t / "junk.pt").write_bytes(b"this is not a checkpoint")
    torch.save({"epoch": 3}, t / "meta.pt")
    (t / "emptydir").mkdir()
    imgs = t / "imgs" / "a"
    imgs.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(imgs / "0.png")
    cfg = {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": KW},
        "data": {"train": DATA, "batch_size": 6},
        "epochs": 1,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }
    (t / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (t / "broken.yaml").write_text("model: [unclosed\n")
    (t / "unknown.yaml").write_text(yaml.safe_dump({**cfg, "modle": {"name": "x"}}))
    assert main(["train", "--config", str(t / "cfg.yaml"), "--output", str(t / "run")]) == 0
    assert main(["analyze", *TINY, "--data", DATA, "--out", str(t / "ana"), *FAST]) == 0
    zero = t / "zero-run" / "checkpoints"
    zero.mkdir(parents=True)
    (zero / "last.pt").write_bytes(b"")
    for name, curves in (("junk-curves", b"PK\x03\x04 broken zip"), ("empty-curves", b"")):
        d = t / name
        d.mkdir()
        (d / "summary.json").write_text((t / "ana" / "summary.json").read_text())
        (d / "curves.npz").write_bytes(curves)
    (t / "badjson").mkdir()
    (t / "badjson" / "summary.json").write_text("{not json")
    (t / "nokeys").mkdir()
    (t / "nokeys" / "summary.json").write_text(json.dumps({"model": "m"}))
    _interrupt(t / "interrupted")
    (t / "notdemo").mkdir()
    (t / "notdemo" / "mine.txt").write_text("x")
    return {
        k: str(v) for k, v in {"t": t, "file": t / "file.txt", "run": t / "run", "ana": t / "ana"}.items()
    }


def p(e, *parts) -> str:
    return str(Path(e["t"], *parts))


MISTAKES = {
    # ---- analyze
    "analyze: no --data": lambda e: ["analyze", *TINY],
    "analyze: missing data": lambda e: ["analyze", *TINY, "--data", p(e, "nope"), "--out", p(e, "o")],
    "analyze: empty data folder": lambda e: [
        "analyze",
        *TINY,
        "--data",
        p(e, "emptydir"),
        "--out",
        p(e, "o"),
    ],
    "analyze: unknown synthetic set": lambda e: [
        "analyze",
        *TINY,
        "--data",
        "synthetic:nope",
        "--out",
        p(e, "o"),
    ],
    "analyze: model typo": lambda e: ["analyze", "vit_tiny_patch16_22", "--data", DATA, "--out", p(e, "o")],
    "analyze: CNN stage out of range": lambda e: [
        "analyze",
        "resnet18",
        "--data",
        DATA,
        "--layers",
        "9",
        "--out",
        p(e, "o"),
    ],
    "analyze: layer out of range": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--layers",
        "5",
        "--out",
        p(e, "o"),
    ],
    "analyze: layers not numbers": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--layers",
        "a,b",
        "--out",
        p(e, "o"),
    ],
    "analyze: batch size 0": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--batch-size",
        "0",
        "--out",
        p(e, "o"),
    ],
    "analyze: batch size text": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--batch-size",
        "x",
        "--out",
        p(e, "o"),
    ],
    "analyze: images 0": lambda e: ["analyze", *TINY, "--data", DATA, "--images", "0", "--out", p(e, "o")],
    "analyze: thresholds text": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--thresholds",
        "80,x",
        "--out",
        p(e, "o"),
    ],
    "analyze: threshold 150": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--thresholds",
        "150",
        "--out",
        p(e, "o"),
    ],
    "analyze: thresholds empty": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--thresholds",
        ",",
        "--out",
        p(e, "o"),
    ],
    "analyze: sep thresholds -10,50": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--sep-thresholds",
        "-10,50",
        "--out",
        p(e, "o"),
    ],
    "analyze: sep thresholds=-10,50": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--sep-thresholds=-10,50",
        "--out",
        p(e, "o"),
    ],
    "analyze: sep mode": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--sep-mode",
        "half",
        "--out",
        p(e, "o"),
    ],
    "analyze: permutations -1": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--permutations",
        "-1",
        "--out",
        p(e, "o"),
    ],
    "analyze: rotation threshold 0": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--rotation-threshold",
        "0",
        "--out",
        p(e, "o"),
    ],
    "analyze: rotation pairs 0": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--rotation-pairs",
        "0",
        "--out",
        p(e, "o"),
    ],
    "analyze: rank rtol -1": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--rank-rtol",
        "-1",
        "--out",
        p(e, "o"),
    ],
    "analyze: rank rtol 2": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--rank-rtol",
        "2",
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint every -1": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint-every",
        "-1",
        "--out",
        p(e, "o"),
    ],
    "analyze: crop pct 0": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--crop-pct",
        "0",
        "--out",
        p(e, "o"),
    ],
    "analyze: crop pct 1.5": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--crop-pct",
        "1.5",
        "--out",
        p(e, "o"),
    ],
    "analyze: workers -1": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--workers",
        "-1",
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint missing": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "nope.pt"),
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint 0 bytes": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "empty.pt"),
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint junk": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "junk.pt"),
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint without weights": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "meta.pt"),
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint empty folder": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "emptydir"),
        "--out",
        p(e, "o"),
    ],
    "analyze: checkpoint and pretrained": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--checkpoint",
        p(e, "junk.pt"),
        "--pretrained",
        "--out",
        p(e, "o"),
    ],
    "analyze: set without =": lambda e: [
        "analyze",
        *TINY,
        "--set",
        "depth",
        "--data",
        DATA,
        "--out",
        p(e, "o"),
    ],
    "analyze: cuda absent": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--device",
        "cuda",
        "--out",
        p(e, "o"),
    ],
    "analyze: out is a file": lambda e: ["analyze", *TINY, "--data", DATA, "--out", e["file"]],
    "analyze: out below a file": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--out",
        p(e, "file.txt", "sub"),
    ],
    "analyze: out not writable": lambda e: ["analyze", *TINY, "--data", DATA, "--out", UNWRITABLE],
    "analyze: resume with other options": lambda e: [
        "analyze",
        *TINY,
        "--data",
        DATA,
        "--out",
        p(e, "interrupted"),
        "--resume",
        "--seed",
        "7",
        *FAST,
    ],
    # ---- compare
    "compare: no folders": lambda e: ["compare", "--out", p(e, "c")],
    "compare: no --out": lambda e: ["compare", e["ana"]],
    "compare: missing folder": lambda e: ["compare", p(e, "nope"), "--out", p(e, "c")],
    "compare: folder without summary": lambda e: ["compare", p(e, "emptydir"), "--out", p(e, "c")],
    "compare: summary not JSON": lambda e: ["compare", p(e, "badjson"), "--out", p(e, "c")],
    "compare: summary lacks keys": lambda e: ["compare", p(e, "nokeys"), "--out", p(e, "c")],
    "compare: curves.npz junk": lambda e: ["compare", p(e, "junk-curves"), "--out", p(e, "c")],
    "compare: curves.npz 0 bytes": lambda e: ["compare", p(e, "empty-curves"), "--out", p(e, "c")],
    "compare: labels count": lambda e: ["compare", e["ana"], "--labels", "a,b", "--out", p(e, "c")],
    "compare: out is a file": lambda e: ["compare", e["ana"], "--out", e["file"]],
    "compare: out not writable": lambda e: ["compare", e["ana"], "--out", UNWRITABLE],
    "compare: out is an input": lambda e: ["compare", e["ana"], "--out", e["ana"]],
    # ---- train
    "train: no --config": lambda e: ["train"],
    "train: config missing": lambda e: ["train", "--config", p(e, "nope.yaml"), "--output", p(e, "r")],
    "train: config not YAML": lambda e: ["train", "--config", p(e, "broken.yaml"), "--output", p(e, "r")],
    "train: config unknown key": lambda e: ["train", "--config", p(e, "unknown.yaml"), "--output", p(e, "r")],
    "train: config is a folder": lambda e: ["train", "--config", p(e, "emptydir"), "--output", p(e, "r")],
    "train: set without =": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--set",
        "epochs",
        "--output",
        p(e, "r"),
    ],
    "train: set unknown key": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--set",
        "optim.lrr=1",
        "--output",
        p(e, "r"),
    ],
    "train: set epochs -1": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--set",
        "epochs=-1",
        "--output",
        p(e, "r"),
    ],
    "train: set epochs text": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--set",
        "epochs=x",
        "--output",
        p(e, "r"),
    ],
    "train: data missing": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--data",
        p(e, "nope"),
        "--output",
        p(e, "r"),
    ],
    "train: cuda absent": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--device",
        "cuda",
        "--output",
        p(e, "r"),
    ],
    "train: output is a file": lambda e: ["train", "--config", p(e, "cfg.yaml"), "--output", e["file"]],
    "train: output below a file": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "file.txt", "r"),
    ],
    "train: output not writable": lambda e: ["train", "--config", p(e, "cfg.yaml"), "--output", UNWRITABLE],
    "train: output holds a run": lambda e: ["train", "--config", p(e, "cfg.yaml"), "--output", e["run"]],
    "train: resume missing": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "r"),
        "--resume",
        p(e, "nope.pt"),
    ],
    "train: resume 0 bytes": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "r"),
        "--resume",
        p(e, "empty.pt"),
    ],
    "train: resume junk": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "r"),
        "--resume",
        p(e, "junk.pt"),
    ],
    "train: resume not a run checkpoint": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "r"),
        "--resume",
        p(e, "meta.pt"),
    ],
    "train: resume auto, 0-byte last.pt": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--output",
        p(e, "zero-run"),
        "--resume",
        "auto",
    ],
    "train: teacher checkpoint 0 bytes": lambda e: [
        "train",
        "--config",
        p(e, "cfg.yaml"),
        "--set",
        f"teacher.checkpoint={p(e, 'empty.pt')}",
        "--set",
        "loss.alpha=0.5",
        "--output",
        p(e, "r"),
    ],
    # ---- eval
    "eval: no --data": lambda e: ["eval", e["run"]],
    "eval: unknown model": lambda e: ["eval", "vit_tiny_patch16_22", "--data", DATA],
    "eval: folder neither run nor export": lambda e: ["eval", p(e, "emptydir"), "--data", DATA],
    "eval: batch size 0": lambda e: ["eval", e["run"], "--data", DATA, "--batch-size", "0"],
    "eval: max images 0": lambda e: ["eval", e["run"], "--data", DATA, "--max-images", "0"],
    "eval: workers -1": lambda e: ["eval", e["run"], "--data", DATA, "--workers", "-1"],
    "eval: checkpoint missing": lambda e: ["eval", e["run"], "--data", DATA, "--checkpoint", p(e, "nope.pt")],
    "eval: checkpoint 0 bytes": lambda e: [
        "eval",
        e["run"],
        "--data",
        DATA,
        "--checkpoint",
        p(e, "empty.pt"),
    ],
    "eval: model checkpoint 0 bytes": lambda e: [
        "eval",
        "vit_tiny_patch16_224",
        "--data",
        DATA,
        "--checkpoint",
        p(e, "empty.pt"),
    ],
    "eval: run with 0-byte last.pt": lambda e: ["eval", p(e, "zero-run"), "--data", DATA],
    "eval: data missing": lambda e: ["eval", e["run"], "--data", p(e, "nope")],
    "eval: json is a folder": lambda e: ["eval", e["run"], "--data", DATA, "--json", p(e, "emptydir")],
    "eval: json below a file": lambda e: [
        "eval",
        e["run"],
        "--data",
        DATA,
        "--json",
        p(e, "file.txt", "r.json"),
    ],
    "eval: json not writable": lambda e: ["eval", e["run"], "--data", DATA, "--json", UNWRITABLE],
    "eval: ema of a plain checkpoint": lambda e: [
        "eval",
        "vit_tiny_patch16_224",
        "--data",
        DATA,
        "--checkpoint",
        p(e, "meta.pt"),
        "--ema",
    ],
    # ---- export
    "export: no --out": lambda e: ["export", e["run"]],
    "export: not a run": lambda e: ["export", p(e, "emptydir"), "--out", p(e, "x")],
    "export: run with 0-byte last.pt": lambda e: ["export", p(e, "zero-run"), "--out", p(e, "x")],
    "export: checkpoint missing": lambda e: [
        "export",
        e["run"],
        "--checkpoint",
        p(e, "nope.pt"),
        "--out",
        p(e, "x"),
    ],
    "export: checkpoint junk": lambda e: [
        "export",
        e["run"],
        "--checkpoint",
        p(e, "junk.pt"),
        "--out",
        p(e, "x"),
    ],
    "export: out is a file": lambda e: ["export", e["run"], "--out", e["file"]],
    "export: out below a file": lambda e: ["export", e["run"], "--out", p(e, "file.txt", "x")],
    "export: out not writable": lambda e: ["export", e["run"], "--out", UNWRITABLE],
    # ---- inspect
    "inspect: no model": lambda e: ["inspect"],
    "inspect: unknown model": lambda e: ["inspect", "vit_tiny_patch16_22", "--no-throughput"],
    "inspect: batch size 0": lambda e: ["inspect", "vit_tiny_patch16_224", "--batch-size", "0"],
    "inspect: iters 0": lambda e: ["inspect", "vit_tiny_patch16_224", "--iters", "0"],
    "inspect: warmup -1": lambda e: ["inspect", "vit_tiny_patch16_224", "--warmup", "-1"],
    "inspect: amp choice": lambda e: ["inspect", "vit_tiny_patch16_224", "--amp", "fp8"],
    "inspect: set without =": lambda e: [
        "inspect",
        "vit_tiny_patch16_224",
        "--set",
        "depth",
        "--no-throughput",
    ],
    "inspect: cuda absent": lambda e: ["inspect", "vit_tiny_patch16_224", "--device", "cuda"],
    "inspect: json is a folder": lambda e: [
        "inspect",
        "vit_tiny_patch16_224",
        "--no-throughput",
        "--json",
        e["t"],
    ],
    "inspect: json not writable": lambda e: [
        "inspect",
        "vit_tiny_patch16_224",
        "--no-throughput",
        "--json",
        UNWRITABLE,
    ],
    "inspect: bad builder spec": lambda e: ["inspect", "lift:vit_tiny_patch16_224:abc", "--no-throughput"],
    # ---- demo
    "demo: out is a file": lambda e: ["demo", "--quick", "--out", e["file"]],
    "demo: out below a file": lambda e: ["demo", "--quick", "--out", p(e, "file.txt", "d")],
    "demo: out not writable": lambda e: ["demo", "--quick", "--out", UNWRITABLE],
    "demo: out holds other files": lambda e: ["demo", "--quick", "--out", p(e, "notdemo")],
    "demo: seeds 0": lambda e: ["demo", "--quick", "--seeds", "0", "--out", p(e, "d")],
    "demo: epochs -1": lambda e: ["demo", "--quick", "--epochs", "-1", "--out", p(e, "d")],
    "demo: img size 0": lambda e: ["demo", "--quick", "--img-size", "0", "--out", p(e, "d")],
    "demo: data missing": lambda e: ["demo", "--quick", "--data", p(e, "nope"), "--out", p(e, "d")],
    "demo: cuda absent": lambda e: ["demo", "--quick", "--device", "cuda", "--out", p(e, "d")],
    "demo: device choice": lambda e: ["demo", "--quick", "--device", "tpu", "--out", p(e, "d")],
    # ---- the command line itself
    "cli: unknown command": lambda e: ["analyse"],
    "cli: unknown option": lambda e: ["inspect", "vit_tiny_patch16_224", "--fast"],
}


def _interrupt(out: Path) -> None:
    """Leave in ``out`` the statistics checkpoint of an interrupted run (a resumable state)."""
    from vitdistill.analysis import report

    argv = ["analyze", *TINY, "--data", DATA, "--out", str(out), *FAST, "--checkpoint-every", "1"]
    real, report.write_outputs = report.write_outputs, _stop
    try:
        assert main(argv) == 130
    finally:
        report.write_outputs = real
    assert (out / ".analysis_state" / "rank0.pt").is_file()


def _stop(*args, **kwargs):
    raise KeyboardInterrupt  # as if killed just before the results were written


def _timeout(signum, frame):
    raise TimeoutError("the mistake was not caught before real work started")


def run_mistake(argv: list[str], capsys) -> tuple[int, str]:
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(120)
    try:
        try:
            rc = main(argv)
        except SystemExit as ex:  # argparse
            rc = ex.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name", list(MISTAKES))
def test_mistake_is_one_line_and_exit_2(name, e, capsys, monkeypatch):
    monkeypatch.chdir(e["t"])
    rc, err = run_mistake(MISTAKES[name](e), capsys)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert rc == 2 and len(lines) == 1, f"{name}: exit {rc}, stderr:\n{err}"
    assert lines[0].startswith("vitdistill"), lines[0]


def test_the_table_is_large_and_spans_every_command():
    assert len(MISTAKES) >= 60
    commands = {name.split(":")[0] for name in MISTAKES}
    assert {"analyze", "compare", "train", "eval", "export", "inspect", "demo"} <= commands


def test_specific_messages(e, capsys, monkeypatch):
    monkeypatch.chdir(e["t"])
    msg = {
        n: run_mistake(MISTAKES[n](e), capsys)[1]
        for n in MISTAKES
        if n.startswith(("analyze: sep", "train: resume 0"))
    }
    assert "--sep-thresholds=-10,50" in msg["analyze: sep thresholds -10,50"]
    assert (
        "(0, 100]" in msg["analyze: sep thresholds=-10,50"]
    )  # the attached form is read, then range-checked
    assert "empty" in msg["train: resume 0 bytes"]
    assert "is a file" in run_mistake(MISTAKES["analyze: out is a file"](e), capsys)[1]


@pytest.mark.parametrize(
    "name", ["analyze: sep thresholds -10,50", "train: output is a file", "compare: curves.npz junk"]
)
def test_mistake_in_a_real_process(name, e):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "vitdistill", *MISTAKES[name](e)],
        capture_output=True,
        text=True,
        env=env,
        cwd=e["t"],
        timeout=300,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_crop_pct_recorded_is_the_one_used(e, tmp_path):
    # 16 px input: crop 1.0 resizes to 16, 0.875 to 18 (the model's default 0.9, which a silently
    # ignored 0 used to give while 0.0 was recorded, to 17)
    for crop, size in (("1.0", 16), ("0.875", 18)):
        out = tmp_path / crop
        assert main(["analyze", *TINY, "--data", DATA, "--out", str(out), *FAST, "--crop-pct", crop]) == 0
        s = json.loads((out / "summary.json").read_text())
        assert s["options"]["crop_pct"] == s["provenance"]["transform"]["crop_pct"] == float(crop)
        assert f"Resize(size={size}," in s["provenance"]["transform_repr"]


def test_unreadable_images_give_one_line_each(e, tmp_path, capsys):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(root / f"{i}.png")
    (root / "bad1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "bad2.jpg").write_bytes(b"")
    out = tmp_path / "o"
    assert main(["analyze", *TINY, "--data", str(tmp_path / "imgs"), "--out", str(out), *FAST[:-2]]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(x.startswith("vitdistill: skipping unreadable image") for x in err), err
    assert json.loads((out / "summary.json").read_text())["images_skipped"] == 2
