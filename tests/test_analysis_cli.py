"""`vitdistill analyze` / `compare` end to end on a tiny random-init ViT and generated images."""

from __future__ import annotations

import csv
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vitdistill.analysis import load_features
from vitdistill.cli import main
from vitdistill.data import build_dataset, eval_transform

TINY = ["vit_tiny_patch16_224", "--set", "img_size=32", "--set", "patch_size=8", "--set", "depth=2"]
FAST = [
    "--batch-size",
    "3",
    "--permutations",
    "3",
    "--bootstrap",
    "50",
    "--rotation-images",
    "5",
    "--no-progress",
]


def make_folder(root: Path, n: int = 8) -> Path:
    """An ImageFolder with RGB, grayscale, RGBA and 16-bit images of odd sizes."""
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = root / ("cat" if i % 2 else "dog")
        cls.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 255, size=(40, 44, 3), dtype=np.uint8)
        kind = i % 4
        if kind == 0:
            img = Image.fromarray(a)
        elif kind == 1:
            img = Image.fromarray(a[..., 0]).convert("L")
        elif kind == 2:
            img = Image.fromarray(np.dstack([a, np.full(a.shape[:2], 200, np.uint8)]), "RGBA")
        else:
            img = Image.fromarray(a[..., 1].astype(np.uint16) * 257)  # 16-bit grayscale
        img.save(cls / f"img{i:02d}.png")
    return root


def tiny_model(**kw):
    torch.manual_seed(0)  # analyze seeds with --seed (default 0) before building random weights
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, **kw).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs"))


def _reference_run(folder, out) -> list[str]:
    """The analyze arguments of the reference result; the torchrun test must repeat them exactly."""
    return [
        "analyze",
        *TINY,
        "--data",
        str(folder),
        "--out",
        str(out),
        *FAST,
        "--save-features",
        "--features-dtype",
        "float32",
    ]


@pytest.fixture(scope="module")
def result(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "a"
    rc = main(_reference_run(folder, out))
    assert rc == 0
    return out


def read_csv(p: Path) -> list[dict]:
    with open(p) as f:
        return list(csv.DictReader(f))


def test_outputs_exist_with_documented_keys(result):
    s = json.loads((result / "summary.json").read_text())
    for key in (
        "model",
        "images",
        "tokens",
        "channels",
        "svd",
        "pca",
        "sep",
        "rotation",
        "layers",
        "options",
        "provenance",
    ):
        assert key in s
    assert s["images"] == 8 and s["tokens"] == 16 and s["channels"] == 192 and s["layer"] == 1
    for t in ("80", "90", "95", "99"):
        assert (
            t in s["svd"]["p99"]
            and t in s["svd"]["mean"]
            and t in s["pca"]["p99"]
            and t in s["pca"]["global"]
        )
    for a in ("50", "60", "70", "80", "90"):
        assert a in s["sep"]["d"] and a in s["sep"]["d_over_D"]
    assert [e["layer"] for e in s["layers"]] == [0, 1] and "p99" in s["layers"][0]["svd"]
    assert s["rotation"]["images"] == 5 and s["rotation"]["pairs"] == 10
    assert s["provenance"]["weights"]["kind"] == "random init"
    assert s["provenance"]["versions"]["timm"] == timm.__version__
    assert s["provenance"]["allocator"]["torch_threads"] == torch.get_num_threads()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert s["provenance"]["allocator"]["glibc_large_buffers_on_heap"] is glibc
    assert s["options"]["permutations"] == 3 and s["provenance"]["model_kwargs"]["img_size"] == 32
    assert "caution" in s["sep"]
    assert len(read_csv(result / "per_image.csv")) == 8
    assert len((result / "images.txt").read_text().splitlines()) == 8
    for name in ("svd_rank_table", "sep_table", "layers_table"):
        for ext in ("md", "csv", "tex"):
            assert (result / f"{name}.{ext}").stat().st_size > 0
    header = (result / "sep_table.csv").read_text().splitlines()[0]
    assert header.startswith("Model,Dimension (D),Num Tokens,d/D @ 50%,d @ 50%")
    for png in ("layer_ranks", "svd_vs_dataset_hist", "pca_spectrum", "sep_curves", "rotation"):
        assert (result / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (result / ".analysis_state").exists()  # scratch features are cleaned up


def test_results_match_independent_recomputation(result, folder):
    """Features equal the model's own block outputs; per-image numbers equal numpy on them."""
    model = tiny_model()
    ds = build_dataset(str(folder), split="val", transform=eval_transform(model))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        for blk in model.blocks:
            h = blk(h)
    ref = h[:, model.num_prefix_tokens :].double().numpy()
    ids, feats = load_features(result, 1)
    assert ids.tolist() == list(range(8))
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-4)
    rows = read_csv(result / "per_image.csv")
    flat = ref.reshape(-1, 192)
    lam, vec = np.linalg.eigh(flat.T @ flat / flat.shape[0])
    vec = vec[:, ::-1]
    d_svd, d_pca = [], []
    for i, r in enumerate(rows):
        s = np.linalg.svd(ref[i], compute_uv=False)
        e = np.cumsum(s**2) / (s**2).sum()
        d = [int(np.argmax(e >= t) + 1) for t in (0.8, 0.9, 0.95, 0.99)]
        assert [int(r[f"svd_d{t}"]) for t in ("80", "90", "95", "99")] == d
        c = np.cumsum(((ref[i] @ vec) ** 2).sum(0)) / (ref[i] ** 2).sum()
        dp = [int(np.argmax(c >= t) + 1) for t in (0.8, 0.9, 0.95, 0.99)]
        assert [int(r[f"pca_d{t}"]) for t in ("80", "90", "95", "99")] == dp
        d_svd.append(d)
        d_pca.append(dp)
    s = json.loads((result / "summary.json").read_text())
    assert s["svd"]["p99"]["90"] == pytest.approx(np.percentile(np.array(d_svd)[:, 1], 99, method="linear"))
    assert s["pca"]["p99"]["99"] == pytest.approx(np.percentile(np.array(d_pca)[:, 3], 99, method="linear"))
    p = np.abs(np.fft.fft(flat, axis=-1)) ** 2
    mean = (100 * np.cumsum(p, -1) / p.sum(-1, keepdims=True)).mean(0)
    assert s["sep"]["d"]["80"] == int(np.argmax(mean >= 80) + 1)


def test_register_tokens_are_dropped(folder, tmp_path):
    out = tmp_path / "reg"
    rc = main(
        [
            "analyze",
            *TINY,
            "--set",
            "reg_tokens=4",
            "--set",
            "no_embed_class=true",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--layers",
            "last",
            "--images",
            "4",
            "--save-features",
            "--features-dtype",
            "float32",
            "--permutations",
            "0",
            "--rotation-images",
            "0",
            "--no-plots",
            "--no-progress",
        ]
    )
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["tokens"] == 16 and s["provenance"]["num_prefix_tokens"] == 5
    model = tiny_model(reg_tokens=4, no_embed_class=True)
    ds = build_dataset(str(folder), split="val", transform=eval_transform(model), max_images=4)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for blk in model.blocks:
            h = blk(h)
    _, feats = load_features(out, 1)
    np.testing.assert_allclose(feats, h[:, 5:].numpy(), rtol=1e-4, atol=1e-4)


def _bad(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    return err


def test_bad_inputs_give_one_line_and_exit_2(capsys, folder, tmp_path):
    assert (
        "does not exist"
        in _bad(capsys, ["analyze", *TINY, "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
        or "not" in capsys.readouterr().err
    )
    err = _bad(
        capsys, ["analyze", *TINY, "--data", str(folder), "--layers", "5", "--out", str(tmp_path / "o")]
    )
    assert "out of range" in err
    err = _bad(
        capsys, ["analyze", "vit_tiny_patch16_22", "--data", str(folder), "--out", str(tmp_path / "o")]
    )
    assert "vit_tiny_patch16_224" in err
    err = _bad(
        capsys, ["analyze", "resnet18", "--data", str(folder), "--layers", "5", "--out", str(tmp_path / "o")]
    )
    assert "out of range" in err and "5 tappable layers" in err  # a CNN's stages: stem + four
    ck = tmp_path / "w.pth"
    torch.save({"state_dict": tiny_model().state_dict()}, ck)
    err = _bad(
        capsys,
        [
            "analyze",
            "vit_tiny_patch16_224",
            "--set",
            "img_size=32",
            "--set",
            "patch_size=8",
            "--set",
            "depth=3",
            "--checkpoint",
            str(ck),
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert "missing" in err and "blocks.2" in err
    (tmp_path / "empty").mkdir()
    _bad(capsys, ["analyze", *TINY, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    _bad(capsys, ["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "c")])


def test_checkpoint_file_is_loaded_and_hashed(folder, tmp_path):
    from safetensors.torch import save_file

    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    ck = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ck))
    out = tmp_path / "ck"
    assert (
        main(
            [
                "analyze",
                *TINY,
                "--checkpoint",
                str(ck),
                "--data",
                str(folder),
                "--out",
                str(out),
                "--images",
                "3",
                "--layers",
                "last",
                "--permutations",
                "0",
                "--rotation-images",
                "0",
                "--no-plots",
                "--no-progress",
                "--save-features",
                "--features-dtype",
                "float32",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["weights"]["kind"] == "checkpoint" and len(s["weights"]["sha256"]) == 64
    ds = build_dataset(str(folder), split="val", transform=eval_transform(model), max_images=3)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    from vitdistill.models.taps import token_features

    with torch.no_grad():
        ref = token_features(model, x, [1])[0].numpy()
    np.testing.assert_allclose(load_features(out, 1)[1], ref, rtol=1e-4, atol=1e-4)


def test_resume_after_crash_equals_uninterrupted(folder, tmp_path):
    """A strict run dies on a corrupt image; after fixing it, --resume finishes with the same numbers."""
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths[:5] + [str(bad)] + paths[5:]) + "\n")
    args = [
        "analyze",
        *TINY,
        "--data",
        str(listing),
        "--batch-size",
        "2",
        "--checkpoint-every",
        "1",
        "--permutations",
        "2",
        "--bootstrap",
        "20",
        "--rotation-images",
        "4",
        "--no-plots",
        "--no-progress",
        "--strict",
    ]
    out = tmp_path / "r"
    assert main([*args, "--out", str(out)]) == 2
    ck = torch.load(out / ".analysis_state" / "rank0.pt", weights_only=True)  # tensors only
    assert sorted(ck["done"]) == [0, 1, 2, 3]
    Image.open(paths[0]).save(bad)  # fix the file
    assert main([*args, "--out", str(out), "--resume"]) == 0
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    assert a["images"] == b["images"] == 9
    for key in ("svd", "pca", "sep", "rotation"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True) or _close(
            a[key], b[key]
        )
    assert read_csv(out / "per_image.csv") == read_csv(ref / "per_image.csv")


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one(result, folder, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "vitdistill.cli",
        *_reference_run(folder, out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (out, result))
    assert a["provenance"]["world_size"] == 2
    for key in ("svd", "pca", "sep", "rotation", "layers"):
        assert _close(a[key], b[key]), key
    assert read_csv(out / "per_image.csv") == read_csv(result / "per_image.csv")
    ids, f2 = load_features(out, 1)
    np.testing.assert_array_equal(f2, load_features(result, 1)[1])


def test_compare_two_results(result, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(result), str(result), "--out", str(out), "--labels", "teacher,student"]) == 0
    md = (out / "svd_rank_table.md").read_text().splitlines()
    assert len(md) == 4 and "teacher" in md[2] and "student" in md[3]
    assert md[0].startswith("| Model | Dims |") and "SVD 80%" in md[0] and "Dataset 99%" in md[0]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "sep_table.tex").read_text().startswith("\\begin{table}")
    err = _bad(capsys, ["compare", str(result), "--out", str(out), "--labels", "a,b"])
    assert "labels" in err


def test_vitdistill_run_folder_rebuilds_lift_student(folder, tmp_path):
    import vitdistill.models as vm

    torch.manual_seed(1)
    m = vm.create_lift("vit_tiny_patch16_224", 96, img_size=32, patch_size=8, depth=2, num_classes=2)
    spec = {
        "name": "vit_tiny_patch16_224",
        "remedy": "lift",
        "width": 96,
        "num_wide": 1,
        "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2},
        "num_classes": 2,
    }
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("last.pt", "best.pt"):
        torch.save({"student": m.state_dict(), "model_spec": spec}, run / "checkpoints" / name)
    out = tmp_path / "lift"
    assert (
        main(
            [
                "analyze",
                "--checkpoint",
                str(run),
                "--data",
                str(folder),
                "--out",
                str(out),
                "--images",
                "3",
                "--layers",
                "last",
                "--final-norm",
                "--permutations",
                "0",
                "--rotation-images",
                "0",
                "--no-plots",
                "--no-progress",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "vit_tiny_patch16_224+lift" and s["channels"] == 96  # lifted tokens
    assert s["weights"]["kind"] == "vitdistill checkpoint"


def test_folded_mode_all_curve_layers_centering_and_pdf(folder, tmp_path):
    out = tmp_path / "fold"
    assert (
        main(
            [
                "analyze",
                *TINY,
                "--data",
                str(folder),
                "--out",
                str(out),
                "--images",
                "4",
                "--layers",
                "0,1",
                "--sep-mode",
                "folded",
                "--pca-curves",
                "all",
                "--center",
                "--pdf",
                "--permutations",
                "2",
                "--bootstrap",
                "20",
                "--rotation-images",
                "3",
                "--thresholds",
                "50,90",
                "--no-progress",
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["sep"]["mode"] == "folded" and s["sep"]["d"] == s["sep"]["folded"]["d"]
    assert s["sep"]["d_over_D"]["50"] == pytest.approx(s["sep"]["d"]["50"] / (192 // 2 + 1))
    assert s["sep"]["permutation"]["mode"] == "folded"
    assert all(set(e["pca"]["p99"]) == {"50", "90"} for e in s["layers"])
    assert s["options"]["center"] is True and s["pca_curve_layers"] == [0, 1]
    assert (out / "sep_curves.pdf").read_bytes()[:4] == b"%PDF"
    rows = read_csv(out / "per_image.csv")
    assert set(rows[0]) >= {"svd_d50", "svd_d90", "pca_d50", "sep_folded_bw50"}
