"""Generated user input never gives a traceback or a partial file.

Hypothesis writes configs, ``--set`` pairs, data specs, image files and checkpoint files; each
goes through the real command line, which must exit 0, or exit 2 with exactly one error line,
and leave no temporary file or staging folder. Examples are few and tiny (CI has two cores).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vitdistill.cli import main

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=1"]
FAST = [
    "--batch-size", "4", "--permutations", "0", "--rotation-images", "0", "--no-plots", "--no-progress",
    "--images", "4",
]  # fmt: skip
SYN = "synthetic:shapes?n=8&n_val=4&size=16&types=2"
FEW = settings(
    max_examples=int(os.environ.get("VITDISTILL_HYPOTHESIS_EXAMPLES", "12")),
    deadline=None,
    derandomize=os.environ.get("VITDISTILL_HYPOTHESIS_EXAMPLES") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def clean_cli(argv: list[str], watch: Path) -> int:
    """Run the CLI; assert exit 0, or exit 2 with one error line; and no leftovers under ``watch``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)  # an exception here is a traceback: the test fails with it
    lines = err.getvalue().strip().splitlines()
    errors = [x for x in lines if ": error: " in x]
    assert code in (0, 2), (code, lines[-3:])
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    left = [
        str(p)
        for p in watch.rglob("*")
        if p.name.endswith(".tmp") or ".staging-" in p.name or p.name.startswith(".vitdistill-probe")
    ]
    assert not left, left
    return code


# ----------------------------------------------------------------------------- configs
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)  # fmt: skip
KEYS = [
    "epochs", "seed", "amp", "optim.lr", "optim.weight_decay", "optim.grad_accum", "loss.alpha",
    "loss.temperature", "model.kwargs", "model.remedy", "model.width", "aug.scale", "aug.mixup",
    "aug.reprob", "data.batch_size", "data.eval_crop_pct", "sched.warmup_epochs", "log.interval",
    "ema.decay", "teacher.name", "nonsense", "optim", "model",
]  # fmt: skip


def _base() -> dict:
    return {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 16, "patch_size": 4, "embed_dim": 16,
                                                             "depth": 1, "num_heads": 2}},
        "data": {"train": SYN, "batch_size": 4, "steps_per_epoch": 1},
        "epochs": 1,
        "device": "cpu",
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }  # fmt: skip


def _put(cfg: dict, key: str, value) -> None:
    *head, last = key.split(".")
    node = cfg
    for h in head:
        if not isinstance(node.get(h), dict):
            node[h] = {}
        node = node[h]
    node[last] = value


plausible = st.one_of(
    st.integers(0, 3),
    st.floats(0, 2),
    st.sampled_from(["none", "lift", "bf16", "fp16", "widelast", [0.5, 1.0], {"depth": 1}, 1e-3, 1e20]),
)


@FEW
@given(changes=st.dictionaries(st.sampled_from(KEYS), plausible | values, max_size=2), dup=st.booleans())
def test_generated_configs(changes, dup):
    with tempfile.TemporaryDirectory() as d:
        cfg = _base()
        for k, v in changes.items():
            _put(cfg, k, v)
        text = yaml.safe_dump(cfg, sort_keys=False)
        if dup:  # a key given twice: must be refused
            text += text.splitlines()[0].split(":")[0] + ": {}\n"
        (Path(d) / "c.yaml").write_text(text)
        code = clean_cli(["train", "--config", f"{d}/c.yaml", "--output", f"{d}/run"], Path(d))
        assert not (dup and code == 0)
        if code == 0:
            assert json.loads((Path(d) / "run" / "summary.json").read_text())["last"]


# ----------------------------------------------------------------------------- --set strings
set_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=10))
set_values = st.one_of(
    st.text(max_size=30), values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())
)


@FEW
@given(
    pairs=st.lists(st.tuples(set_keys, set_values | plausible.map(str)), min_size=1, max_size=2),
    raw=st.none() | st.text(max_size=20),
)
def test_generated_set_strings(pairs, raw):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.yaml").write_text(yaml.safe_dump(_base()))
        sets = [x for k, v in pairs for x in ("--set", f"{k}={v}")] + (
            ["--set", raw] if raw is not None else []
        )
        clean_cli(["train", "--config", f"{d}/c.yaml", "--output", f"{d}/run", *sets], Path(d))
        clean_cli(["analyze", *TINY, "--data", SYN, *FAST, "--out", f"{d}/an", *sets], Path(d))


# ----------------------------------------------------------------------------- data specs
queries = st.dictionaries(
    st.sampled_from(["n", "n_val", "size", "types", "seed", "classes", "bogus"]),
    st.one_of(st.integers(-3, 40).map(str), st.text(max_size=4)),
    max_size=4,
)


@FEW
@given(
    kind=st.sampled_from(["synthetic", "path", "list"]),
    name=st.sampled_from(["shapes", "noise", "", "nope"]),
    query=queries,
    lines=st.lists(st.text(max_size=12), max_size=4),
)
def test_generated_data_specs(kind, name, query, lines):
    with tempfile.TemporaryDirectory() as d:
        if kind == "synthetic":
            spec = f"synthetic:{name}?" + "&".join(f"{k}={v}" for k, v in query.items())
        elif kind == "path":
            spec = f"{d}/{name or 'x'}"
        else:
            Image.new("RGB", (16, 16)).save(f"{d}/ok.png")
            Path(d, "list.txt").write_text("\n".join(["ok.png", *lines]) + "\n")
            spec = f"{d}/list.txt"
        clean_cli(["analyze", *TINY, "--data", spec, *FAST, "--out", f"{d}/an"], Path(d))


# ----------------------------------------------------------------------------- image files
@st.composite
def image_bytes(draw) -> bytes:
    how = draw(st.sampled_from(["random", "truncated", "valid", "header"]))
    if how == "random":
        return draw(st.binary(max_size=200))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "I;16", "P", "1", "F", "LA", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "TIFF", "BMP", "GIF"]))
    arr = np.random.default_rng(draw(st.integers(0, 9))).integers(0, 255, (h, w), dtype=np.uint8)
    img = Image.fromarray(arr, "L").convert(mode if mode not in ("I;16", "F") else "I")
    if mode == "F":
        img = img.convert("F")
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        Image.fromarray(arr, "L").save(buf, format="PNG")
    data = buf.getvalue()
    if how == "truncated":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "header":  # a valid header claiming a huge image
        return data[:16] + struct.pack(">II", 60000, 60000) + data[24:]
    return data


@FEW
@given(files=st.lists(image_bytes(), min_size=1, max_size=3), ext=st.sampled_from(["png", "jpg", "tif"]))
def test_generated_image_files(files, ext):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "data" / "a").mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(f"{d}/data/a/good.png")
        for i, b in enumerate(files):
            Path(d, "data", "a", f"gen{i}.{ext}").write_bytes(b)
        code = clean_cli(["analyze", *TINY, "--data", f"{d}/data", *FAST, "--out", f"{d}/an"], Path(d))
        assert code == 0  # unreadable images are skipped and counted, never fatal by default
        s = json.loads(Path(d, "an", "summary.json").read_text())
        assert s["images"] + s["images_skipped"] == min(4, len(files) + 1)


# ----------------------------------------------------------------------------- checkpoint files
@st.composite
def checkpoint_file(draw) -> tuple[str, bytes]:
    import safetensors.torch
    import torch

    how = draw(st.sampled_from(["random", "safetensors", "truncated", "torch", "model", "model"]))
    if how == "model":  # the analysed model's own weights, one of them spoilt
        import timm

        state = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1).state_dict()
        key = draw(st.sampled_from(sorted(state)))
        spoil = draw(st.sampled_from(["nan", "int8", "drop", "shape", "none"]))
        if spoil == "nan":
            state[key].view(-1)[0] = float("nan")
        elif spoil == "int8":
            state[key] = state[key].to(torch.int8)
        elif spoil == "drop":
            del state[key]
        elif spoil == "shape":
            state[key] = state[key].reshape(-1)[:1].clone()
        return "w.safetensors", safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
    if how == "random":
        return draw(st.sampled_from(["w.pt", "w.safetensors", "w.pth", "w.bin"])), draw(
            st.binary(max_size=300)
        )
    names = draw(st.lists(st.sampled_from(["cls_token", "pos_embed", "head.weight", "head.bias",
                                           "patch_embed.proj.weight", "blocks.0.norm1.weight", "x"]),
                          min_size=1, max_size=4, unique=True))  # fmt: skip
    dtypes = [torch.float32, torch.float16, torch.int8, torch.bool, torch.float64]
    state = {}
    for n in names:
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        t = torch.zeros(shape, dtype=draw(st.sampled_from(dtypes)))
        if t.is_floating_point() and t.numel() and draw(st.booleans()):
            t.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e30]))
        state[n] = t
    if how == "torch":
        buf = io.BytesIO()
        torch.save(state, buf)
        return "w.pt", buf.getvalue()
    data = safetensors.torch.save(state)
    if how == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return "w.safetensors", data


@FEW
@given(ckpt=checkpoint_file())
def test_generated_checkpoint_files(ckpt):
    name, data = ckpt
    with tempfile.TemporaryDirectory() as d:
        Path(d, name).write_bytes(data)
        clean_cli(
            ["analyze", *TINY, "--data", SYN, *FAST, "--checkpoint", f"{d}/{name}", "--out", f"{d}/an"],
            Path(d),
        )
