"""Every metrics.jsonl number and every epoch line reach TensorBoard and W&B (offline), read back from their files."""

from __future__ import annotations

import json
import os

import pytest

from _helpers import train_cfg
from vitdistill.distill import train

wandb = pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

STUDENT = "deit_tiny_patch16_224"


def _wandb_rows(path) -> list[dict]:
    """History rows of an offline W&B run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunk, rows = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(chunk)
            chunk = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                )
    return rows


def _expected(records) -> dict[tuple[int, str], float]:
    """(step, KIND/KEY) -> value for every number of every record (the step and epoch counters aside)."""
    out = {}
    for r in records:
        for k, v in r.items():
            if k not in ("kind", "step", "epoch") and isinstance(v, int | float) and not isinstance(v, bool):
                out[(r["step"], f"{r['kind']}/{k}")] = float(v)
    return out


def test_every_metric_and_epoch_line_reaches_tensorboard_and_wandb(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    over = {"epochs": 2, "log.tensorboard": True, "log.wandb": True, "loss.alpha": 0.0}
    train(train_cfg(STUDENT, **over), output=run)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("epoch ")]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    want = _expected(records)
    assert len(lines) == 2 and {r["kind"] for r in records} == {"step", "epoch"}
    assert any(k.endswith("/val_top1") for _, k in want) and any(k == "step/lr" for _, k in want)

    # W&B: one offline run in RUN/wandb, its id kept in RUN/wandb_id for a resumed run
    run_id = (run / "wandb_id").read_text().strip()
    (wfile,) = run.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    rows = _wandb_rows(wfile)
    got = {(row["_step"], k): v for row in rows for k, v in row.items() if not k.startswith("_")}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    logged_lines = [v for (_, k), v in sorted(got.items()) if k == "epoch_line"]
    assert lines == logged_lines  # as printed

    # TensorBoard: the same numbers as scalars at the same steps, the lines as text
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    tb = {(e.step, tag): e.value for tag in ea.Tags()["scalars"] for e in ea.Scalars(tag)}
    assert set(tb) == set(want)
    for key, value in want.items():
        assert tb[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    texts = [e.tensor_proto.string_val[0].decode() for e in ea.Tensors("epoch_line/text_summary")]
    assert texts == logged_lines


def test_wandb_missing_or_failing_is_one_line(tmp_path, monkeypatch):
    from vitdistill.errors import UserError

    # online, with no API key anywhere (and no network here): one line that names offline mode
    wandb.teardown()  # W&B keeps the settings of an earlier run of this process (the offline one above)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115 (closed by pytest's monkeypatch teardown)
    with pytest.raises(UserError, match=r"log.wandb: cannot start a W&B run .*WANDB_MODE=offline"):
        train(train_cfg(STUDENT, **{"log.wandb": True}), output=tmp_path / "run")
