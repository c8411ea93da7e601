"""A run is never validated on its own training images: refusal, held-out fraction, record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from _helpers import train_cfg
from vitdistill.cli import main
from vitdistill.data.holdout import train_val_sets
from vitdistill.distill import train

STUDENT = "deit_tiny_patch16_224"


def _folder(root, n_per_class=8, splits=(None,)):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in ("a", "b"):
            d = root / split / c if split else root / c
            d.mkdir(parents=True)
            for i in range(n_per_class):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def _yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _data(**over):
    d = {"train": None, "val": None, "val_fraction": None, "strict": False}
    d.update({"max_train_images": None, "max_val_images": None}, **over)
    return d


def test_folder_without_val_split_is_refused_in_one_line_naming_both_ways_out(tmp_path, capsys):
    data = _folder(tmp_path / "imgs")
    cfg = _yaml(tmp_path / "c.yaml", train_cfg(STUDENT, **{"data.train": str(data), "data.batch_size": 8}))
    assert main(["train", "--config", cfg, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitdistill train: error:")
    assert "data.val" in err[0] and "data.val_fraction" in err[0] and "no validation split" in err[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_val_naming_the_training_images_is_refused(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", splits=("train", "val"))
    over = {"data.train": str(data / "train"), "data.val": str(data / "train"), "data.batch_size": 8}
    cfg = _yaml(tmp_path / "c.yaml", train_cfg(STUDENT, **over))
    assert main(["train", "--config", cfg, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "shares 16 image(s) with the training data" in err and "data.val_fraction" in err
    # an image list naming one training file is caught too
    listed = tmp_path / "val.txt"
    listed.write_text(f"{data / 'val' / 'a' / '0.png'}\ta\n{data / 'train' / 'b' / '3.png'}\tb\n")
    with pytest.raises(Exception, match="shares 1 image"):
        train_val_sets(_data(train=str(data / "train"), val=str(listed)), seed=0)


def test_val_linking_to_the_training_images_is_refused(tmp_path):
    data = _folder(tmp_path / "imgs", splits=("train",))
    linked_files = tmp_path / "files"  # val/{a,b}/*.png each a link to a training image
    for c in ("a", "b"):
        (linked_files / "val" / c).mkdir(parents=True)
        for i in range(3):
            (linked_files / "val" / c / f"v{i}.png").symlink_to(data / "train" / c / f"{i}.png")
    with pytest.raises(Exception, match="shares 6 image"):
        train_val_sets(_data(train=str(data / "train"), val=str(linked_files / "val")), seed=0)
    linked_folder = tmp_path / "folder"  # val -> train: the source's own val split is the training set
    linked_folder.mkdir()
    (linked_folder / "train").symlink_to(data / "train")
    (linked_folder / "val").symlink_to(data / "train")
    with pytest.raises(Exception, match="shares 16 image"):
        train_val_sets(_data(train=str(linked_folder)), seed=0)
    # a real copy is a different file: allowed (only links are followed)
    copied = _folder(tmp_path / "copy", splits=("train", "val"))
    tr, va = train_val_sets(_data(train=str(copied)), seed=0)
    assert len(tr) == len(va) == 16


def test_held_out_fraction_is_seeded_disjoint_and_covers_the_set(tmp_path):
    data = str(_folder(tmp_path / "imgs", n_per_class=10))
    tr, va = train_val_sets(_data(train=data, val_fraction=0.25), seed=3)
    assert (len(tr), len(va)) == (15, 5)
    ids_tr, ids_va = set(tr.sample_ids), set(va.sample_ids)
    assert not ids_tr & ids_va and len(ids_tr | ids_va) == 20
    tr2, va2 = train_val_sets(_data(train=data, val_fraction=0.25), seed=3)
    assert va2.sample_ids == va.sample_ids  # same seed, same split
    _, va3 = train_val_sets(_data(train=data, val_fraction=0.25), seed=4)
    assert va3.sample_ids != va.sample_ids
    # items carry their position in the part and the label of their file
    img, label, index = va[2]
    assert index == 2 and label == (0 if "/a/" in va.sample_ids[2] else 1) and img.shape == (3, 16, 16)
    # caps cut each part evenly after the split
    tr4, va4 = train_val_sets(
        _data(train=data, val_fraction=0.25, max_train_images=6, max_val_images=2), seed=3
    )
    assert len(tr4) == 6 and len(va4) == 2 and set(va4.sample_ids) <= ids_va


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 0.01])
def test_bad_fractions_are_user_errors(tmp_path, bad):
    data = str(_folder(tmp_path / "imgs"))
    with pytest.raises(Exception, match="val_fraction"):
        train_val_sets(_data(train=data, val_fraction=bad), seed=0)


def test_val_and_fraction_together_are_refused(tmp_path):
    data = _folder(tmp_path / "imgs", splits=("train", "val"))
    with pytest.raises(Exception, match="not both"):
        train_val_sets(_data(train=str(data), val=str(data), val_fraction=0.2), seed=0)


def test_training_with_a_held_out_fraction_records_the_validation_data(tmp_path):
    data = str(_folder(tmp_path / "imgs", n_per_class=10))
    over = {"data.train": data, "data.val_fraction": 0.2, "data.batch_size": 8}
    train(train_cfg(STUDENT, **over), output=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    val = summary["val_data"]
    assert val["kind"] == "held_out" and val["val_fraction"] == 0.2 and val["seed"] == 0
    assert val["num_images"] == 4 and val["of"] == data and "Normalize" in val["transform"]
    assert summary["train_data"]["num_images"] == 16 and summary["train_data"]["role"] == "train"
    ep = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_n"] for r in ep if r["kind"] == "epoch"] == [4]


def test_split_folder_records_its_val_split(tmp_path):
    data = str(_folder(tmp_path / "imgs", splits=("train", "val")))
    train(train_cfg(STUDENT, **{"data.train": data, "data.batch_size": 8}), output=tmp_path / "run")
    val = json.loads((tmp_path / "run" / "summary.json").read_text())["val_data"]
    assert val["kind"] == "folder" and val["split"] == "val" and val["num_images"] == 16
    assert val["folder"].endswith("val") and "CenterCrop" in val["transform"]


def test_eval_says_when_it_scores_the_runs_training_images(tmp_path, capsys):
    data = _folder(tmp_path / "imgs", splits=("train", "val"))
    run = tmp_path / "run"
    train(train_cfg(STUDENT, **{"data.train": str(data), "data.batch_size": 8}), output=run)
    capsys.readouterr()
    (tmp_path / "alias").symlink_to(data / "train")  # another name for the same folder
    for spec, trained in (
        (data, False),
        (data / "val", False),
        (data / "train", True),
        (tmp_path / "alias", True),
    ):
        out = tmp_path / "e.json"
        assert main(["eval", str(run), "--data", str(spec), "--device", "cpu", "--json", str(out)]) == 0
        err = capsys.readouterr().err
        assert ("is training accuracy" in err) is trained and json.loads(out.read_text())[
            "training_data"
        ] is trained
        out.unlink()
    # a held-out run: its base folder is its training data
    flat = _folder(tmp_path / "flat", n_per_class=10)
    train(
        train_cfg(STUDENT, **{"data.train": str(flat), "data.val_fraction": 0.2, "data.batch_size": 8}),
        output=tmp_path / "h",
    )
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "h"), "--data", str(flat), "--device", "cpu"]) == 0
    assert "is training accuracy" in capsys.readouterr().err


@given(
    n=st.integers(1, 80),
    fraction=st.floats(0.001, 0.999, allow_nan=False),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_hold_out_partitions_any_set(n, fraction, seed):
    from vitdistill.data import ImageFileDataset
    from vitdistill.data.holdout import hold_out
    from vitdistill.errors import UserError

    base = ImageFileDataset([f"/x/{i}.png" for i in range(n)], [i % 3 for i in range(n)], ["a", "b", "c"])
    base._info = {"kind": "list", "spec": "/x/list.txt"}
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        with pytest.raises(UserError, match="val_fraction"):
            hold_out(base, fraction, seed, (None, None))
        return
    tr, va = hold_out(base, fraction, seed, (None, None))
    assert len(va) == n_val and len(tr) == n - n_val
    assert sorted(tr.sample_ids + va.sample_ids, key=lambda p: int(p[3:-4])) == base.sample_ids
    assert not set(tr.sample_ids) & set(va.sample_ids)
    assert va.sample_ids == hold_out(base, fraction, seed, (None, None))[1].sample_ids
