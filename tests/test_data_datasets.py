"""vitdistill.data: folders, lists, splits, skipping unreadable files, colour modes, transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vitdistill.data import build_dataset, collate_skip, eval_transform, load_rgb, train_transform
from vitdistill.errors import UserError


def _save(path, arr, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path, **kw)
    return path


def _rgb(value, size=8):
    return np.full((size, size, 3), value, dtype=np.uint8)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "val"):
        _save(root / split / "cat" / "a.png", _rgb((10, 20, 30)))
        _save(root / split / "cat" / "b.jpg", _rgb((200, 100, 50)), quality=95)
        _save(root / split / "dog" / "c.png", _rgb((0, 255, 0)))
    # `bird` only exists in train: class indices must still agree between splits.
    _save(root / "train" / "bird" / "d.png", _rgb((1, 2, 3)))
    return root


def test_image_folder_splits_share_class_indices(folder):
    train = build_dataset(str(folder), "train")
    val = build_dataset(str(folder), "val")
    assert train.classes == val.classes == ["bird", "cat", "dog"]
    assert train.num_classes == 3 and len(train) == 4 and len(val) == 3
    labels = {
        p.split("/")[-1]: y for p, y in zip(val.sample_ids, [val[i][1] for i in range(len(val))], strict=True)
    }
    assert labels == {"a.png": 1, "b.jpg": 1, "c.png": 2}
    img, label, index = val[2]
    assert index == 2 and label == 2
    assert img.shape == (3, 8, 8) and img.dtype == torch.float32
    # Pure green PNG, no transform: exact [0, 1] values.
    assert torch.equal(img[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    d = val.describe()
    assert d["kind"] == "folder" and d["split"] == "val" and d["num_images"] == 3
    assert d["fingerprint"] != train.describe()["fingerprint"]


def test_missing_split_and_folder_errors(folder, tmp_path):
    with pytest.raises(UserError, match="no 'test' subfolder"):
        build_dataset(str(folder), "test")
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(str(tmp_path / "nope"))
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        build_dataset(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="synthetic:NAME"):
        build_dataset("synthtic:shapes")


def test_folder_without_splits_and_max_images(tmp_path):
    root = tmp_path / "flat"
    for c in range(3):
        for i in range(4):
            _save(root / f"class{c}" / f"img{i}.png", _rgb(c * 50 + i))
    ds = build_dataset(str(root), "val", max_images=6)  # no split folders: `split` is ignored
    assert len(ds) == 6
    # Evenly spaced subset covers every class.
    assert sorted({ds[i][1] for i in range(len(ds))}) == [0, 1, 2]
    assert build_dataset(str(root), max_images=6).sample_ids == ds.sample_ids


def test_image_list_with_names_ints_and_none(tmp_path):
    a = _save(tmp_path / "imgs" / "a.png", _rgb(0))
    b = _save(tmp_path / "imgs" / "b.png", _rgb(255))
    (tmp_path / "named.txt").write_text(f"# comment\nimgs/a.png\tzebra\n\n{b}\tapple\n")
    ds = build_dataset(str(tmp_path / "named.txt"))
    assert ds.classes == ["apple", "zebra"]
    assert [ds[i][1] for i in range(2)] == [1, 0]
    assert ds.sample_ids[0] == str(a)
    (tmp_path / "ints.txt").write_text("imgs/a.png\t3\nimgs/b.png\t0\n")
    ds = build_dataset(str(tmp_path / "ints.txt"))
    assert ds.num_classes == 4 and [ds[i][1] for i in range(2)] == [3, 0]
    (tmp_path / "plain.txt").write_text("imgs/a.png\nimgs/b.png\n")
    ds = build_dataset(str(tmp_path / "plain.txt"))
    assert ds.num_classes == 0 and ds[1][1] == -1
    (tmp_path / "mixed.txt").write_text("imgs/a.png\t1\nimgs/b.png\n")
    with pytest.raises(UserError, match="label all or none"):
        build_dataset(str(tmp_path / "mixed.txt"))


def test_truncated_jpeg_is_skipped_or_named(tmp_path, capsys):
    root = tmp_path / "d"
    _save(root / "x" / "good.png", _rgb(7))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90
    )
    (root / "x" / "bad.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "x" / "junk.png").write_bytes(b"not an image at all")
    ds = build_dataset(str(root))
    assert len(ds) == 3
    batches = list(DataLoader(ds, batch_size=3, collate_fn=collate_skip))
    err = capsys.readouterr().err.splitlines()  # one line per unreadable file, no library source lines
    assert len(err) == 2 and all(e.startswith("vitdistill: skipping unreadable image") for e in err)
    images, labels, indices, n_skipped = batches[0]
    assert n_skipped == 2 and images.shape == (1, 3, 8, 8)
    assert ds.sample_ids[int(indices[0])].endswith("good.png")
    # A batch in which everything was skipped is empty, not an error.
    empty = collate_skip([ds[ds.sample_ids.index(str(root / "x" / "bad.jpg"))]])
    assert "bad.jpg" in capsys.readouterr().err
    assert empty[0].shape[0] == 0 and empty[3] == 1
    strict = build_dataset(str(root), strict=True)
    with pytest.raises(UserError, match="bad.jpg"):
        strict[strict.sample_ids.index(str(root / "x" / "bad.jpg"))]


def test_colour_modes_convert_to_rgb(tmp_path):
    # 16-bit greyscale: 65535 -> 255, 32896 (= 128 * 257) -> 128, 0 -> 0.
    a16 = np.array([[0, 32896, 65535, 257]], dtype=np.uint16)
    p16 = _save(tmp_path / "g16.png", a16)
    assert Image.open(p16).mode.startswith("I")
    rgb = np.asarray(load_rgb(p16))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 128, 255, 1] and (rgb[..., 0] == rgb[..., 2]).all()

    # RGBA: opaque red stays red, fully transparent becomes the white background, half alpha blends.
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], dtype=np.uint8)
    got = np.asarray(load_rgb(_save(tmp_path / "a.png", rgba, mode="RGBA"))).astype(int)
    assert got[0, 0].tolist() == [255, 0, 0]
    assert got[0, 1].tolist() == [255, 255, 255]
    np.testing.assert_allclose(got[0, 2], [127, 127, 255], atol=1)

    # Greyscale L -> replicated channels.
    grey = np.array([[0, 100, 255]], dtype=np.uint8)
    got = np.asarray(load_rgb(_save(tmp_path / "l.png", grey, mode="L")))
    assert got[0, :, 1].tolist() == [0, 100, 255] and (got[..., 0] == got[..., 1]).all()

    # Palette with a transparent index.
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(load_rgb(tmp_path / "p.png"))
    assert got[0, 0].tolist() == [255, 255, 255] and got[0, 1].tolist() == [10, 200, 30]


def _tiny_vit(img_size=32):
    import timm

    return timm.create_model(
        "vit_tiny_patch16_224",
        img_size=img_size,
        patch_size=8,
        depth=1,
        embed_dim=16,
        num_heads=2,
        num_classes=3,
    )


def test_transforms_use_the_models_real_input_size(tmp_path):
    model = _tiny_vit(32)
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)  # the trap this guards against
    _save(
        tmp_path / "d" / "c" / "big.png",
        np.random.default_rng(1).integers(0, 255, (80, 60, 3), dtype=np.uint8),
    )
    ds = build_dataset(str(tmp_path / "d"), transform=eval_transform(model))
    x = ds[0][0]
    assert x.shape == (3, 32, 32)
    assert model(x[None]).shape == (1, 3)
    # crop_pct=1.0 on an image already at the model size is exactly normalisation: (v - 0.5) / 0.5.
    _save(tmp_path / "e" / "c" / "s.png", _rgb((0, 51, 255), 32))
    x = build_dataset(str(tmp_path / "e"), transform=eval_transform(model, crop_pct=1.0))[0][0]
    np.testing.assert_allclose(x[:, 5, 5].numpy(), [-1.0, 51 / 255 * 2 - 1, 1.0], atol=1e-6)
    t = train_transform(model, hflip=0.0, scale=(0.5, 1.0))
    assert t(Image.new("RGB", (50, 70))).shape == (3, 32, 32)
    with pytest.raises(UserError, match="unknown augmentation option"):
        train_transform(model, hlfip=0.5)
    t = train_transform({"img_size": 48})
    assert t(Image.new("RGB", (50, 70))).shape == (3, 48, 48)


def test_folder_order_is_natural_and_case_blind(tmp_path):
    """Classes and files sort as people number them: c2 before c10, img2 before img10, B after a."""
    root = tmp_path / "data"
    for cls in ("c10", "c2", "C1"):
        for name in ("img10.png", "img2.png", "Img1.png"):
            _save(root / cls / name, _rgb((5, 5, 5)))
    ds = build_dataset(str(root), "train")
    assert ds.classes == ["C1", "c2", "c10"]
    names = [p.split("data/")[1] for p in ds.sample_ids]
    assert names[:3] == ["C1/Img1.png", "C1/img2.png", "C1/img10.png"]
    assert [n.split("/")[0] for n in names] == ["C1"] * 3 + ["c2"] * 3 + ["c10"] * 3
