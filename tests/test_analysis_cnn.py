"""CNN and hybrid feature maps: stage taps and every statistic against numpy on the same maps.

The reference side never goes through vitdistill's taps or statistics: its feature maps come from
timm's own ``features_only`` network (the published CNN pipeline's extractor) with the same
weights, its preprocessing from timm's data config, and every statistic is written out here with
numpy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitdistill.analysis import analyze
from vitdistill.cli import main
from vitdistill.data import build_dataset
from vitdistill.errors import UserError
from vitdistill.models import create_model
from vitdistill.models.taps import (
    check_tappable,
    default_layers,
    feature_grid,
    layer_unit,
    num_tap_layers,
    resolve_layers,
    token_features,
)

TS = (0.8, 0.9, 0.95, 0.99)
TKEYS = ("80", "90", "95", "99")
ALPHAS = (50, 60, 70, 80, 90)
DATA = "synthetic:shapes?n=12&n_val=12&size=40"
CNNS = ["test_resnet", "test_convnext", "test_efficientnet"]


# ---------------------------------------------------------------------------------------------
# numpy reference
# ---------------------------------------------------------------------------------------------


def features_only_maps(name: str, weights: dict, x: torch.Tensor) -> list[np.ndarray]:
    """Every stage map of timm's features_only network with ``weights``, as (B, H*W, C) float64."""
    ref = timm.create_model(name, features_only=True).eval()
    source = {}
    for k in ref.state_dict():  # features_only flattens "stages.1.x" into "stages_1.x"
        head, _, rest = k.partition(".")
        found = [c for c in (k, head.replace("_", ".") + "." + rest) if c in weights]
        assert found, f"the features_only network has a weight {k} the classifier lacks"
        source[k] = weights[found[0]]
    ref.load_state_dict(source)
    with torch.no_grad():
        maps = ref(x)
    return [m.double().numpy().reshape(m.shape[0], m.shape[1], -1).transpose(0, 2, 1) for m in maps]


def timm_images(model: torch.nn.Module, size: int, ids: list[int], data: str = DATA) -> torch.Tensor:
    """The analysed images (``ids`` index the same evenly spread subset that ``--images`` takes),
    preprocessed by timm's own eval transform at ``size``."""
    cfg = timm.data.resolve_model_data_config(model, args={"input_size": (3, size, size)})
    tf = timm.data.create_transform(**cfg)
    ds = build_dataset(data, split="val", transform=tf, max_images=len(ids))
    return torch.stack([ds[i][0] for i in ids])


def first_reaching(curve: np.ndarray, t: float) -> int:
    return int(np.argmax(curve >= t - 1e-12) + 1)


def np_svd_ranks(x: np.ndarray) -> list[int]:
    s = np.linalg.svd(x, compute_uv=False)
    e = np.cumsum(s**2) / np.sum(s**2)
    return [first_reaching(e, t) for t in TS]


def np_sep_curves(tokens: np.ndarray, mode: str) -> np.ndarray:
    d = tokens.shape[-1]
    if mode == "full":
        p = np.abs(np.fft.fft(tokens, axis=-1)) ** 2
    else:
        p = np.abs(np.fft.rfft(tokens, axis=-1)) ** 2
        p[:, 1 : (d // 2 if d % 2 == 0 else None)] *= 2
    keep = p.sum(-1) > 0
    return 100 * np.cumsum(p[keep], -1) / p[keep].sum(-1, keepdims=True)


def np_stage_stats(x: np.ndarray) -> dict:
    """Per-image SVD, global and shared-basis PCA and SEP of one stage's (I, N, C) maps."""
    ranks = np.array([np_svd_ranks(xi) for xi in x])
    flat = x.reshape(-1, x.shape[-1])
    lam, vec = np.linalg.eigh(flat.T @ flat / flat.shape[0])
    lam, vec = lam[::-1], vec[:, ::-1]
    glob = np.cumsum(lam) / lam.sum()
    shared = np.array(
        [[first_reaching(np.cumsum(((xi @ vec) ** 2).sum(0)) / (xi**2).sum(), t) for t in TS] for xi in x]
    )
    out = {
        "svd_p99": {k: np.percentile(ranks[:, j], 99, method="linear") for j, k in enumerate(TKEYS)},
        "svd_mean": {k: ranks[:, j].mean() for j, k in enumerate(TKEYS)},
        "pca_global": {k: first_reaching(glob, t) for k, t in zip(TKEYS, TS, strict=True)},
        "pca_p99": {k: np.percentile(shared[:, j], 99, method="linear") for j, k in enumerate(TKEYS)},
        "shared_basis": vec,
    }
    for mode in ("full", "folded"):
        mean = np_sep_curves(flat, mode).mean(0)
        out[f"sep_{mode}"] = {str(a): first_reaching(mean, a) for a in ALPHAS}
    return out


def np_permuted_bandwidth(x: np.ndarray, perms: torch.Tensor, alpha: float) -> float:
    """Mean over images and trials of the per-image full-order bandwidth d/D after a channel shuffle."""
    d = x.shape[-1]
    bw = [
        first_reaching(np_sep_curves(xi[:, p.numpy()], "full").mean(0), alpha) / d for xi in x for p in perms
    ]
    return float(np.mean(bw))


def np_overlap_mean(x: np.ndarray, threshold: float) -> float:
    vs = []
    for xi in x:
        _, s, vt = np.linalg.svd(xi, full_matrices=False)
        vs.append(vt[: first_reaching(np.cumsum(s**2) / (s**2).sum(), threshold)].T)
    ov = [
        np.linalg.norm(vs[i].T @ vs[j]) ** 2 / min(vs[i].shape[1], vs[j].shape[1])
        for i in range(len(vs))
        for j in range(i + 1, len(vs))
    ]
    return float(np.mean(ov))


def image_ids(out: Path) -> list[int]:
    return [int(line.split("\t")[0]) for line in (out / "images.txt").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# taps
# ---------------------------------------------------------------------------------------------


def small_cnn(name: str, size: int = 64) -> torch.nn.Module:
    model, _ = create_model(name, img_size=size)
    return model


@pytest.mark.parametrize("name", CNNS)
def test_cnn_stage_taps_equal_timm_features_only(name):
    m = small_cnn(name)
    x = torch.randn(2, 3, 64, 64)
    ref = features_only_maps(name, m.state_dict(), x)
    with torch.no_grad():
        got = token_features(m, x, "all")
    assert num_tap_layers(m) == len(ref) and layer_unit(m) == "stage"
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape  # (B, H*W, C): row-major over the grid, channels last
        np.testing.assert_allclose(g.double().numpy(), r, rtol=1e-5, atol=1e-5)
    h = int(round(ref[-1].shape[1] ** 0.5))
    assert feature_grid(m) == (h, h)


def test_published_default_is_the_last_four_stages():
    resnet = small_cnn("test_resnet")  # stem + four stages
    convnext = small_cnn("test_convnext")  # four stages, no stem map
    assert num_tap_layers(resnet) == 5 and default_layers(resnet) == [1, 2, 3, 4]
    assert resolve_layers(resnet, "auto") == resolve_layers(resnet, None) == [1, 2, 3, 4]
    assert resolve_layers(resnet, "all") == [0, 1, 2, 3, 4]
    assert default_layers(convnext) == [0, 1, 2, 3]
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=6)
    assert default_layers(vit) == list(range(6)) and layer_unit(vit) == "block"
    # one token grid throughout (no patch_embed attribute, but one stride): blocks, all of them
    mixer = timm.models.MlpMixer(num_blocks=5, img_size=64, patch_size=16, embed_dim=32)
    assert num_tap_layers(mixer) == 5 and default_layers(mixer) == list(range(5))
    assert layer_unit(mixer) == "block"


class _NoIntermediates(timm.models.ResNet):
    """A timm ResNet without forward_intermediates: reached through timm's features_only view."""

    forward_intermediates = None


def test_models_without_forward_intermediates_use_features_only():
    torch.manual_seed(0)
    m = _NoIntermediates(block=timm.models.resnet.BasicBlock, layers=[1, 1, 1, 1], num_classes=3).eval()
    plain = timm.models.ResNet(block=timm.models.resnet.BasicBlock, layers=[1, 1, 1, 1], num_classes=3).eval()
    plain.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        got = token_features(m, x, "auto")
        want = plain.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.flatten(2).transpose(1, 2))
    assert not any(n.startswith("_") for n, _ in m.named_modules() if n)  # the model is left as it was
    with pytest.raises(UserError, match="final norm"):
        token_features(m, x, "last", norm=True)


def test_modules_that_are_no_model_cannot_be_tapped():
    with pytest.raises(UserError, match="cannot be tapped"):
        check_tappable(torch.nn.Linear(3, 3))


# ---------------------------------------------------------------------------------------------
# every statistic per stage, against numpy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CNNS)
def test_every_stage_statistic_matches_numpy(name, tmp_path):
    model = small_cnn(name, 48)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    s = analyze(
        model,
        DATA,
        tmp_path / "a",
        images=5,
        batch_size=2,
        pca_curves="all",
        permutations=3,
        permutation_layers="all",
        bootstrap=20,
        rotation_images=5,
        rotation_layers="all",
        plots=False,
        progress=False,
    )
    ids = image_ids(tmp_path / "a")
    assert len(ids) == 5
    maps = features_only_maps(name, weights, timm_images(model, 48, ids))
    stages = default_layers(model)
    assert [e["layer"] for e in s["layers"]] == stages
    assert s["provenance"]["taps"]["unit"] == "stage"
    for e in s["layers"]:
        x = maps[e["layer"]]
        assert (e["tokens"], e["channels"]) == x.shape[1:]
        ref = np_stage_stats(x)
        for k in TKEYS:
            assert e["svd"]["p99"][k] == pytest.approx(ref["svd_p99"][k])
            assert e["svd"]["mean"][k] == pytest.approx(ref["svd_mean"][k])
            assert e["pca"]["p99"][k] == pytest.approx(ref["pca_p99"][k])
        assert e["pca"]["global"] == ref["pca_global"]
        assert e["sep"]["D"] == x.shape[2]
        assert e["sep"]["d"] == ref["sep_full"]
        assert e["sep"]["folded"]["d"] == ref["sep_folded"]
        # the permutation test of this stage, with its channel shuffles rebuilt from the seed
        g = torch.Generator().manual_seed(1000 * e["layer"])
        perms = torch.stack([torch.randperm(x.shape[2], generator=g) for _ in range(3)])
        bw = e["sep"]["permutation"]["bandwidth"]["80"]
        assert bw["permuted"] == pytest.approx(np_permuted_bandwidth(x, perms, 80), rel=1e-6)
        assert e["rotation"]["pairs"] == 10 and e["rotation"]["channels"] == x.shape[2]
        assert e["rotation"]["overlap"]["mean"] == pytest.approx(np_overlap_mean(x, 0.9), rel=1e-4)
    last = maps[stages[-1]]
    assert (s["tokens"], s["channels"]) == last.shape[1:]
    assert s["rotation"]["pairs"] == 10
    assert s["rotation"]["overlap"]["mean"] == pytest.approx(np_overlap_mean(last, 0.9), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# the CLI: resnet50, a hybrid, and a CNN teacher beside a ViT student
# ---------------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_resnet50_stage_tables_match_numpy(tmp_path, capsys):
    out = tmp_path / "r50"
    args = ["analyze", "resnet50", "--set", "img_size=64", "--images", "8", "--data", "synthetic:shapes"]
    rc = main([*args, "--out", str(out), "--no-progress", "--no-plots", "--permutations", "2"])
    assert rc == 0
    assert "resnet50 stage 4: 8 images, N=4 tokens, C=2048 channels" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    torch.manual_seed(0)  # analyze builds random weights under --seed (default 0)
    full = timm.create_model("resnet50").eval()
    x = timm_images(full, 64, image_ids(out), "synthetic:shapes")
    maps = features_only_maps("resnet50", full.state_dict(), x)
    rows = read_csv(out / "layers_table.csv")
    assert [int(r["Stage"]) for r in rows] == [1, 2, 3, 4]
    assert [(int(r["Tokens"]), int(r["Dims"])) for r in rows] == [
        (256, 256),
        (64, 512),
        (16, 1024),
        (4, 2048),
    ]
    for r in rows:
        ref = np_stage_stats(maps[int(r["Stage"])])
        for k in TKEYS:
            assert float(r[f"SVD p99 {k}%"]) == pytest.approx(ref["svd_p99"][k], abs=0.01)  # 2 decimals
            assert int(r[f"Global PCA {k}%"]) == ref["pca_global"][k]
        assert {a: int(r[f"SEP d@{a}%"]) for a in map(str, ALPHAS)} == ref["sep_full"]
    (top,) = read_csv(out / "svd_rank_table.csv")
    assert (int(top["Tokens"]), int(top["Dims"])) == (4, 2048)
    assert s["layer_unit"] == "stage"


@pytest.mark.parametrize("name", ["levit_128s", "fastvit_t8"])
def test_cli_hybrid_runs_end_to_end(name, tmp_path, capsys):
    out = tmp_path / name
    rc = main(
        ["analyze", name, "--set", "img_size=64", "--images", "3", "--data", DATA, "--out", str(out)]
        + ["--no-progress", "--permutations", "2", "--bootstrap", "20"]
    )
    assert rc == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    shapes = [(e["tokens"], e["channels"]) for e in s["layers"]]
    assert len(shapes) >= 3 and len({c for _, c in shapes}) > 1  # stages of different widths
    for f in ("layer_ranks.png", "sep_curves.png", "layers_table.md", "svd_rank_table.md"):
        assert (out / f).is_file()
    assert all(np.isfinite(e["svd"]["p99"]["99"]) for e in s["layers"])


def test_compare_puts_a_cnn_teacher_beside_a_vit_student(tmp_path, capsys):
    common = ["--images", "3", "--data", DATA, "--no-progress", "--permutations", "2", "--bootstrap", "20"]
    cnn, vit = tmp_path / "cnn", tmp_path / "vit"
    assert main(["analyze", "test_resnet", "--set", "img_size=64", "--out", str(cnn), *common]) == 0
    vit_args = ["vit_tiny_patch16_224", "--set", "img_size=32", "--set", "patch_size=8", "--set", "depth=2"]
    assert main(["analyze", *vit_args, "--out", str(vit), *common]) == 0
    rc = main(["compare", str(cnn), str(vit), "--out", str(tmp_path / "cmp"), "--labels", "teacher,student"])
    assert rc == 0
    rows = read_csv(tmp_path / "cmp" / "svd_rank_table.csv")
    teacher = json.loads((cnn / "summary.json").read_text())
    student = json.loads((vit / "summary.json").read_text())
    assert [r["Model"] for r in rows] == ["teacher", "student"]
    assert (int(rows[0]["Tokens"]), int(rows[0]["Dims"])) == (teacher["tokens"], teacher["channels"])
    assert (int(rows[1]["Tokens"]), int(rows[1]["Dims"])) == (16, 192)
    assert rows[0]["SVD 99%"] == f"{teacher['svd']['p99']['99']:g}" or float(rows[0]["SVD 99%"]) == (
        pytest.approx(teacher["svd"]["p99"]["99"], abs=0.01)
    )
    assert float(rows[1]["SVD 99%"]) == pytest.approx(student["svd"]["p99"]["99"], abs=0.01)
    index = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["layer_unit"] for r in index["rows"]] == ["stage", "block"]
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_a_cnn_with_a_blocks_attribute_is_tapped_by_stage_for_distillation_too():
    from vitdistill.distill.task import forward_with_taps

    m = small_cnn("test_efficientnet")  # EfficientNet names its stages `blocks`: not transformer blocks
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, (tokens,) = forward_with_taps(m, x, [4], norm=False)
        torch.testing.assert_close(logits, m(x))
        torch.testing.assert_close(tokens, token_features(m, x, [4])[0])
    assert tokens.shape == (2, 4, m.feature_info[4]["num_chs"])


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.integers(-5, 5000),
        st.floats(allow_nan=True),
        st.text(max_size=4),
        st.booleans(),
        st.none(),
        st.lists(st.one_of(st.integers(-3, 300), st.floats(), st.text(max_size=2)), max_size=3),
    )
)
def test_img_size_is_a_positive_int_or_pair_or_a_user_error(size):
    from vitdistill.models.builders import _image_size

    try:
        h, w = _image_size(size)
    except UserError as e:
        assert "img_size" in str(e)
    else:
        assert all(type(v) is int and v > 0 for v in (h, w))
        assert (h, w) == ((size, size) if isinstance(size, int) else tuple(size))


def test_a_bad_img_size_for_a_cnn_is_one_line(tmp_path, capsys):
    rc = main(["analyze", "test_resnet", "--set", "img_size=0", "--data", DATA, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vitdistill analyze: error: img_size") and len(err.splitlines()) == 1


def test_hiera_blocks_grouped_in_stages_are_tapped_by_stage():
    # Hiera has a `blocks` sequence behind a patch embedding, but forward_intermediates counts stages
    m = small_cnn("hiera_tiny_224")
    assert len(m.blocks) == 12 and num_tap_layers(m) == 4 and layer_unit(m) == "stage"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = token_features(m, x, "auto")
        want = m.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w.flatten(2).transpose(1, 2))
    # a model whose stage outputs cannot be read at its recorded input size: one line, no traceback
    odd = timm.models.hiera.Hiera(img_size=(64, 64), embed_dim=16, num_heads=1, stages=(1, 1, 2, 1))
    with pytest.raises(UserError, match="img_size"):
        num_tap_layers(odd)
