"""`vitdistill demo --quick` end to end: every number in the report comes from a stage's files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vitdistill.cli import main
from vitdistill.demo.report import verdict

METHOD_DIRS = {
    "Student alone": "alone",
    "Soft KD": "softkd",
    "Feature KD, discarded projector": "featkd",
    "Lift": "lift",
    "WideLast": "widelast",
    "Lift, no teacher": "lift_alone",
    "WideLast, no teacher": "widelast_alone",
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def _tables(md: str) -> list[list[list[str]]]:
    """Markdown pipe tables as lists of rows of cells (header included, separator dropped)."""
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    if cur:
        tables.append(cur)
    return tables


def _last_epoch_top1(run: Path) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    epochs = [r for r in recs if r.get("kind") == "epoch"]
    return epochs[-1]["val_top1"]


def _human(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.2f}k"
    return str(n)


def test_stage_folders_and_files(demo):
    for d in ("1-data", "2-teacher", "3-teacher-analysis", "4-students", "5-student-analysis", "6-report"):
        assert (demo / d / "stage.json").is_file(), d
    assert (demo / "1-data" / "samples.png").stat().st_size > 1000
    assert (demo / "report.md").is_file() and (demo / "report.html").is_file()
    runs = sorted(p.name for p in (demo / "4-students").iterdir() if p.is_dir())
    assert len(runs) == 7 * 2 and "featkd-seed1" in runs


def test_accuracy_table_matches_run_files(demo):
    md = (demo / "report.md").read_text()
    acc = next(t for t in _tables(md) if t[0][0] == "Method" and "Per seed" in t[0])
    head = acc[0]
    rows = {r[0]: dict(zip(head, r, strict=True)) for r in acc[1:]}
    teacher_sum = json.loads((demo / "2-teacher" / "summary.json").read_text())
    t_row = next(v for k, v in rows.items() if k.startswith("Teacher"))
    assert t_row["Per seed"] == f"{teacher_sum['last']['top1']:.2f}"
    assert t_row["Params"] == _human(teacher_sum["params"])
    means = {}
    for label, key in METHOD_DIRS.items():
        row = rows[label]
        runs = [demo / "4-students" / f"{key}-seed{s}" for s in (0, 1)]
        top1 = [json.loads((r / "summary.json").read_text())["last"]["top1"] for r in runs]
        # summary.json and the last epoch record of metrics.jsonl agree, and the report shows them.
        assert top1 == pytest.approx([_last_epoch_top1(r) for r in runs])
        assert row["Per seed"] == " / ".join(f"{v:.2f}" for v in top1)
        mean, std = float(np.mean(top1)), float(np.std(top1, ddof=1))
        assert row["Top-1 % (mean +- std)"] == f"{mean:.2f} +- {std:.2f}"
        means[key] = mean
        assert row["Params"] == _human(json.loads((runs[0] / "summary.json").read_text())["params"])
    for label, key in METHOD_DIRS.items():
        assert rows[label]["Gain over alone"] == f"{means[key] - means['alone']:.2f}"
    # MACs and images/s come from the profile stage.
    prof = {
        r["model"]: r for r in json.loads((demo / "5-student-analysis" / "profile.json").read_text())["rows"]
    }
    assert rows["Lift"]["MACs"] == _human(prof["lift"]["macs"])
    assert rows["WideLast"]["Images/s"] == f"{prof['widelast']['throughput']:.0f}"
    # Lift adds parameters (the kept projector), WideLast more (a whole wide block).
    assert prof["alone"]["params"] < prof["lift"]["params"] < prof["widelast"]["params"]


def test_verdict_sentence_follows_the_numbers(demo):
    report = json.loads((demo / "6-report" / "report.json").read_text())
    md = (demo / "report.md").read_text()
    assert report["verdict"]["text"] in md

    # Recompute the verdict's comparisons independently from the run files.
    def seeds(key):
        return [
            json.loads((demo / "4-students" / f"{key}-seed{s}" / "summary.json").read_text())["last"]["top1"]
            for s in (0, 1)
        ]

    f = seeds("featkd")
    for comp in report["verdict"]["comparisons"]:
        r = seeds(comp["method"])
        diff = np.mean(r) - np.mean(f)
        se = math.sqrt(np.var(r, ddof=1) / 2 + np.var(f, ddof=1) / 2)
        assert comp["diff"] == pytest.approx(diff)
        assert comp["se"] == pytest.approx(se)
        expected = "above" if diff > 2 * se else "below" if diff < -2 * se else "within noise"
        assert comp["status"] == expected


def test_teacher_analysis_table_matches_analysis_and_paper(demo):
    md = (demo / "report.md").read_text()
    ranks = next(t for t in _tables(md) if t[0][:3] == ["Model", "C", "N"])
    summ = json.loads((demo / "3-teacher-analysis" / "summary.json").read_text())
    mini = ranks[1]
    assert mini[1] == str(summ["channels"]) and mini[2] == str(summ["tokens"])
    assert mini[3:7] == [f"{summ['svd']['p99'][t]:.1f}" for t in ("80", "90", "95", "99")]
    assert mini[7:11] == [f"{summ['pca']['p99'][t]:.1f}" for t in ("80", "90", "95", "99")]
    # The paper's row is the published CaiT-S24 row, verbatim.
    ref = (Path(__file__).parents[1] / "src" / "vitdistill" / "reference" / "svd_rank_table.md").read_text()
    cait = next(line for line in ref.splitlines() if "| CaiT-S24 |" in line)
    cells = [c.strip() for c in cait.strip().strip("|").split("|")]
    assert ranks[2][1] == cells[2] and ranks[2][3:11] == cells[3:11]
    sep = next(t for t in _tables(md) if t[0][:2] == ["Model", "D"])
    assert sep[1][2:] == [f"{summ['sep']['full']['d_over_D'][a]:.3f}" for a in ("50", "60", "70", "80", "90")]
    students = next(t for t in _tables(md) if "Shared 99% / C" in t[0])
    lift = next(r for r in students if r[0] == "Lift")
    ls = json.loads((demo / "5-student-analysis" / "lift" / "summary.json").read_text())
    assert lift[1] == str(ls["channels"]) and lift[3] == f"{ls['svd']['p99']['99']:.1f}"


def test_html_is_self_contained(demo):
    text = (demo / "report.html").read_text()
    assert text.count("data:image/png;base64,") >= 4
    assert "src='http" not in text and 'src="http' not in text
    report = json.loads((demo / "6-report" / "report.json").read_text())
    assert f"{report['results']['lift']['mean']:.2f}" in text


def test_rerun_skips_finished_stages_and_refuses_other_settings(demo, capsys):
    before = (demo / "report.md").read_text()
    assert main(["demo", "--quick", "--out", str(demo), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished earlier, skipped") == 6
    assert (demo / "report.md").read_text() == before
    assert main(["demo", "--quick", "--epochs", "2", "--out", str(demo), "--no-progress"]) == 2
    assert "--fresh" in capsys.readouterr().err


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--quick",
                "--student-width",
                "64",
                "--teacher-width",
                "48",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 2
    )
    assert "narrower than the teacher" in capsys.readouterr().err
    assert main(["demo", "--quick", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path / "c")]) == 2
    assert "not a demo folder" in capsys.readouterr().err


def _res(vals: dict[str, list[float]]) -> dict:
    out = {}
    for k, v in vals.items():
        m = float(np.mean(v))
        out[k] = {"label": k, "mean": m, "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "n": len(v)}
    return out


def test_verdict_rule_hand_cases():
    up = verdict(_res({"featkd": [50, 51], "lift": [60, 61], "widelast": [62, 63]}))
    assert up["code"] == "reproduced" and "reproduces" in up["text"]
    down = verdict(_res({"featkd": [60, 61], "lift": [50, 51], "widelast": [62, 63]}))
    assert down["code"] == "reversed" and "does not reproduce" in down["text"]
    # Lift +1 with a standard error of ~2.1: not resolved.
    noisy = verdict(_res({"featkd": [50, 56], "lift": [51, 57], "widelast": [70, 71]}))
    assert noisy["code"] == "unresolved"
    one_seed = verdict(_res({"featkd": [50], "lift": [60], "widelast": [70]}))
    assert one_seed["code"] == "unresolved" and "one seed" in one_seed["text"]
    assert verdict(_res({"featkd": [50, 51]}))["code"] == "not_run"


def test_overrides_scale_every_run_from_the_flags(tmp_path):
    import yaml

    from vitdistill.demo import METHODS, TEACHER, DemoSettings, Study
    from vitdistill.demo.methods import config_path
    from vitdistill.distill.config import resolve

    study = Study(
        DemoSettings(
            data=str(tmp_path / "imgs"),
            img_size=48,
            patch_size=8,
            teacher_width=96,
            student_width=48,
            train_images=500,
            val_images=100,
            epochs=3,
        ),
        tmp_path / "out",
    )
    lift = next(m for m in METHODS if m.key == "lift")
    cfg = resolve(yaml.safe_load(config_path(lift).read_text()), study.overrides(lift, seed=1, epochs=3))
    assert cfg["model"]["kwargs"] == {
        "img_size": 48,
        "patch_size": 8,
        "embed_dim": 48,
        "depth": 4,
        "num_heads": 3,
    }
    assert cfg["model"]["remedy"] == "lift" and cfg["model"]["width"] == 96
    assert cfg["teacher"]["kwargs"]["embed_dim"] == 96 and cfg["teacher"]["checkpoint"].endswith("2-teacher")
    assert cfg["data"]["train"] == str(tmp_path / "imgs") and cfg["data"]["max_train_images"] == 500
    assert cfg["seed"] == 1 and cfg["epochs"] == 3
    t = resolve(yaml.safe_load(config_path(TEACHER).read_text()), study.overrides(TEACHER, seed=0, epochs=5))
    assert t["model"]["kwargs"]["embed_dim"] == 96 and t["teacher"]["name"] is None
    # Every packaged recipe resolves against the training schema.
    for m in METHODS:
        resolve(yaml.safe_load(config_path(m).read_text()), study.overrides(m, seed=0, epochs=1))
