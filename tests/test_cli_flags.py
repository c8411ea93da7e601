"""A timm user's flags on `train`: shortcuts for config keys, hints for unknown flags, and what
``--resume auto`` picked up."""

from __future__ import annotations

import pytest
import yaml

from vitdistill.cli import build_parser, main
from vitdistill.commands.flags import shortcut_overrides
from vitdistill.commands.train import SHORTCUTS

KW = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
DATA = "synthetic:shapes?n=12&n_val=6&size=16&types=3"


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "cfg.yaml"
    cfg = {
        "model": {"name": "vit_tiny_patch16_224", "kwargs": KW},
        "data": {"train": DATA, "batch_size": 4},
        "epochs": 3,
        "aug": {"auto_augment": None, "reprob": 0.0},
        "log": {"progress": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_each_shortcut_is_its_set_key():
    argv = ["train", "--config", "c.yaml", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3"]
    argv += ["--amp", "bf16", "--workers", "2", "--pretrained", "--device", "cuda:1", "--seed", "7"]
    got = shortcut_overrides(build_parser().parse_args(argv), SHORTCUTS)
    assert got == [
        "epochs=2",
        "data.batch_size=8",
        "optim.lr=1e-3",
        "amp=bf16",
        "data.num_workers=2",
        "model.pretrained=true",
        "device=cuda:1",
        "seed=7",
    ]
    assert shortcut_overrides(build_parser().parse_args(["train", "--config", "c.yaml"]), SHORTCUTS) == []


def test_shortcuts_reach_the_run_and_resume_auto_says_what_it_resumed(cfg, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", cfg, "--output", str(run), "--set", "epochs=5"]
    assert main([*argv, "--epochs", "1", "--batch-size", "6", "--lr", "0.002", "--seed", "3"]) == 0
    argv += ["--device", "cpu", "--workers", "0", "--amp", "none"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 1  # the flag wins over --set
    assert saved["data"]["batch_size"] == 6 and saved["optim"]["lr"] == 0.002 and saved["seed"] == 3
    capsys.readouterr()
    assert (
        main(
            [*argv, "--epochs", "2", "--batch-size", "6", "--lr", "0.002", "--seed", "3", "--resume", "auto"]
        )
        == 0
    )
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "resuming" in x)
    assert str(run / "checkpoints" / "last.pt") in line and "1 of 2 epochs done" in line, err
    assert "optimizer steps" in line


def test_resume_auto_of_a_finished_run_says_nothing_is_left(cfg, tmp_path, capsys):
    argv = ["train", "--config", cfg, "--output", str(tmp_path / "run"), "--epochs", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--resume", "auto"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "resuming" in x)
    assert "1 of 1 epochs done" in line and "nothing left to train: raise epochs" in line, line


def test_a_bad_shortcut_value_names_the_key(cfg, tmp_path, capsys):
    assert main(["train", "--config", cfg, "--output", str(tmp_path / "r"), "--epochs", "x"]) == 2
    assert "'epochs'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--lr", "nan", "config key 'optim.lr' must be a finite number, got nan"),
        ("--lr", "inf", "config key 'optim.lr' must be a finite number, got inf"),
        ("--lr", "-1", "config key 'optim.lr' must be > 0"),
        ("--lr", "", "--lr needs a value"),
        ("--workers", "-1", "config key 'data.num_workers' must be >= 0, got -1"),
        ("--seed", "-5", "config key 'seed' must be in [0, 4294967295], got -5"),
        ("--seed", str(10**23), "config key 'seed' must fit in a signed 64-bit integer"),
        ("--set", "loss.temperature=nan", "config key 'loss.temperature' must be a finite number"),
        ("--set", "data.val_batch_size=0", "config key 'data.val_batch_size' must be >= 1 (or null), got 0"),
        ("--set", "data.max_train_images=-1", "config key 'data.max_train_images' must be >= 1 (or null)"),
        ("--amp", "off", "config key 'amp' must be one of none, bf16, fp16; got False (YAML reads off"),
    ],
)
def test_values_torch_cannot_take_are_one_line_before_the_run(cfg, tmp_path, capsys, flag, value, says):
    assert main(["train", "--config", cfg, "--output", str(tmp_path / "r"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitdistill train: error: ") and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["train", "--config", "c.yaml", "--log-tensorboard"], "(did you mean --set log.tensorboard=true?)"),
        (
            ["train", "--config", "c.yaml", "--warmup-epochs", "2"],
            "(did you mean --set sched.warmup_epochs=VALUE?)",
        ),
        (["train", "--config", "c.yaml", "--mixup=0.8"], "(did you mean --set aug.mixup=VALUE?)"),
        (["train", "--config", "c.yaml", "--bach-size", "3"], "(did you mean --batch-size?)"),
        (["inspect", "vit_tiny_patch16_224", "--batchsize", "3"], "(did you mean --batch-size?)"),
        (["analyze", "m", "--data", "d", "--bootstraps", "9"], "(did you mean --bootstrap?)"),
    ],
)
def test_an_unknown_flag_names_the_closest_flag_or_key(argv, hint, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    err = capsys.readouterr().err
    assert ei.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "unrecognized arguments" in err and hint in err, err


def test_an_unknown_flag_far_from_everything_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", "c.yaml", "--xyzzy-frobnicate"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --xyzzy-frobnicate" in err and "did you mean" not in err


def test_analyze_says_which_images_and_that_dimensions_are_percentiles(tmp_path, capsys):
    argv = [
        "analyze",
        "vit_tiny_patch16_224",
        "--set",
        "img_size=16",
        "--set",
        "patch_size=4",
        "--set",
        "depth=2",
    ]
    argv += [
        "--data",
        "synthetic:shapes?n=16&size=16",
        "--out",
        str(tmp_path / "a"),
        "--no-plots",
        "--no-progress",
    ]
    assert main([*argv, "--permutations", "0", "--rotation-images", "0"]) == 0
    out = capsys.readouterr().out
    assert ": 2 images," in out  # the val split of 16 generated images holds 16 // 6
    assert "the val split of synthetic:shapes?n=16&size=16" in out and "n // 6 = 2" in out, out
    assert "99th percentile over images" in out and "fractional" in out


def test_no_cuda_home_warning_on_a_machine_without_cuda(tmp_path):
    """torch.utils.cpp_extension (imported by torch.utils.benchmark) warns about CUDA_HOME when
    torch has no CUDA: the throughput run must not import it."""
    import os
    import subprocess
    import sys

    code = (
        "import sys\nfrom vitdistill.cli import main\n"
        "main(['inspect', 'vit_tiny_patch16_224', '--set', 'img_size=32', '--set', 'patch_size=8', "
        "'--set', 'depth=1', '--batch-size', '1', '--iters', '1', '--warmup', '0'])\n"
        "print('cpp_extension' in ' '.join(sys.modules))"
    )
    env = dict(os.environ, CUDA_HOME=str(tmp_path), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("False") and "CUDA_HOME" not in r.stderr, r.stderr


def test_eval_takes_the_familiar_flags_that_apply(cfg, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main(["train", "--config", cfg, "--output", str(run), "--epochs", "1"]) == 0
    out = tmp_path / "eval.json"
    argv = ["eval", str(run), "--data", DATA, "--batch-size", "3", "--workers", "0", "--device", "cpu"]
    assert main([*argv, "--amp", "bf16", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["amp"] == "bf16" and res["n"] == 6
    capsys.readouterr()
    assert main([*argv, "--pretrained"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "brings its own weights" in err
    with pytest.raises(SystemExit):
        main([*argv, "--epochs", "3"])
    assert "--epochs: eval does not train" in capsys.readouterr().err
