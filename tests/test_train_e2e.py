"""End-to-end training runs on tiny models and synthetic data: CLI, export, resume, faults, DDP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml

from _helpers import DATA, train_cfg
from _helpers import TINY_KW as S_KW
from vitdistill.cli import main
from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.distill import export, train
from vitdistill.distill.sampler import EpochSampler
from vitdistill.errors import UserError
from vitdistill.models import create_model

T_KW = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)


def _cfg(**over) -> dict:
    return train_cfg("vit_tiny_patch16_224", **{"epochs": 2, **over})


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    return env


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A tiny trained teacher (6 classes) reused as the teacher of the distillation runs."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    train({**_cfg(epochs=1), "model": {"name": "vit_tiny_patch16_224", "kwargs": dict(T_KW)}}, output=out)
    return out


def test_sampler_global_batches_are_world_size_invariant():
    one = list(EpochSampler(40, 8, 1, 0, 2, repeats=3, seed=1))
    two = [list(EpochSampler(40, 8, 2, r, 1, repeats=3, seed=1)) for r in range(2)]
    assert len(one) == 40 and len(two[0]) == 20
    for s in range(5):  # every optimizer step covers the same images
        assert sorted(one[8 * s : 8 * s + 8]) == sorted(two[0][4 * s : 4 * s + 4] + two[1][4 * s : 4 * s + 4])
    assert max(one.count(i) for i in set(one)) == 3  # repeated augmentation


def test_cli_train_eval_export_roundtrip(tmp_path, teacher_run, capsys):
    cfg = _cfg(
        **{
            "teacher": {"name": "vit_tiny_patch16_224", "kwargs": dict(T_KW), "checkpoint": str(teacher_run)},
            "loss.alpha": 0.5,
            "loss.feat_weight": 0.2,
            "loss.feat_loss": "spectral",
            "ema.enabled": True,
        }
    )
    run = tmp_path / "run"
    assert main(["train", "--config", str(_write(tmp_path / "c.yaml", cfg)), "--output", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["last"]["epoch"] == 1 and {"top1", "top5", "ema_top1", "ema_top5"} <= set(summary["last"])
    assert summary["best"] is not None and summary["best_ema"] is not None
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    assert {"ce", "kd", "feat", "loss", "lr", "images_per_s"} <= set(steps[0])
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0, 1]
    # lr is stepped per update, without lag: step i+1 runs at the schedule's value for update i
    # (3 updates per epoch, 1 warmup epoch from 1e-6, cosine over 6 updates down to 1e-5)
    import math

    assert steps[0]["lr"] == pytest.approx(1e-6)
    assert steps[1]["lr"] == pytest.approx(1e-6 + (1e-3 - 1e-6) / 3)
    assert steps[3]["lr"] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 3 / 6)))
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["feat_loss"] == "spectral"
    capsys.readouterr()
    assert main(["eval", str(run), "--data", DATA, "--json", str(tmp_path / "ev.json")]) == 0
    assert "top-1" in capsys.readouterr().out
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["top1"] == pytest.approx(summary["last"]["top1"]) and ev["n"] == 16
    assert main(["export", str(run), "--out", str(tmp_path / "exp")]) == 0
    # the feature-KD projector is gone, the weights load through timm and give the same logits
    conf = json.loads((tmp_path / "exp" / "config.json").read_text())
    model = timm.create_model(
        conf["architecture"],
        pretrained=True,
        num_classes=conf["num_classes"],
        pretrained_cfg_overlay=dict(
            file=str(tmp_path / "exp" / "model.safetensors"), num_classes=conf["num_classes"]
        ),
        **conf["model_args"],
    ).eval()
    ref, _ = create_model(run)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    assert main(["eval", str(tmp_path / "exp"), "--data", DATA]) == 0


def test_eval_of_a_run_uses_its_eval_crop(tmp_path):
    """`eval RUN` scores the run as its training did: with the run's data.eval_crop_pct."""
    run = tmp_path / "run"
    cfg = _cfg(**{"epochs": 1, "data.eval_crop_pct": 0.5})
    assert main(["train", "--config", str(_write(tmp_path / "c.yaml", cfg)), "--output", str(run)]) == 0
    last = json.loads((run / "summary.json").read_text())["last"]
    assert main(["eval", str(run), "--data", DATA, "--json", str(tmp_path / "ev.json")]) == 0
    ev = json.loads((tmp_path / "ev.json").read_text())
    epoch = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert ev["crop_pct"] == 0.5 and ev["top1"] == pytest.approx(last["top1"])
    assert ev["loss"] == pytest.approx(epoch["val_loss"], rel=1e-5)
    assert (
        main(["eval", str(run), "--data", DATA, "--crop-pct", "1", "--json", str(tmp_path / "e1.json")]) == 0
    )
    assert json.loads((tmp_path / "e1.json").read_text())["crop_pct"] == 1.0
    # the run's weights file itself, as a positional: its own weights (no timm pretrained ones)
    ckpt = str(run / "checkpoints" / "last.pt")
    assert main(["eval", ckpt, "--data", DATA, "--crop-pct", "1", "--json", str(tmp_path / "e2.json")]) == 0
    assert json.loads((tmp_path / "e2.json").read_text())["top1"] == pytest.approx(
        json.loads((tmp_path / "e1.json").read_text())["top1"]
    )


@pytest.mark.parametrize("projector", ["pool", "linear"])
def test_pool_run_saves_only_the_student(tmp_path, teacher_run, projector):
    """A pool run (16 <- 32 channels) trains and saves no projector; a linear run keeps one in its
    checkpoint (to resume) but not in its export."""
    cfg = _cfg(
        epochs=1,
        **{
            "teacher": {"checkpoint": str(teacher_run)},
            "loss.feat_weight": 0.2,
            "loss.projector": projector,
            "ema.enabled": True,
        },
    )
    train(cfg, output=tmp_path / "run")
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=6, **S_KW)
    plain = set(ref.state_dict())
    st = ckpt_mod.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert set(st["student"]) == plain and set(st["ema"]) == plain
    assert set(st["projectors"]) == (set() if projector == "pool" else {"0.weight"})
    n_opt = sum(len(g["params"]) for g in st["optimizer"]["param_groups"])
    assert n_opt == len(list(ref.parameters())) + (projector == "linear")  # what the optimizer trains
    export(tmp_path / "run", tmp_path / "exp")
    from safetensors.torch import load_file

    assert set(load_file(tmp_path / "exp" / "model.safetensors")) == plain


def test_lift_export_keeps_projector(tmp_path, teacher_run):
    cfg = _cfg(
        epochs=1,
        **{
            "model": {"name": "vit_tiny_patch16_224", "remedy": "lift", "width": 32, "kwargs": dict(S_KW)},
            "teacher": {"checkpoint": str(teacher_run)},  # rebuilt from the run's saved model
            "loss.feat_weight": 1.0,
            "loss.projector": "none",
        },
    )
    train(cfg, output=tmp_path / "run")
    export(tmp_path / "run", tmp_path / "exp")
    m, ref = create_model(tmp_path / "exp")[0], create_model(tmp_path / "run")[0]
    assert m.norm.proj.weight.shape == (32, 16)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)


def test_config_error_exits_2_naming_the_key(tmp_path, capsys):
    cfg = _write(tmp_path / "c.yaml", _cfg())
    assert (
        main(["train", "--config", str(cfg), "--set", "loss.temprature=2", "--output", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err
    assert "loss.temprature" in err and "loss.temperature" in err and "Traceback" not in err
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--set",
                "model.name=vit_tiny_patch16_22",
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "vit_tiny_patch16_224" in capsys.readouterr().err


@pytest.mark.parametrize("checkpoint_steps", [0, 1])
def test_nan_loss_names_step_and_term_and_keeps_checkpoint(tmp_path, teacher_run, checkpoint_steps):
    from safetensors.torch import save_file

    good = _cfg(
        epochs=1,
        **{
            "teacher": {"name": "vit_tiny_patch16_224", "kwargs": dict(T_KW), "checkpoint": str(teacher_run)},
            "loss.alpha": 0.5,
        },
    )
    run = tmp_path / "run"
    train(good, output=run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    t = timm.create_model("vit_tiny_patch16_224", num_classes=6, **T_KW)
    t.load_state_dict(ckpt_mod.load(teacher_run / "checkpoints" / "last.pt")["student"])
    sd = {k: v.clone() for k, v in t.state_dict().items()}
    sd["head.weight"][0] = 3e38  # finite weights (NaN ones are refused at load) whose logit overflows
    save_file(sd, str(tmp_path / "nan.safetensors"))
    bad = {
        **good,
        "epochs": 2,
        "teacher": {**good["teacher"], "checkpoint": str(tmp_path / "nan.safetensors")},
        # no step-record check: the NaN is caught at the epoch end, or at the mid-epoch save
        "log": {**good["log"], "interval": 50, "checkpoint_steps": checkpoint_steps},
    }
    with pytest.raises(UserError) as e:
        train(bad, output=run, resume="auto")
    assert "step 3" in str(e.value) and "kd" in str(e.value)  # epoch 1 starts at optimizer step 3
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_cfg(epochs=1), output=run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError, match="No space left on device.*intact"):
        train(_cfg(epochs=2), output=run, resume="auto")
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left


def test_existing_run_needs_resume(tmp_path):
    train(_cfg(epochs=1), output=tmp_path / "run")
    with pytest.raises(UserError, match="resume='auto'"):
        train(_cfg(epochs=1), output=tmp_path / "run")


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    cfg = _cfg(
        epochs=3,
        deterministic=True,
        **{
            "aug.enabled": True,
            "aug.auto_augment": "rand-m9-mstd0.5-inc1",
            "aug.reprob": 0.25,
            "aug.mixup": 0.8,
            "aug.cutmix": 1.0,
            "aug.repeated_aug": 2,
            "ema.enabled": True,
            "optim.grad_accum": 2,
            "optim.clip_grad": 1.0,
            "model.kwargs": {**S_KW, "drop_path_rate": 0.1},
        },
    )
    path = _write(tmp_path / "c.yaml", cfg)
    cmd = [sys.executable, "-m", "vitdistill", "train", "--config", str(path)]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(cmd + ["--output", str(full)], check=True, env=_env(), capture_output=True)
    # Kill from outside, like a preempted job: as soon as the first epoch's checkpoint exists,
    # wherever the run is then (saving, or inside epoch 2).
    proc = subprocess.Popen(
        cmd + ["--output", str(killed)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert ckpt_mod.load(last)["epoch"] in (1, 2)
    subprocess.run(
        cmd + ["--output", str(killed), "--resume", "auto"], check=True, env=_env(), capture_output=True
    )
    a, b = ckpt_mod.load(full / "checkpoints" / "last.pt"), ckpt_mod.load(killed / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for part in ("student", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["last"] == sb["last"] and sa["best"] == sb["best"]
    ra = (full / "metrics.jsonl").read_text().splitlines()
    rb = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(ra) == len(rb)


def test_two_process_torchrun_matches_one_process(tmp_path):
    cfg = _cfg(
        epochs=1,
        **{
            "aug.enabled": False,
            "data.batch_size": 8,
            "optim.lr": 1e-3,
            "data.steps_per_epoch": 3,
            "optim.opt": "sgd",
            "optim.momentum": 0.9,
        },
    )
    path = _write(tmp_path / "c.yaml", cfg)
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["-m", "vitdistill", "train", "--config", str(path)]
    subprocess.run([sys.executable, *base, "--output", str(one)], check=True, env=_env(), capture_output=True)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            *base,
            "--output",
            str(two),
        ],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = ckpt_mod.load(one / "checkpoints" / "last.pt"), ckpt_mod.load(two / "checkpoints" / "last.pt")
    assert b["world_size"] == 2 and a["num_updates"] == b["num_updates"] == 3
    for k in a["student"]:
        torch.testing.assert_close(a["student"][k], b["student"][k], rtol=1e-5, atol=1e-6)
    sa, sb = json.loads((one / "summary.json").read_text()), json.loads((two / "summary.json").read_text())
    assert sa["last"]["top1"] == pytest.approx(sb["last"]["top1"])  # eval sharded over ranks, counts reduced


def test_randaugment_posterize_zero_bits_does_not_crash():
    from PIL import Image

    from vitdistill.data import train_transform
    from vitdistill.data.transforms import _posterize_zero_safe

    img = Image.new("RGB", (16, 16), (200, 100, 50))
    assert _posterize_zero_safe(img, 0).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert _posterize_zero_safe(img, 4).getpixel((0, 0)) == (192, 96, 48)
    m = timm.create_model("vit_tiny_patch16_224", **S_KW)
    tf = train_transform(m, auto_augment="rand-m9-mstd0.5-inc1")  # every caller gets the 0-bit-safe op
    ops = [o for t in tf.transforms for o in (getattr(t, "ops", None) or []) if "Posterize" in o.name]
    assert ops and all(o.aug_fn is _posterize_zero_safe for o in ops)


def _image_folder(root: Path, corrupt: bool) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    if corrupt:
        (root / "train" / "a" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


def test_corrupt_images_are_skipped_and_counted_or_fatal_with_strict(tmp_path, capsys):
    data = _image_folder(tmp_path / "imgs", corrupt=True)
    cfg = _cfg(epochs=1, **{"data.train": str(data), "data.batch_size": 8, "amp": "bf16"})
    train(cfg, output=tmp_path / "run")
    err = capsys.readouterr().err
    assert "vitdistill: skipping unreadable image" in err and "Warning" not in err
    rec = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ep = [r for r in rec if r["kind"] == "epoch"][0]
    assert ep["train_skipped"] == 1 and ep["train_images"] == 15 and ep["val_n"] == 8
    path = _write(tmp_path / "c.yaml", cfg)
    assert main(["train", "--config", str(path), "--output", str(tmp_path / "strict"), "--strict"]) == 2
    assert "0.png" in capsys.readouterr().err


def test_tensorboard_missing_is_a_user_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="tensorboard"):
            train(_cfg(epochs=1, **{"log.tensorboard": True}), output=tmp_path / "run")
    else:
        train(_cfg(epochs=1, **{"log.tensorboard": True}), output=tmp_path / "run")
        assert any((tmp_path / "run" / "tb").iterdir())


def test_unknown_teacher_and_missing_data_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="closest"):
        train(
            _cfg(epochs=1, **{"teacher": {"name": "cait_s24_22"}, "loss.alpha": 0.5}), output=tmp_path / "a"
        )
    with pytest.raises(UserError):
        train(_cfg(epochs=1, **{"data.train": str(tmp_path / "nope")}), output=tmp_path / "b")


def test_fp16_uses_a_grad_scaler_and_checkpoints_it(tmp_path):
    train(_cfg(epochs=1, amp="fp16", **{"optim.clip_grad": 1.0}), output=tmp_path / "run")
    st = ckpt_mod.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert st["scaler"] is not None and st["scaler"]["scale"] > 0
    assert all(torch.isfinite(v).all() for v in st["student"].values() if v.is_floating_point())


# ------------------------------------------------------------------ mid-epoch resume and progress lines
MID_STEPS = 2  # log.checkpoint_steps of the mid-epoch runs
TIMING = ("images_per_s", "epoch_time_s")


def _mid_epoch_cfg(**over):
    return _cfg(
        epochs=3,
        deterministic=True,
        **{
            "data.train": "synthetic:shapes?n=96&n_val=16&size=16&types=3",  # 6 optimizer steps per epoch
            "aug.enabled": True,
            "aug.auto_augment": "rand-m9-mstd0.5-inc1",
            "aug.reprob": 0.25,
            "aug.mixup": 0.8,
            "aug.cutmix": 1.0,
            "aug.repeated_aug": 2,
            "ema.enabled": True,
            "optim.grad_accum": 2,
            "optim.clip_grad": 1.0,
            "model.kwargs": {**S_KW, "drop_path_rate": 0.1},
            "log.checkpoint_steps": MID_STEPS,
            **over,
        },
    )


def _train_cmd(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "vitdistill", "train", "--config", str(path), "--output", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: a mid-epoch-checkpointing run that nobody kills, its stderr sent to a file."""
    root = tmp_path_factory.mktemp("uninterrupted")
    log = root / "log.txt"
    with open(log, "w") as f:
        subprocess.run(
            _train_cmd(_write(root / "c.yaml", _mid_epoch_cfg()), root / "run"),
            check=True,
            env=_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    return root / "run", log


def _logged_step(run: Path) -> int:
    """The last optimizer step in metrics.jsonl (a line cut by the kill is ignored)."""
    steps = [0]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            steps.append(json.loads(line)["step"])
    return max(steps)


def _process_tree(root: int) -> list[int]:
    """``root`` and every live descendant. torchrun starts each worker in a session of its own,
    so a process-group kill would miss them: the tree is followed through parent pids instead."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("killing a run's process tree reads /proc (Linux)")
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        ppid = _live_parent(int(stat.parent.name))
        if ppid is not None:
            children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _live_parent(pid: int) -> int | None:
    """The parent pid of ``pid`` while it runs; None once it is gone or a zombie (which writes nothing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except (OSError, IndexError):
        return None
    return int(fields[1]) if fields[0] != "Z" else None


def _alive(pid: int) -> bool:
    return _live_parent(pid) is not None


def _kill_tree(root: int) -> None:
    """SIGKILL ``root`` and all its descendants as a preempted job dies: all at once. Every process
    is stopped first, so none writes a file after another has died; returns once all are gone."""
    tree = _process_tree(root)
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    tree = _process_tree(root) + tree  # anything forked while the first pass ran
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    gone = time.time() + 30
    while any(_alive(p) for p in tree if p != root) and time.time() < gone:
        time.sleep(0.01)
    assert not any(_alive(p) for p in tree if p != root), "a process of the run outlived SIGKILL"


def _kill_after_mid_epoch_checkpoint(cmd: list[str], run: Path, past_update: int) -> tuple[int, int]:
    """Start ``cmd``; SIGKILL it once last.pt is a mid-epoch checkpoint past ``past_update`` AND
    the run has logged a step after that checkpoint (so the resumed run has steps to redo).

    Returns (updates in last.pt after the kill, the last optimizer step the run had logged).
    """
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last, seen, kept, deadline = run / "checkpoints" / "last.pt", None, None, time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if kept is not None and _logged_step(run) > kept:
            break
        with contextlib.suppress(FileNotFoundError):
            if kept is None and last.stat().st_mtime_ns != seen:
                seen = last.stat().st_mtime_ns
                st = ckpt_mod.load(last)
                if st["in_epoch"] is not None and st["num_updates"] > past_update:
                    kept = st["num_updates"]
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    _kill_tree(proc.pid)  # the run and its workers (data loaders, torchrun's ranks), as in a preempted job
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    return ckpt_mod.load(last)["num_updates"], _logged_step(run)


def _assert_same_run(a: Path, b: Path, epochs: int = 3) -> None:
    sa, sb = ckpt_mod.load(a / "checkpoints" / "last.pt"), ckpt_mod.load(b / "checkpoints" / "last.pt")
    assert sa["epoch"] == sb["epoch"] == epochs and sa["num_updates"] == sb["num_updates"] == 6 * epochs
    assert sb["in_epoch"] is None
    for part in ("student", "ema"):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), f"{part}.{k} differs"
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    # the metrics are the uninterrupted run's, step by step, timings aside (the resumed epochs' means too)
    ra, rb = (
        [
            {k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (r / "metrics.jsonl").read_text().splitlines()
        ]
        for r in (a, b)
    )
    assert ra == rb
    ja, jb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert ja["last"] == jb["last"] and ja["best"] == jb["best"]
    assert not [p for p in (b / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("workers,kill_after", [(0, [0, 13]), (2, [7])])
def test_sigkill_mid_epoch_and_resume_is_bitwise_identical(tmp_path, uninterrupted, workers, kill_after):
    """SIGKILL inside an epoch after a mid-epoch checkpoint; --resume auto ends bitwise equal.

    Each kill waits for a mid-epoch last.pt past the given optimizer step (6 steps per epoch). With
    DataLoader workers the augmentation is still seeded per image, so the killed run with 2 workers
    equals the uninterrupted run with none.
    """
    full, _ = uninterrupted
    path = _write(tmp_path / "c.yaml", _mid_epoch_cfg(**{"data.num_workers": workers}))
    run = tmp_path / "run"
    redone = []
    for k, after in enumerate(kill_after):
        cmd = _train_cmd(path, run) + (["--resume", "auto"] if k else [])
        kept, logged = _kill_after_mid_epoch_checkpoint(cmd, run, after)
        assert kept % 6 and 0 <= logged - kept <= MID_STEPS  # mid-epoch; a kill loses <= checkpoint_steps
        redone.append(logged - kept)
    subprocess.run(_train_cmd(path, run) + ["--resume", "auto"], check=True, env=_env(), capture_output=True)
    print(f"workers={workers}: {len(kill_after)} kill(s), optimizer steps redone per kill: {redone}")
    _assert_same_run(full, run)


def test_two_process_sigkill_mid_epoch_and_resume_is_bitwise_identical(tmp_path):
    """torchrun (gloo): the mid-epoch checkpoint holds every rank's RNG states and loss sums."""
    cfg = _mid_epoch_cfg()
    cfg["epochs"] = 2
    path = _write(tmp_path / "c.yaml", cfg)

    def cmd(out: Path, *extra: str) -> list[str]:
        run = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        return [sys.executable, *run, *_train_cmd(path, out)[1:], *extra]

    subprocess.run(cmd(tmp_path / "full"), check=True, env=_env(), capture_output=True)
    kept, logged = _kill_after_mid_epoch_checkpoint(cmd(tmp_path / "run"), tmp_path / "run", 6)
    assert kept % 6 and 0 <= logged - kept <= MID_STEPS
    assert len(ckpt_mod.load(tmp_path / "run" / "checkpoints" / "last.pt")["in_epoch"]["ranks"]) == 2
    p = subprocess.run(cmd(tmp_path / "run", "--resume", "auto"), env=_env(), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    _assert_same_run(tmp_path / "full", tmp_path / "run", epochs=2)


def test_train_logs_one_line_per_epoch_to_a_file(uninterrupted):
    _, log = uninterrupted
    lines = [x for x in log.read_text().splitlines() if x.startswith("epoch ")]
    pat = (
        r"epoch (\d)/3  train loss \d+\.\d{4} \(ce \d+\.\d{4}\)  val top-1 \d+\.\d\d \(EMA \d+\.\d\d\)"
        r"  \d+ img/s  ETA \d+(s|m\d\ds)"
    )
    assert [re.fullmatch(pat, x).group(1) for x in lines] == ["1", "2", "3"], lines
    assert "\r" not in log.read_text()  # no progress bar written into a file
    assert lines[-1].endswith("ETA 0s")


def test_sampler_resumes_at_a_step_without_the_skipped_images():
    for world, rank in ((1, 0), (2, 1)):
        s = EpochSampler(40, 8, world, rank, 2, repeats=2, seed=3, seeded=True)
        s.set_epoch(4)
        whole = list(s)
        per_step = len(whole) // s.steps
        for start in range(s.steps + 1):
            s.set_epoch(4, start_step=start)
            assert list(s) == whole[start * per_step :] and len(s) == len(whole) - start * per_step
    # the seeds are a function of (seed, epoch, position): ranks and epochs do not share them
    a, b = EpochSampler(40, 8, 2, 0, 1, seeded=True), EpochSampler(40, 8, 2, 1, 1, seeded=True)
    seeds = [x[1] for x in list(a) + list(b)]
    assert len(set(seeds)) == 40
    a.set_epoch(1)
    assert not {x[1] for x in a} & set(seeds)


def test_seeded_samples_depend_on_the_key_only_and_keep_the_process_rng():
    import random

    import numpy as np

    from vitdistill.data import build_dataset, train_transform
    from vitdistill.distill.sampler import SeededSamples

    m = timm.create_model("vit_tiny_patch16_224", **S_KW)
    ds = build_dataset("synthetic:shapes?n=8&size=16", "train")
    ds.transform = train_transform(m, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5, scale=(0.08, 1.0))
    s = SeededSamples(ds)
    torch.manual_seed(0)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    pair = s.__getitems__([(3, 11), (5, 12)])  # what the DataLoader calls with a batch of keys
    after = torch.get_rng_state(), random.getstate(), np.random.get_state()[1]
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and (before[2] == after[2]).all()
    alone = s[(5, 12)]  # read on its own, after other reads: the same augmented image
    assert torch.equal(pair[1][0], alone[0]) and pair[1][1:] == alone[1:]
    assert not torch.equal(alone[0], s[(5, 13)][0])  # another seed, another augmentation


@pytest.mark.parametrize(
    "kw", ["drop_rate: .nan", "drop_path_rate: 1.5", "attn_drop_rate: -0.1", "init_values: .inf"]
)
def test_model_settings_timm_takes_on_trust_are_checked(tmp_path, capsys, kw):
    """A NaN or out-of-range drop rate reached timm's dropout mid-forward: a traceback and a half run."""
    cfg = tmp_path / "c.yaml"
    kwargs = "{img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2, " + kw + "}"
    data = f"data: {{train: '{DATA}'}}\n"
    cfg.write_text(f"model: {{name: vit_tiny_patch16_224, kwargs: {kwargs}}}\nepochs: 1\n{data}")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model setting " + kw.split(":")[0] in err[0], err
    assert not (tmp_path / "run").exists()
