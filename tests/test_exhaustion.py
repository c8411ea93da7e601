"""Exhaustion is the user's to fix: a full disk, oversized images and hostile YAML are one line each.

The full disk is real: a small tmpfs mounted in a private user and mount namespace
(``unshare -rm``), where one Python process runs each command's real CLI into it at several
sizes. Every run must exit 0 or exit 2 with one line, and leave no temporary or half-written
file behind. Where user namespaces are not allowed the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from vitdistill.cli import main

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
SYN = "synthetic:shapes?n=12&n_val=8&size=16&types=3"
FAST = ["--batch-size", "4", "--permutations", "0", "--rotation-images", "0", "--no-progress"]
RECIPE = {
    "model": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 16, "patch_size": 4, "embed_dim": 16,
                                                         "depth": 2, "num_heads": 2}},
    "data": {"train": SYN, "batch_size": 8},
    "epochs": 1,
    "device": "cpu",
    "aug": {"auto_augment": None, "reprob": 0.0},
    "log": {"progress": False},
}  # fmt: skip
SRC = str(Path(__file__).parents[1] / "src")


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
        capture_output=True,
    )
    return r.returncode == 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps(RECIPE))
    assert main(["train", "--config", str(recipe), "--output", str(root / "run")]) == 0
    assert main(["analyze", *TINY, "--data", SYN, "--images", "4", *FAST, "--out", str(root / "an")]) == 0
    return root


RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, os, subprocess, sys
    from vitdistill.cli import main
    mnt, cases = sys.argv[1], json.loads(sys.argv[2])
    report = []
    for size, argv in cases:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size.strip('full')}", "tmpfs", mnt], check=True)
        if size.startswith("full"):  # fill it up: only empty files still fit
            fd = os.open(mnt + "/filler", os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"x" * 4096)
            os.close(fd)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except BaseException as e:  # a traceback: reported, not raised
                code = f"{type(e).__name__}: {e}"
        files = []
        for dirpath, dirs, names in os.walk(mnt):
            for n in [x for x in names + dirs if x != "filler"]:
                files.append(os.path.relpath(os.path.join(dirpath, n), mnt))
        bad_json = []
        for f in files:
            if f.endswith(".json"):
                try:
                    json.loads(open(mnt + "/" + f).read())
                except Exception:
                    bad_json.append(f)
        fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}")]
        report.append({"size": size, "argv": argv[0], "code": code, "err": err.getvalue(), "files": files,
                       "bad_json": bad_json, "open": [f for f in fds if f.startswith(mnt)]})
        subprocess.run(["umount", "-l", mnt], check=True)
    print(json.dumps(report))
    """
)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(inputs, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("no user namespaces here: cannot mount a small tmpfs")
    out = str(mnt / "out")
    commands = [
        ["analyze", *TINY, "--data", SYN, "--images", "4", *FAST, "--out", out],
        ["compare", str(inputs / "an"), "--out", out],
        ["export", str(inputs / "run"), "--out", out],
        ["results", str(inputs / "run"), "--out", out],
        ["train", "--config", str(inputs / "recipe.yaml"), "--output", out],
        ["eval", str(inputs / "run"), "--data", SYN, "--device", "cpu", "--json", str(mnt / "eval.json")],
    ]
    cases = [(size, argv) for argv in commands for size in ("full40k", "40k", "400k")]
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    r = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", RUNNER, str(mnt), json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    full = set()
    for case in report:
        assert case["code"] in (0, 2), case
        assert not case["bad_json"] and not case["open"], case  # no half-written JSON, no file left open
        leftovers = [f for f in case["files"] if f.endswith(".tmp") or "staging" in f or "probe" in f]
        assert not leftovers, case
        if case["code"] == 2:
            lines = case["err"].strip().splitlines()  # progress lines may come before it
            assert [x for x in lines if ": error: " in x] == lines[-1:], case
            assert "No space left on device" in lines[-1] and "Traceback" not in case["err"], case
            full.add(case["argv"])
            if case["argv"] != "train":  # nothing at all of a set that did not fit
                assert case["files"] in ([], ["out"]), case
    assert full == {"analyze", "compare", "export", "results", "train", "eval"}, report


def _bomb_png(path: Path, side: int) -> None:
    """A valid 1-bit PNG of side x side black pixels: a tiny file that decodes to side**2 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    row = b"\0" + b"\0" * ((side + 7) // 8)
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    idat = zlib.compress(row * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_oversized_images_are_skipped_and_counted(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(data / "a" / f"{i}.png")
    _bomb_png(data / "a" / "bomb.png", 30000)  # 900 million pixels in about 100 kB
    Image.new("RGB", (64, 64)).save(data / "a" / "big.png")
    res = tmp_path / "res"
    monkeypatch.setenv("VITDISTILL_MAX_IMAGE_PIXELS", "3000")  # the limit is a setting: 64x64 is over it
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--no-plots", "--out", str(res)]) == 0
    s = json.loads((res / "summary.json").read_text())
    assert s["images"] == 3 and s["images_skipped"] == 2, s
    err = capsys.readouterr().err
    assert "64x64 = 4096 pixels, over the limit of 3000" in err and "more than 3000 pixels" in err, err
    monkeypatch.setenv("VITDISTILL_MAX_IMAGE_PIXELS", "lots")
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--no-plots", "--out", str(res)]) == 2
    monkeypatch.delenv("VITDISTILL_MAX_IMAGE_PIXELS")  # the default lets 64x64 through, not the bomb
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--no-plots", "--out", str(res)]) == 0
    s = json.loads((res / "summary.json").read_text())
    assert s["images"] == 4 and s["images_skipped"] == 1, s


def _laughs(levels: int = 9, indent: str = "") -> str:
    lines = [f"{indent}l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def _flow_laughs(levels: int = 9) -> str:
    items = ["&l0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


HOSTILE_YAML = {
    "duplicate section": "optim:\n  lr: 0.1\nepochs: 1\noptim:\n  weight_decay: 0.0\n",
    "duplicate key inside": "optim:\n  lr: 0.1\n  lr: 0.2\n",
    "duplicate key spelt two ways": "model:\n  kwargs:\n    1: a\n    0x1: b\n",
    "duplicate null key": "epochs: 1\n~: 1\nnull: 2\n",
    "aliases in model.kwargs": "model:\n  kwargs:\n" + _laughs(indent="    ") + "\n",
    "deep nesting": "model:\n  kwargs:\n    x: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep block nesting": "".join("  " * i + f"k{i}:\n" for i in range(3000)),
    "self-reference": "model:\n  kwargs: &k {a: *k}\n",
}
HOSTILE_SET = {
    "duplicate key": "{a: 1, a: 2}",
    "aliases": _flow_laughs(),
    "deep nesting": "[" * 5000 + "]" * 5000,
    "self-reference": "&k {a: *k}",
}


@pytest.mark.parametrize("name", list(HOSTILE_YAML))
def test_hostile_yaml_files_are_one_line(name, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(HOSTILE_YAML[name])
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cfg) in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", list(HOSTILE_SET))
def test_hostile_set_values_are_one_line(name, tmp_path, capsys):
    (tmp_path / "ok.yaml").write_text("epochs: 1\n")
    value = HOSTILE_SET[name]
    for argv in (
        ["train", "--config", str(tmp_path / "ok.yaml"), "--set", f"model.kwargs={value}"],
        ["train", "--config", str(tmp_path / "ok.yaml"), "--set", f"optim={value}"],
        ["analyze", *TINY, "--data", SYN, "--set", f"extra={value}", "--out", str(tmp_path / "an")],
        ["inspect", "vit_tiny_patch16_224", "--set", f"extra={value}"],
    ):
        assert main(argv) == 2, (argv[0], name)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--set" in err[0], err
    assert not list(tmp_path.glob("an*")) and not Path("runs/ok").exists()


def test_files_follow_the_umask(inputs, tmp_path):
    script = (
        "import json, os, sys; os.umask(0o027); from vitdistill.cli import main; "
        "sys.exit(max(main(a) for a in json.loads(sys.argv[1])))"
    )
    an = ["analyze", *TINY, "--data", SYN, "--images", "4", *FAST, "--out", str(tmp_path / "an")]
    ex = ["export", str(inputs / "run"), "--out", str(tmp_path / "ex")]
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-c", script, json.dumps([an, ex])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    for folder in (tmp_path / "an", tmp_path / "ex"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
        for p in folder.rglob("*"):
            want = 0o750 if p.is_dir() else 0o640
            assert stat.S_IMODE(p.stat().st_mode) == want, p
