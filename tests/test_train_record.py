"""Runs that go numerically wrong stop, save nothing non-finite and say so; a resume with new
settings keeps the run's record true. All through the CLI on tiny models and synthetic data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
import yaml

from _helpers import TINY_KW, train_cfg
from vitdistill.cli import main
from vitdistill.distill import checkpoint as ckpt_mod
from vitdistill.distill import finite
from vitdistill.distill.run_log import RunLog
from vitdistill.errors import UserError


def _cfg(**over) -> dict:
    # a constant learning rate (step schedule, no warmup), so lr values can be checked by hand
    base = {"sched.name": "step", "sched.warmup_epochs": 0, "sched.decay_epochs": 100, "epochs": 1}
    return train_cfg("vit_tiny_patch16_224", **{**base, **over})


def _train(tmp_path: Path, cfg: dict, run: Path, *extra: str) -> int:
    config = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return main(["train", "--config", str(config), "--output", str(run), *extra])


def _records(run: Path) -> list[dict]:
    def refuse(name):  # NaN / Infinity are not JSON
        raise ValueError(f"metrics.jsonl holds {name}")

    return [json.loads(x, parse_constant=refuse) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()  # progress lines may come first
    assert err[-1].startswith("vitdistill train: error: "), err
    assert not any("Traceback" in x or "error" in x for x in err[:-1]), err
    return err[-1]


def test_exploding_lr_stops_at_the_step_and_saves_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(**{"optim.lr": 1e20}), run) == 2
    line = _error_line(capsys)
    assert "non-finite loss at optimizer step" in line and "no checkpoint was written" in line
    assert "last.pt" not in line
    assert not list((run / "checkpoints").iterdir())  # no best.pt, no last.pt
    assert not (run / "summary.json").exists()
    _records(run)


def test_second_epoch_blowup_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(), run) == 0
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    # the resumed epoch really runs at the new lr, and blows up
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.lr": 1e20}), run, "--resume", "auto") == 2
    line = _error_line(capsys)
    assert f"the last good checkpoint is {last}" in line and last.is_file()
    assert int(re.search(r"optimizer step (\d+)", line)[1]) >= 3  # epoch 1 starts at step 3
    assert last.read_bytes() == before
    state = ckpt_mod.load(last)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=6, **TINY_KW)  # the data's 6 classes
    model.load_state_dict(state["student"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(2, 3, 16, 16))).all()
    assert all(math.isfinite(v) for r in _records(run) for v in r.values() if isinstance(v, float))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY_KW)
    finite.check_weights({"": model}, 7, tmp_path)  # finite: passes
    with torch.no_grad():
        model.blocks[1].mlp.fc2.weight[0, 0] = float("inf")
    with pytest.raises(
        UserError, match=r"after optimizer step 7 \(blocks\.1\.mlp\.fc2\.weight\).*no checkpoint"
    ):
        finite.check_weights({"": model}, 7, tmp_path)
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(UserError, match=r"ema\.blocks\.1.*last good checkpoint is .*last\.pt"):
        finite.check_weights({"ema.": model}, 7, tmp_path)


def test_non_finite_epoch_number_stops_and_the_log_stays_json(tmp_path):
    with pytest.raises(UserError, match=r"non-finite val_loss at optimizer step 4 \(epoch 1\)"):
        finite.check_record({"epoch": 1, "val_loss": float("nan"), "val_top1": 50.0}, 4, tmp_path)
    from vitdistill.distill import config as C

    log = RunLog(tmp_path, enabled=True, cfg=C.defaults())  # no TensorBoard, no W&B
    log.open(0, 0)
    log.write({"kind": "epoch", "val_loss": float("nan"), "x": [float("-inf"), 1.0], "lr": float("inf")})
    log.close()
    assert _records(tmp_path) == [{"kind": "epoch", "val_loss": None, "x": [None, 1.0], "lr": None}]


def test_resume_with_new_settings_keeps_the_record_true(tmp_path, capsys):
    run = tmp_path / "run"
    first = _cfg(**{"optim.lr": 1e-3})
    assert _train(tmp_path, first, run) == 0
    config_before = (run / "config.yaml").read_text()
    steps = json.loads((run / "summary.json").read_text())["steps"]
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.lr": 1e-2}), run, "--resume", "auto") == 0
    assert (run / "config.yaml").read_text() == config_before  # the config the run started with
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [h["event"] for h in history] == ["start", "resume"]
    assert history[1]["step"] == steps and history[1]["epoch"] == 1
    assert history[1]["changed"] == {"epochs": {"from": 1, "to": 2}, "optim.lr": {"from": 1e-3, "to": 1e-2}}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lr"] == 1e-3 and summary["epochs"] == 2
    assert summary["config_changes"] == [{"step": steps, "epoch": 1, "changed": history[1]["changed"]}]
    # the new lr is the one the resumed steps ran at
    lrs = {r["step"]: r["lr"] for r in _records(run) if r["kind"] == "step"}
    assert {lrs[s] for s in lrs if s <= steps} == {1e-3} and {lrs[s] for s in lrs if s > steps} == {1e-2}
    # a resume that changes nothing adds a history line and no change
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.lr": 1e-2}), run, "--resume", "auto") == 0
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert (
        history[2]["changed"] == {}
        and len(json.loads((run / "summary.json").read_text())["config_changes"]) == 1
    )


def test_resume_with_another_optimizer_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(), run) == 0
    capsys.readouterr()
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.opt": "sgd"}), run, "--resume", "auto") == 2
    assert "optim.opt cannot change on resume" in _error_line(capsys)
    # other parameter groups: the optimizer state cannot fit; one line, whatever torch says
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.decay_embeddings": True}), run, "--resume", "auto") == 2
    assert "optimizer state does not fit" in _error_line(capsys)


def test_config_changes_name_each_key_and_skip_keys_newer_than_the_checkpoint():
    from vitdistill.distill import config as C
    from vitdistill.distill.history import config_changes

    old = C.resolve(_cfg())
    new = C.resolve(_cfg(**{"optim.lr": 0.5, "loss.smoothing": 0.2}))
    assert config_changes(old, new) == {
        "optim.lr": {"from": 1e-3, "to": 0.5},
        "loss.smoothing": {"from": old["loss"]["smoothing"], "to": 0.2},
    }
    del old["log"]["interval"]  # a checkpoint written before the key existed
    assert config_changes(old, C.resolve(_cfg(**{"log.interval": C.default("log.interval")}))) == {}
    assert config_changes(old, C.resolve(_cfg(**{"log.interval": 7}))) == {
        "log.interval": {"from": "(not set)", "to": 7}
    }


@pytest.mark.parametrize(
    "setting, said",
    [
        ("optim.clip_grad=-1", "'optim.clip_grad' must be >= 0, got -1.0"),  # would flip the gradient
        ("optim.lr=-0.001", "'optim.lr' must be > 0"),
        ("sched.min_lr=-1e-5", "'sched.min_lr' must be >= 0"),
        ("optim.lr=.nan", "'optim.lr' must be a finite number, got nan"),
        ("loss.smoothing=.nan", "'loss.smoothing' must be a finite number"),
        ("optim.clip_grad=.inf", "'optim.clip_grad' must be a finite number, got inf"),
        ("ema.decay=1.5", "'ema.decay' must be in [0, 1], got 1.5"),
        ("data.num_workers=-1", "'data.num_workers' must be >= 0, got -1"),  # was a DataLoader traceback
    ],
)
def test_settings_that_would_train_nonsense_are_refused_before_anything_is_written(
    tmp_path, capsys, setting, said
):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(), run, "--set", setting) == 2
    assert said in _error_line(capsys)
    assert not run.exists()


def test_resume_with_fewer_epochs_than_done_is_refused_and_the_run_kept(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(epochs=2), run) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _train(tmp_path, _cfg(epochs=1), run, "--resume", "auto") == 2
    assert "holds 2 finished epochs, more than epochs=1" in _error_line(capsys)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # summary still says 2


def test_a_deleted_config_yaml_comes_back_as_the_run_started(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tmp_path, _cfg(**{"optim.lr": 1e-3}), run) == 0
    started = (run / "config.yaml").read_text()
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.lr": 1e-2}), run, "--resume", "auto") == 0
    (run / "config.yaml").unlink()
    # a finished run resumed once more, with yet another change: nothing trains, the record stays true
    assert _train(tmp_path, _cfg(epochs=2, **{"optim.lr": 5e-2}), run, "--resume", "auto") == 0
    assert (run / "config.yaml").read_text() == started
