"""timm's data-set sources, built on disk in the test: a Hugging Face set (parquet) and WebDataset shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import timm
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _helpers import TINY_KW, train_cfg
from vitdistill.cli import main
from vitdistill.data import build_dataset

datasets = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")

CLASSES = ["cat", "dog", "eel"]
STUDENT = "deit_tiny_patch16_224"
TINY = [STUDENT, *[a for k, v in TINY_KW.items() for a in ("--set", f"{k}={v}")]]
FAST = ["--no-progress", "--permutations", "0", "--rotation-images", "0", "--no-plots"]


def _png(value: int, size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # the Hugging Face cache stays in the test
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hf_dir(tmp_path):
    """A Hugging Face set as the hub lays it out: data/<split>-*.parquet, label a ClassLabel."""
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    for split, n in (("train", 12), ("validation", 6)):
        rows = {"image": [{"bytes": _png(10 * i + (split == "train")), "path": None} for i in range(n)]}
        rows["label"] = [i % 3 for i in range(n)]
        ds = datasets.Dataset.from_dict(rows, features=feats)
        (tmp_path / "hf" / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(tmp_path / "hf" / "data" / f"{split}-00000-of-00001.parquet"))
    return tmp_path / "hf"


@pytest.fixture
def wds_dir(tmp_path):
    """Two WebDataset shards per split (key.png + key.cls) and timm's _info.json."""
    root = tmp_path / "shards"
    root.mkdir()
    info = {"num_classes": 3, "splits": {}}
    for split, per_shard in (("train", 6), ("validation", 3)):
        names = []
        for s in range(2):
            name = f"{split}-{s:04d}.tar"
            with wds.TarWriter(str(root / name)) as w:
                for i in range(per_shard):
                    w.write(
                        {
                            "__key__": f"{split}{s}_{i}",
                            "png": _png(20 * i + 100 * s),
                            "cls": str(i % 3).encode(),
                        }
                    )
            names.append(name)
        info["splits"][split] = {
            "name": split,
            "num_samples": 2 * per_shard,
            "filenames": names,
            "shard_lengths": [per_shard] * 2,
        }
    (root / "_info.json").write_text(json.dumps(info))
    return root


def test_hfds_items_labels_subsets_and_ids(hf_dir):
    spec = f"hfds/{hf_dir}"
    ds = build_dataset(spec, "val")
    assert len(ds) == 6 and ds.classes == CLASSES and ds.describe()["split"] == "validation"
    for i in range(6):
        img, label, index = ds[i]
        assert index == i and label == i % 3
        assert torch.allclose(img, torch.full((3, 16, 16), 10 * i / 255.0))  # the pixels written above
    train = build_dataset(spec, "train", max_images=4)
    assert train.sample_ids == [f"hfds/{hf_dir}:train/{r}" for r in (0, 3, 6, 9)]
    assert [train[k][1] for k in range(4)] == [0, 0, 0, 0]  # rows 0, 3, 6, 9 are all class 0
    assert float(train[1][0][0, 0, 0]) == pytest.approx(31 / 255.0)


def test_wds_streams_every_sample_once_with_its_label(wds_dir):
    ds = build_dataset(f"wds/{wds_dir}", "val")
    assert len(ds) == 6 and ds.num_classes == 3 and ds.describe()["per_image_ids"] is False
    seen = sorted((round(float(img[0, 0, 0]) * 255), label) for img, label, _ in ds)
    assert seen == sorted((20 * i + 100 * s, i % 3) for s in range(2) for i in range(3))


def test_streams_refuse_subsets_and_missing_class_counts(wds_dir, tmp_path):
    with pytest.raises(Exception, match="streamed .*even subset"):
        build_dataset(f"wds/{wds_dir}", "val", max_images=2)
    info = json.loads((wds_dir / "_info.json").read_text())
    del info["num_classes"]
    (wds_dir / "_info.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match=r"classes=N"):
        build_dataset(f"wds/{wds_dir}", "val")
    stream = build_dataset(f"wds/{wds_dir}?classes=3", "val")
    assert stream.num_classes == 3
    with pytest.raises(Exception, match="streamed .*reads images by position"):
        stream[0]  # anything that indexes a stream (the demo's decoding, for one) gets one line
    for bad in ("0", "x", "-2", ""):
        with pytest.raises(Exception, match="positive whole number"):
            build_dataset(f"wds/{wds_dir}?classes={bad}", "val")
    with pytest.raises(Exception, match="_info.json"):
        build_dataset(f"wds/{tmp_path}", "val")


def _direct(model, values, labels):
    """CE and top-1 of ``model`` on uniform images, through the same eval transform, without a loader."""
    from vitdistill.data import eval_transform

    tf = eval_transform(model, crop_pct=1.0)
    x = torch.stack([tf(Image.fromarray(np.full((16, 16, 3), v, np.uint8))) for v in values])
    with torch.no_grad():
        logits = model(x)
    y = torch.tensor(labels)
    return torch.nn.functional.cross_entropy(logits, y).item(), 100.0 * (
        logits.argmax(1) == y
    ).float().mean().item()


def test_evaluate_on_hfds_and_wds_matches_a_direct_pass(hf_dir, wds_dir):
    from vitdistill.distill import evaluate

    torch.manual_seed(0)
    model = timm.create_model(STUDENT, num_classes=3, **TINY_KW).eval()
    cases = {
        f"hfds/{hf_dir}": ([10 * i for i in range(6)], [i % 3 for i in range(6)]),
        f"wds/{wds_dir}": (
            [20 * i + 100 * s for s in range(2) for i in range(3)],
            [i % 3 for s in range(2) for i in range(3)],
        ),
    }
    for spec, (values, labels) in cases.items():
        got = evaluate(model, spec, device="cpu", crop_pct=1.0, batch_size=4)
        loss, top1 = _direct(model, values, labels)
        assert (
            got["n"] == 6
            and got["loss"] == pytest.approx(loss, rel=1e-5)
            and got["top1"] == pytest.approx(top1)
        )


def test_commands_take_hfds_and_refuse_streams_where_they_need_positions(hf_dir, wds_dir, tmp_path, capsys):
    hf, ws = f"hfds/{hf_dir}", f"wds/{wds_dir}"
    ana = ["analyze", *TINY, *FAST]
    assert main([*ana, "--images", "4", "--data", hf, "--out", str(tmp_path / "a")]) == 0
    ids = (tmp_path / "a" / "images.txt").read_text()
    assert f"{hf}:validation/0" in ids and f"{hf}:validation/5" not in ids  # 4 of 6: rows 0, 1, 3, 4
    assert main([*ana, "--data", ws, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "streamed" in err[0] and "hfds/" in err[0]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(train_cfg(STUDENT, **{"data.train": hf, "data.batch_size": 4})))
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["train_data"]["kind"] == "hfds" and summary["val_data"]["split"] == "validation"
    assert summary["val_data"]["num_images"] == 6 and summary["num_classes"] == 3
    capsys.readouterr()
    args = ["train", "--config", str(cfg), "--set", f"data.val={ws}", "--output", str(tmp_path / "run3")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "streamed" in err[0] and "validates by position" in err[0]
    for spec in (ws, hf):
        assert (
            main(["eval", str(tmp_path / "run"), "--data", spec, "--device", "cpu", "--batch-size", "4"]) == 0
        )
        assert "(6 images)" in capsys.readouterr().out


def test_hf_column_names_unreadable_rows_and_an_unreachable_hub(tmp_path, monkeypatch, capsys):
    feats = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=CLASSES)})
    rows = {
        "img": [{"bytes": _png(50), "path": None}, {"bytes": b"\x89PNG broken", "path": None}],
        "fine": [2, 1],
    }
    (tmp_path / "cols" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(
        str(tmp_path / "cols" / "data" / "train-0.parquet")
    )
    spec = f"hfds/{tmp_path / 'cols'}"
    for bad, column in ((spec, "'image'"), (f"{spec}?image=img", "'label'")):
        with pytest.raises(Exception, match=f"has no column {column}.*image=img&label="):
            build_dataset(bad, "train")
    ds = build_dataset(f"{spec}?image=img&label=fine", "train")
    assert ds[0][1] == 2 and ds[1][0] is None  # an unreadable row costs that image only
    assert "skipping unreadable image" in capsys.readouterr().err
    with pytest.raises(Exception, match="unknown option 'colour'"):
        build_dataset(f"{spec}?colour=1", "train")
    # a hub id with the hub out of reach: one line at once, not half a minute of retries
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(Exception, match="hub is unreachable.*HF_DATASETS_OFFLINE=1"):
        build_dataset("hfds/someone/no-such-set", "train")


@given(
    prefix=st.sampled_from(["wds/", "WDS/", "hfids/", "hfds/"]),
    rest=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_timm_spec_is_a_data_set_or_one_user_error(prefix, rest, tmp_path):
    from vitdistill.errors import UserError

    try:
        build_dataset(prefix + rest, "val")
    except UserError as e:
        assert "\n" not in str(e).strip() or "\n" in rest


def test_train_streams_wds_shards_and_resumes_at_epoch_ends(wds_dir, tmp_path, capsys):
    ws, run = f"wds/{wds_dir}", tmp_path / "run"
    over = {"data.train": ws, "data.val": ws, "data.batch_size": 4}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(train_cfg(STUDENT, **over)))
    # validation by position only: a streamed validation source is refused in one line
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validates by position" in err[0]
    hf = _hf_val_only(tmp_path)
    cfg.write_text(yaml.safe_dump(train_cfg(STUDENT, **{**over, "data.val": hf})))
    assert main(["train", "--config", str(cfg), "--output", str(run)]) == 0
    assert (
        main(["train", "--config", str(cfg), "--output", str(run), "--resume", "auto", "--set", "epochs=2"])
        == 0
    )
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rec if r["kind"] == "epoch"]
    # 12 training images, batch 4: 3 optimizer steps and 12 images per epoch
    assert [r["epoch"] for r in epochs] == [0, 1] and [r["train_images"] for r in epochs] == [12, 12]
    assert [r["step"] for r in epochs] == [3, 6] and all(r["val_n"] == 6 for r in epochs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_data"]["kind"] == "wds" and summary["steps"] == 6
    for bad, why in (
        ("aug.repeated_aug=3", "repeated_aug: 1"),
        ("log.checkpoint_steps=1", "checkpoint_steps: 0"),
    ):
        args = ["train", "--config", str(cfg), "--output", str(tmp_path / bad), "--set", bad]
        assert main(args) == 2 and why in capsys.readouterr().err


def _hf_val_only(tmp_path) -> str:
    """A 6-image Hugging Face validation set of the shards' three classes."""
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    rows = {
        "image": [{"bytes": _png(7 * i), "path": None} for i in range(6)],
        "label": [i % 3 for i in range(6)],
    }
    (tmp_path / "hfval" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(
        str(tmp_path / "hfval" / "data" / "validation-0.parquet")
    )
    return f"hfds/{tmp_path / 'hfval'}"


def test_torchrun_two_ranks_read_their_own_shards(wds_dir, tmp_path):
    """Real torch.distributed (gloo): each rank streams its own shard, in training and in eval."""
    import os
    import subprocess
    import sys

    ws, run = f"wds/{wds_dir}", tmp_path / "run"
    over = {"data.train": ws, "data.val": _hf_val_only(tmp_path), "data.batch_size": 4}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(train_cfg(STUDENT, **over)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "vitdistill", "train", "--config", str(cfg), "--output", str(run)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    (epoch,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x][
        -1:
    ]
    assert epoch["step"] == 3 and epoch["train_images"] == 12
    outs = {}
    for name, launcher in (("one", [sys.executable]), ("two", torchrun)):
        out = tmp_path / f"{name}.json"
        cmd = [
            *launcher,
            "-m",
            "vitdistill",
            "eval",
            str(run),
            "--data",
            ws,
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        outs[name] = json.loads(out.read_text())
    # the two validation shards hold different images: a rank reading the other's shard changes the loss
    assert outs["one"]["n"] == outs["two"]["n"] == 6
    assert outs["two"]["loss"] == pytest.approx(outs["one"]["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "labels, dtype, why",
    [
        ([0, 1, -1], "int64", r"row 2 has label -1 .*whole numbers from 0"),
        ([0, 1, 10**9], "int64", r"row 2 has label 1000000000 .*\?classes=N"),
        ([0.0, 0.5, 1.0], "float32", r"row 1 has label 0.5 .*whole numbers"),
        ([0, None, 1], "int64", r"row 1 has label None "),
        (["x", "y", "x"], "string", r"row 0 has label 'x' "),
    ],
)
def test_hf_labels_that_are_no_class_index_are_refused_by_row(labels, dtype, why, tmp_path):
    from vitdistill.errors import UserError

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value(dtype)})
    rows = {"image": [{"bytes": _png(9), "path": None}] * 3, "label": labels}
    (tmp_path / "hf" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(
        str(tmp_path / "hf" / "data" / "train-0.parquet")
    )
    with pytest.raises(UserError, match=why):
        build_dataset(f"hfds/{tmp_path / 'hf'}", "train")


def test_hf_plain_int_labels_fit_the_class_count_given(tmp_path):
    from vitdistill.errors import UserError

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = {"image": [{"bytes": _png(9), "path": None}] * 3, "label": [0, 3, 1]}
    (tmp_path / "hf" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(
        str(tmp_path / "hf" / "data" / "train-0.parquet")
    )
    spec = f"hfds/{tmp_path / 'hf'}"
    assert [build_dataset(spec, "train")[i][1] for i in range(3)] == [0, 3, 1]
    assert len(build_dataset(f"{spec}?classes=6", "train").classes) == 6
    with pytest.raises(UserError, match="row 1 has label 3 .*the set has 3 classes"):
        build_dataset(f"{spec}?classes=3", "train")
    for bad in ("\u00b2", "0", "2000000"):  # a superscript digit is a digit to str.isdigit, not to int()
        with pytest.raises(UserError, match="classes must be a positive whole number up to"):
            build_dataset(f"{spec}?classes={bad}", "train")
