"""`vitdistill demo` end to end on a reduced study: the contrasts and the verdict follow the run files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from vitdistill.cli import main
from vitdistill.demo import stats
from vitdistill.demo.verdict import verdict

ARMS = (
    "alone",
    "softkd",
    "featkd",
    "lift_softkd",
    "lift_featkd",
    "widelast_softkd",
    "widelast_featkd",
    "uniform_featkd",
    "lift_alone",
    "widelast_alone",
)
SEEDS = (3, 4, 5)  # --seed-offset 3 --seeds 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    argv = ["demo", "--quick", "--seeds", "3", "--seed-offset", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return out


def _top1(demo: Path, arm: str, seed: int) -> float:
    return json.loads((demo / "4-students" / f"{arm}-seed{seed}" / "summary.json").read_text())["top1"]


def _tables(md: str) -> list[list[list[str]]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def test_every_arm_and_seed_ran(demo):
    for d in ("1-data", "2-teacher", "3-teacher-analysis", "4-students", "5-student-analysis", "6-report"):
        assert (demo / d / "stage.json").is_file(), d
    runs = sorted(p.name for p in (demo / "4-students").iterdir() if p.is_dir())
    assert runs == sorted(f"{a}-seed{s}" for a in ARMS for s in SEEDS)
    # teacher outputs were cached once per kind of target, not per run
    assert len(list((demo / "4-students").glob("teacher-*.pt"))) == 4


def test_contrasts_match_per_seed_results(demo):
    """Recompute each contrast from the runs' summary.json with numpy and scipy's t interval."""
    report = json.loads((demo / "6-report" / "report.json").read_text())
    top = {a: {s: _top1(demo, a, s) for s in SEEDS} for a in ARMS}
    assert {a: dict(zip(r["seeds"], r["top1"], strict=True)) for a, r in report["results"].items()} == top
    expected = {
        "featkd_vs_softkd": lambda s: top["featkd"][s] - top["softkd"][s],
        "lift_vs_featkd": lambda s: top["lift_featkd"][s] - top["featkd"][s],
        "widelast_vs_featkd": lambda s: top["widelast_featkd"][s] - top["featkd"][s],
        "revival_lift": lambda s: (
            (top["lift_featkd"][s] - top["lift_softkd"][s]) - (top["featkd"][s] - top["softkd"][s])
        ),
        "revival_widelast": lambda s: (
            (top["widelast_featkd"][s] - top["widelast_softkd"][s]) - (top["featkd"][s] - top["softkd"][s])
        ),
        "widelast_vs_uniform": lambda s: top["widelast_featkd"][s] - top["uniform_featkd"][s],
    }
    for name, per_seed in expected.items():
        c = report["contrasts"][name]
        d = np.array([per_seed(s) for s in SEEDS])
        assert c["n"] == 3 and c["per_seed"] == pytest.approx(d.tolist(), abs=1e-9)
        assert c["mean"] == pytest.approx(d.mean(), abs=1e-9)
        if d.std() == 0:
            assert c["ci"] == pytest.approx([d.mean(), d.mean()], abs=1e-9)
        else:
            lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
            assert c["ci"] == pytest.approx([lo, hi], rel=1e-9, abs=1e-9)


def test_quick_report_draws_no_verdict_and_says_so_first(demo):
    report = json.loads((demo / "6-report" / "report.json").read_text())
    assert report["verdict"]["holds"] is None and report["verdict"]["evidence"] is False
    md = (demo / "report.md").read_text()
    first = md.split("\n\n")[1]
    assert "not evidence" in first
    html = (demo / "report.html").read_text()
    assert html.index("not evidence") < html.index("What this shows")
    assert html.count("data:image/png;base64,") >= 4


def test_report_tables_show_the_contrasts(demo):
    report = json.loads((demo / "6-report" / "report.json").read_text())
    table = next(t for t in _tables((demo / "report.md").read_text()) if t[0][0] == "Contrast")
    rows = {r[0].strip("`"): r for r in table[1:]}
    for name, c in report["contrasts"].items():
        assert rows[name][2] == f"{c['mean']:+.2f}"
        assert rows[name][3] == f"{c['ci'][0]:+.2f} to {c['ci'][1]:+.2f}"


def test_paired_arms_share_data_order_and_initial_weights(demo):
    from vitdistill.demo import fit, runs
    from vitdistill.demo.settings import DemoSettings

    s = DemoSettings(quick=True, seeds=3, seed_offset=3).resolved()
    cfg = {
        k: runs.config(s, k, 3, 1, demo / "2-teacher", 29)
        for k in ("alone", "lift_featkd", "widelast_featkd")
    }
    narrow, _ = fit.build_student(cfg["alone"], cfg["alone"], 3, 20)
    lift, _ = fit.build_student(cfg["lift_featkd"], cfg["alone"], 3, 20)
    wide, _ = fit.build_student(cfg["widelast_featkd"], cfg["alone"], 3, 20)
    other, _ = fit.build_student(cfg["alone"], cfg["alone"], 4, 20)
    n_sd = narrow.state_dict()
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        assert torch_equal(lift.state_dict()[key], n_sd[key])
        assert torch_equal(wide.state_dict()[key], n_sd[key])
    assert not torch_equal(other.state_dict()["patch_embed.proj.weight"], n_sd["patch_embed.proj.weight"])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_worker_processes_reproduce_in_process_runs(demo, tmp_path):
    """The same job in a spawned worker gives the same accuracy as in the demo's own process."""
    from vitdistill.demo import runs
    from vitdistill.demo.study import Study

    study = Study(runs.DemoSettings(quick=True, seeds=3, seed_offset=3), demo)
    jobs = [j for j in study.jobs() if j["method"] in ("featkd", "lift_featkd") and j["seed"] == 4]
    jobs = [{**j, "run_dir": str(tmp_path / Path(j["run_dir"]).name)} for j in jobs]
    got = runs.run_all(jobs, workers=2, on_done=lambda _: None)
    for r in got:
        assert r["top1"] == _top1(demo, r["method"], 4)


def test_rerun_skips_finished_stages_and_refuses_other_settings(demo, capsys):
    before = (demo / "report.md").read_text()
    argv = ["demo", "--quick", "--seeds", "3", "--seed-offset", "3", "--out", str(demo), "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 6
    assert (demo / "report.md").read_text() == before
    assert main(argv[:-1] + ["--epochs", "2", "--no-progress"]) == 2
    assert "--fresh" in capsys.readouterr().err


def test_rerun_redoes_a_stage_whose_files_are_gone_and_what_derives_from_it(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--seeds", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    run = out / "4-students" / "featkd-seed1"
    top1 = json.loads((run / "summary.json").read_text())["top1"]
    kept = out / "4-students" / "softkd-seed0" / "checkpoints" / "last.pt"
    kept_mtime = kept.stat().st_mtime_ns
    report = json.loads((out / "6-report" / "report.json").read_text())

    # one student run deleted: that run alone is trained again, then the analysis and the report
    shutil.rmtree(run)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == 3  # data, teacher, teacher analysis
    assert f"{run / 'summary.json'} is missing or cannot be read; running it again" in err
    assert json.loads((run / "summary.json").read_text())["top1"] == top1  # same machine: same run
    assert kept.stat().st_mtime_ns == kept_mtime  # the other runs are not redone
    again = json.loads((out / "6-report" / "report.json").read_text())
    assert again["contrasts"] == report["contrasts"]

    # the report deleted: only the report stage runs
    (out / "report.html").unlink()
    assert main(argv) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 5
    assert (out / "report.html").is_file()

    # the teacher's weights deleted: the teacher and every student are trained again
    (out / "2-teacher" / "checkpoints" / "last.pt").unlink()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == 1  # data only
    assert kept.stat().st_mtime_ns != kept_mtime
    assert json.loads((out / "6-report" / "report.json").read_text())["contrasts"] == report["contrasts"]


def test_rerun_over_damaged_demo_files(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["demo", "--quick", "--seeds", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    contrasts = json.loads((out / "6-report" / "report.json").read_text())["contrasts"]
    capsys.readouterr()

    # a run's summary cut short: that run is trained again, as if it were gone
    summary = out / "4-students" / "featkd-seed1" / "summary.json"
    summary.write_text('{"top1": ')
    assert main(argv) == 0
    assert f"{summary} is missing or cannot be read" in capsys.readouterr().err
    assert json.loads(summary.read_text())["method"] == "featkd"
    assert json.loads((out / "6-report" / "report.json").read_text())["contrasts"] == contrasts

    # a stage marker that cannot be read: the stage runs again
    (out / "3-teacher-analysis" / "stage.json").write_text("{")
    assert main(argv) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 2

    # a file where a run's folder belongs: one line naming it, and --fresh starts over
    run = out / "4-students" / "alone-seed0"
    shutil.rmtree(run)
    run.write_text("not a folder")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("vitdistill demo: error: ")
    assert str(run) in err and "--fresh" in err
    (out / "2-teacher").rename(tmp_path / "teacher")
    (out / "2-teacher").write_text("not a folder either")
    assert main([*argv, "--fresh"]) == 0
    assert (run / "summary.json").is_file()

    # the settings record unreadable: refused in one line, --fresh replaces it
    (out / "demo.json").write_text("x")
    assert main(argv) == 2
    assert "demo.json cannot be read" in capsys.readouterr().err
    assert main([*argv, "--fresh"]) == 0


def test_bad_flags_are_one_line_errors(tmp_path, capsys):
    argv = ["demo", "--quick", "--student-width", "64", "--teacher-width", "48", "--out", str(tmp_path / "a")]
    assert main(argv) == 2
    assert "narrower than the teacher" in capsys.readouterr().err
    assert main(["demo", "--quick", "--seed-offset", "-1", "--out", str(tmp_path / "b")]) == 2
    assert "--seed-offset" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(tmp_path / "c")]) == 2
    assert "not a demo folder" in capsys.readouterr().err


def test_seed_range_past_the_training_seed_limit_is_refused_before_any_stage(tmp_path, capsys):
    from vitdistill.utils.options import SEED_LIMIT

    for offset, seeds in ((SEED_LIMIT - 1, 2), (SEED_LIMIT, 1), (10**25, 1)):
        out = tmp_path / f"o{seeds}-{offset}"
        argv = ["demo", "--quick", "--seed-offset", str(offset), "--seeds", str(seeds), "--out", str(out)]
        assert main(argv + ["--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "vitdistill demo: error: --seed-offset + --seeds - 1" in err
        assert not (out / "1-data").exists()  # said before the data stage, not after the teacher


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--epochs", str(2**63)], "--epochs must fit in a signed 64-bit integer"),
        (["--teacher-epochs", str(10**20)], "--teacher-epochs must fit in a signed 64-bit integer"),
        (["--workers", str(10**20)], "--workers must fit in a signed 64-bit integer"),
        (["--train-images", str(10**20)], "--train-images must fit in a signed 64-bit integer"),
        (["--img-size", str(10**20), "--patch-size", str(10**20)], "--img-size must fit"),
        # 2**40 images of 32x32: 12 PiB as float32, more than any machine this runs on
        (["--train-images", str(2**40)], "the decoded data set (--train-images 1099511627776, --val-images"),
        (["--img-size", str(2**20), "--patch-size", "16"], "--img-size 1048576) needs"),
    ],
)
def test_sizes_no_machine_can_hold_are_refused_before_any_stage(tmp_path, capsys, flags, said):
    out = tmp_path / "big"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitdistill demo: error: ") and said in err
    assert not (out / "1-data").exists()


def test_data_too_small_or_unreadable_is_a_one_line_error(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / split / cls / f"{i}.png")
    (folder / "train" / "a" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "o1"
    assert main(["demo", "--quick", "--data", str(folder), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the broken file is skipped and said; the 6 readable images cannot fill one batch of 64
    assert any("skipping unreadable image" in line and "broken.png" in line for line in err)
    assert (
        err[-1]
        == f"vitdistill demo: error: --batch-size 64 is larger than the training set (6 readable images in {folder})"
    )
    listing = tmp_path / "list.txt"
    listing.write_text("no-such-image.png\n")
    assert (
        main(["demo", "--quick", "--data", str(listing), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"vitdistill demo: error: {listing}: no readable image in the train split (1 listed)"


def test_a_study_without_arms_is_refused_before_any_stage(tmp_path):
    from vitdistill.demo.study import run_demo
    from vitdistill.errors import UserError

    with pytest.raises(UserError, match="'methods' names no arm; methods: alone, softkd"):
        run_demo(tmp_path / "none", progress=False, quick=True, methods=())
    assert not (tmp_path / "none" / "1-data").exists()


# ----------------------------------------------------------------------------- the rule, by hand


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 100])
def test_t_quantile_matches_scipy(df):
    assert stats.t_quantile(df) == pytest.approx(sps.t.ppf(0.975, df), rel=1e-10)


def _cs(lift: list[float], wide: list[float]) -> dict:
    top = {"featkd": dict.fromkeys(range(len(lift)), 50.0)}
    top["lift_featkd"] = {i: 50.0 + d for i, d in enumerate(lift)}
    top["widelast_featkd"] = {i: 50.0 + d for i, d in enumerate(wide)}
    return stats.contrasts(top)


@pytest.mark.parametrize(
    ("lift", "wide", "holds", "phrase"),
    [
        ([2, 3, 2.5, 3.5], [1, 2, 1.5, 2.5], True, "holds in this miniature"),
        ([2, 3, 2.5, 3.5], [-1, -2, -1.5, -2.5], False, "does not hold"),
        ([2, 3, 2.5, 3.5], [-3, 3, -2, 2.5], None, "does not decide"),
        ([-3, 3, -2, 2.5], [-3, 3, -2, 2.5], None, "does not decide"),
        # Lift's interval (-1.28 to +0.88) straddles 0 but lies below the paper's +2.67: ruled out
        ([-1, 0.5, -0.5, 0.2], [-3, 3, -2, 2.5], False, "rules out the paper's gain of +2.7"),
        # WideLast's (+0.72 to +2.78) lies above 0 but short of its +3.37: a smaller gain still holds
        ([2, 3, 2.5, 3.5], [1, 2, 1.5, 2.5], True, "short of the paper's gain of +3.4"),
    ],
)
def test_verdict_rule_and_sentence(lift, wide, holds, phrase):
    v = verdict(_cs(lift, wide), quick=False)
    assert v["holds"] is holds
    assert phrase in v["sentence"]
    # the sentence names each interval's side, and never calls an interval through 0 a win or a loss
    for name, remedy in (("lift_vs_featkd", "Lift"), ("widelast_vs_featkd", "WideLast")):
        side = stats.side(_cs(lift, wide)[name])
        verb = {"above": "beats it", "below": "falls below it", "includes": "is not separated from it"}[side]
        assert f"{remedy} {verb}: {_cs(lift, wide)[name]['mean']:+.1f} points" in v["sentence"]
    assert verdict(_cs(lift, wide), quick=True)["holds"] is None


def test_verdict_sentence_when_a_headline_has_no_interval():
    """One seed, a NaN top-1, or a missing arm: no interval, so no side, and the sentence says why."""
    one = verdict(_cs([3.0], [4.0]), quick=False)
    assert one["holds"] is None and one["headline"] == {h: None for h in stats.HEADLINE}
    assert "Lift: +3.0 points (1 seed: no interval)" in one["sentence"]
    assert "WideLast: +4.0 points (1 seed: no interval)" in one["sentence"]

    cs = _cs([float("nan"), 1.0, 2.0], [-3.0, -3.2, -2.9])
    assert cs["lift_vs_featkd"]["ci"] is None and stats.side(cs["lift_vs_featkd"]) is None
    v = verdict(cs, quick=False)
    assert v["holds"] is False  # WideLast alone lies below 0, below the paper's gain
    assert "Lift: no number (a top-1 among its 3 seeds is NaN)" in v["sentence"]
    assert "nan" not in v["sentence"].replace("NaN", "")

    top = {"featkd": {0: 50.0, 1: 50.0}, "widelast_featkd": {0: 54.0, 1: 54.5}}
    v = verdict(stats.contrasts(top), quick=False)
    assert v["holds"] is None  # WideLast above 0 but Lift not run: cannot hold
    assert "Lift is not compared (this run lacks Lift or the baseline" in v["sentence"]
    assert "WideLast beats it: +4.2 points" in v["sentence"]
    v = verdict(stats.contrasts({"lift_featkd": {0: 1.0, 1: 2.0}}), quick=False)
    assert v["holds"] is None and v["sentence"].count("is not compared") == 2


def test_identical_differences_give_a_zero_width_interval():
    cs = _cs([0.0, 0.0, 0.0], [3.0, 3.0, 3.0])
    assert cs["lift_vs_featkd"]["ci"] == [0.0, 0.0] and cs["lift_vs_featkd"]["sd"] == 0.0
    v = verdict(cs, quick=False)
    assert v["holds"] is False  # Lift's [0, 0] lies below the paper's +2.67
    assert "Lift is not separated from it: +0.0 points (95% CI +0.0 to +0.0, 3 seeds)" in v["sentence"]
    assert "rules out the paper's gain of +2.7" in v["sentence"]


# The paper's ImageNet-1K top-1 (arXiv 2511.15572): feature-KD baseline 74.86, Lift 77.53, WideLast 78.23.
PAPER_GAIN = {"lift_vs_featkd": 77.53 - 74.86, "widelast_vs_featkd": 78.23 - 74.86}


def _scipy_interval(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    half = sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return v.mean() - half, v.mean() + half


@settings(max_examples=300, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda n: st.tuples(
            st.lists(st.floats(-6, 6, allow_nan=False), min_size=n, max_size=n),
            st.lists(st.floats(-6, 6, allow_nan=False), min_size=n, max_size=n),
        )
    )
)
def test_verdict_rule_matches_an_independent_reading_of_the_intervals(pair):
    """holds: both scipy t intervals above 0; false: either below the paper's gain; null otherwise."""
    lift, wide = pair
    ivs = {"lift_vs_featkd": _scipy_interval(lift), "widelast_vs_featkd": _scipy_interval(wide)}
    margin = 1e-6  # leave out draws whose interval ends within rounding of a boundary
    ends = [x for lo, hi in ivs.values() for x in (lo, hi)] + [ivs[k][1] - g for k, g in PAPER_GAIN.items()]
    assume(all(not np.isfinite(x) or abs(x) > margin for x in ends))
    if all(lo > 0 for lo, _ in ivs.values()):
        expected = True
    elif any(ivs[k][1] < g for k, g in PAPER_GAIN.items()):
        expected = False
    else:
        expected = None
    assert verdict(_cs(lift, wide), quick=False)["holds"] is expected


def test_uniform_control_is_parameter_matched_to_widelast(demo):
    data = json.loads((demo / "1-data" / "data.json").read_text())
    report = json.loads((demo / "6-report" / "report.json").read_text())
    wide, uni = report["results"]["widelast_featkd"]["params"], report["results"]["uniform_featkd"]["params"]
    assert data["uniform_params"] == {"widelast": wide, "uniform": uni}
    assert abs(uni - wide) / wide < 0.05
    assert report["results"]["alone"]["params"] < wide


# ----------------------------------------------------------------------------- where the spread comes from


def _correct(demo: Path, arm: str, seed: int) -> np.ndarray:
    import base64

    s = json.loads((demo / "4-students" / f"{arm}-seed{seed}" / "summary.json").read_text())
    bits = np.unpackbits(np.frombuffer(base64.b64decode(s["val_correct"]), dtype=np.uint8))
    return bits[: s["val_images"]].astype(float)


def test_recorded_correct_images_give_the_runs_top1(demo):
    """The per-image record agrees with the library's evaluation loop for every run."""
    for arm in ARMS:
        for seed in SEEDS:
            assert 100 * _correct(demo, arm, seed).mean() == pytest.approx(_top1(demo, arm, seed), abs=1e-6)


def test_noise_split_matches_numpy(demo):
    report = json.loads((demo / "6-report" / "report.json").read_text())
    assert set(report["noise"]) == set(report["contrasts"])
    for name, x in report["noise"].items():
        c = report["contrasts"][name]
        coefs = stats.CONTRASTS[name][1]
        per_seed_var = []
        for seed in SEEDS:
            per_image = sum(k * _correct(demo, a, seed) for a, k in coefs.items())
            per_seed_var.append(per_image.var(ddof=1) / per_image.size * 1e4)
        eval_var = float(np.mean(per_seed_var))
        total = float(np.var(c["per_seed"], ddof=1))
        assert x["eval_sd"] == pytest.approx(np.sqrt(eval_var), rel=1e-9, abs=1e-12)
        assert x["train_sd"] == pytest.approx(np.sqrt(max(0.0, total - eval_var)), rel=1e-9, abs=1e-9)
        assert x["sd"] == pytest.approx(np.sqrt(total), rel=1e-9, abs=1e-12)


def test_evaluation_variance_by_hand():
    from vitdistill.demo import noise

    a, b = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    # per image a - b = 0, 1, -1, 0: variance 2/3, over 4 images, in squared points
    assert noise.evaluation_variance({"a": 1, "b": -1}, {"a": a, "b": b}) == pytest.approx(2 / 3 / 4 * 1e4)
    # the same models on both arms: no evaluation noise in the difference
    assert noise.evaluation_variance({"a": 1, "b": -1}, {"a": a, "b": a}) == 0
    got = noise.split({"a": 1, "b": -1}, [0], {"a": {0: a}, "b": {0: b}}, sd=50.0)
    assert got["eval_sd"] ** 2 + got["train_sd"] ** 2 == pytest.approx(50.0**2)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000, 1001])
def test_correct_images_pack_round_trip(n):
    from vitdistill.demo import noise

    bits = np.random.default_rng(n).random(n) < 0.6
    assert np.array_equal(noise.unpack(noise.pack(bits), n), bits)
    with pytest.raises(ValueError):
        noise.unpack(noise.pack(bits), n + 8)


def test_plots_show_every_contrast_with_readable_labels(demo):
    report = json.loads((demo / "6-report" / "report.json").read_text())
    rows = report["plots"]["contrasts"]["rows"]
    assert len(rows) == len(report["contrasts"])
    for row, (name, c) in zip(rows, report["contrasts"].items(), strict=True):
        assert "_" not in row and c["label"] in row
        assert row.startswith("HEADLINE") == (name in stats.HEADLINE)
    assert report["plots"]["accuracy"]["xlim"] == [0.0, 100.0]
    marks = report["plots"]["contrasts"]["paper_gain"]  # the verdict's second alternative, on its rows
    assert marks == pytest.approx(PAPER_GAIN, abs=0.005)


def _plot_report(top: dict) -> dict:
    cs = stats.contrasts(top)
    return {"contrasts": cs, "verdict": verdict(cs, quick=False), "models": {"teacher": "T", "narrow": "N"}}


def test_contrast_plot_cuts_an_interval_at_the_values_a_contrast_can_take(tmp_path):
    from vitdistill.demo import plots

    # two seeds 98 points apart: a t interval of about +-620 points, though a difference lies in -100..100
    top = {"featkd": {0: 50.0, 1: 50.0}, "lift_featkd": {0: 99.0, 1: 1.0}, "widelast_featkd": {0: 53, 1: 54}}
    report = _plot_report(top)
    assert report["contrasts"]["lift_vs_featkd"]["ci"][1] > 600
    drawn = plots.contrasts(report, tmp_path / "c.png")
    assert drawn["cut"] is True and -120 < drawn["xlim"][0] < -100 and 100 < drawn["xlim"][1] < 120
    assert drawn["paper_gain"] == pytest.approx(PAPER_GAIN, abs=0.005)
    assert stats.bounds("revival_lift") == (-200.0, 200.0) and stats.bounds("lift_vs_featkd") == (-100, 100)
    top["lift_featkd"] = {0: 55.0, 1: 56.0}  # nothing to cut: the axis follows the data
    drawn = plots.contrasts(_plot_report(top), tmp_path / "c.png")
    assert drawn["cut"] is False and drawn["xlim"][1] < 20


def test_contrast_plot_with_a_nan_top1_or_no_contrast(tmp_path):
    from vitdistill.demo import plots

    top = {"featkd": {0: 50.0, 1: 50.0}, "lift_featkd": {0: float("nan"), 1: 51.0}}
    drawn = plots.contrasts(_plot_report(top), tmp_path / "c.png")
    assert drawn["rows"] == ["HEADLINE: Lift vs the pooled baseline"]
    assert drawn["ylim"] == [0.5, -0.5]  # the row is drawn whole though it holds only the paper's gain
    assert (tmp_path / "c.png").stat().st_size > 0
    assert plots.contrasts(_plot_report({"featkd": {0: 50.0}}), tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()  # no stale figure from an earlier run


def test_accuracy_plot_legend_names_only_the_students_drawn(tmp_path):
    from vitdistill.demo import plots

    models = {"teacher": "T", "narrow": "N16", "lift": "L", "widelast": "W", "uniform": "U"}
    res = {
        k: {"arch": arch, "label": k, "top1": [float("nan"), 40.0], "mean": float("nan")}
        for k, arch in (("featkd", "narrow"), ("widelast_featkd", "widelast"))
    }
    drawn = plots.accuracy({"results": res, "models": models, "teacher": {"top1": 60.0}}, tmp_path / "a.png")
    assert drawn["legend"] == ["N16", "W"] and drawn["xlim"] == [0.0, 100.0]
    assert drawn["rows"] == ["featkd", "widelast_featkd"]


def test_noise_split_with_one_validation_image_or_one_seed():
    from vitdistill.demo import noise

    one = {"a": {0: np.array([True])}, "b": {0: np.array([False])}}
    got = noise.split({"a": 1, "b": -1}, [0], one, sd=3.0)
    assert got == {"sd": 3.0, "eval_sd": None, "train_sd": None, "eval_share": None}
    two = {"a": {0: np.array([True, False])}, "b": {0: np.array([False, False])}}
    got = noise.split({"a": 1, "b": -1}, [0], two, sd=None)
    assert got["train_sd"] is None and got["eval_sd"] == pytest.approx(np.sqrt(0.5 / 2 * 1e4))


def _report_for_headroom(base: float, teacher: float, quick: bool = False) -> dict:
    cs = _cs([-1, 0.5, -0.5, 0.2], [-1, 0.5, -0.5, 0.2])
    return {
        "results": {"featkd": {"mean": base}},
        "teacher": {"top1": teacher},
        "verdict": verdict(cs, quick=quick),
        "settings": {"settings": {"quick": quick}},
    }


def test_headroom_note_says_when_the_paper_gain_cannot_fit():
    from vitdistill.demo.sections import _headroom

    # 98.5% leaves 1.5 points, less than either published gain (+2.67, +3.37)
    near = _headroom(_report_for_headroom(98.5, 98.3))
    assert "98.5%" in near and "1.5 points below 100%" in near
    assert "cannot appear here" in near and "about as well as its teacher" in near
    # 95% leaves 5 points, more than both: no such caveat; a teacher 3 points above: no "as well"
    far = _headroom(_report_for_headroom(95.0, 98.0))
    assert "5.0 points below 100%" in far
    assert "cannot appear" not in far and "as well as its teacher" not in far
    # 97% leaves 3.0: fits Lift's +2.67 but not WideLast's +3.37, so the caveat stands
    assert "cannot appear here" in _headroom(_report_for_headroom(97.0, 99.0))
    assert _headroom(_report_for_headroom(98.5, 98.3, quick=True)) is None


def test_headroom_note_when_the_baseline_beats_its_teacher():
    from vitdistill.demo.sections import _headroom

    above = _headroom(_report_for_headroom(97.0, 95.0))
    assert "beats its teacher by 2.0 points" in above and "about as well as its teacher" not in above
    # within half a point either side: "about as well"
    assert "about as well as its teacher" in _headroom(_report_for_headroom(95.4, 95.0))
    assert "about as well as its teacher" in _headroom(_report_for_headroom(94.6, 95.0))
    assert _headroom(_report_for_headroom(float("nan"), 95.0)) is None
    assert _headroom(_report_for_headroom(95.0, float("nan"))) is None


def test_verdict_section_without_contrasts_or_with_a_nan_mean():
    from vitdistill.demo.sections import section_verdict

    report = _report_for_headroom(95.0, 98.0)
    report["contrasts"] = {}
    blocks = section_verdict(report)
    assert (
        "p",
        "No contrast could be formed: this run lacks the arms that every contrast compares.",
    ) in blocks
    assert not any(b[0] in ("table", "img") for b in blocks)
    report["contrasts"], report["contrasts_method"] = _cs([float("nan"), 1.0], [1.0, 2.0]), "t"
    (table,) = [b for b in section_verdict(report) if b[0] == "table"]
    assert table[2][0][2:5] == ["n/a", "n/a", "n/a"] and "nan" not in str(table[2][1])


def test_one_seed_demo_says_no_interval_instead_of_empty_sections(tmp_path):
    out = tmp_path / "one"
    assert main(["demo", "--quick", "--seeds", "1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "6-report" / "report.json").read_text())
    assert report["contrasts"] and all(c["ci"] is None for c in report["contrasts"].values())
    md = (out / "report.md").read_text()
    assert "No mechanism contrast has an interval here" in md
    assert "What the miniature supports, does not support, and cannot tell:" not in md
    mech = md.split("## The mechanism, in plain words")[1].split("##")[0]
    assert "\n- " not in mech  # no empty list left behind
    from vitdistill.demo.sections import section_noise

    report["noise"] = {"not_a_contrast_here": report["noise"][next(iter(report["noise"]))]}
    assert section_noise(report) == []  # no table without rows


def test_report_tables_align_text_left_and_numbers_right(tmp_path):
    from vitdistill.demo.render import render_html, render_markdown

    head = ["Contrast", "What it measures", "Mean", "95% CI", "Per seed", "Note"]
    rows = [
        ["`a`", "Lift vs the pooled baseline", "+2.31", "-0.50 to +1.20", "6.2 / 7.0", ""],
        ["`b`", "12 (0.38) and more words", "n/a", "n/a", "48.8 +- 1.2", "1.2M"],
    ]
    md = render_markdown([("table", head, rows)], tmp_path, tmp_path)
    assert md.splitlines()[1] == "|:--|:--|--:|--:|--:|--:|"
    html = render_html([("table", head, rows)], tmp_path)
    for cell in ("+2.31", "-0.50 to +1.20", "6.2 / 7.0", "48.8 +- 1.2", "1.2M"):
        assert f"<td class='num'>{cell}</td>" in html
    assert "<td class='txt'>Lift vs the pooled baseline</td>" in html


def test_demo_remedies_follow_the_published_initialisation(demo):
    """The demo's Lift and WideLast are built as the paper's code built them (model.init: published),
    and every packaged recipe resolves through the training config's own checks."""
    from vitdistill.demo.methods import METHODS, TEACHER, config_path
    from vitdistill.distill import config as config_mod
    from vitdistill.utils import yamlsafe

    for m in (TEACHER, *METHODS):
        cfg = config_mod.resolve(yamlsafe.load(config_path(m).read_text(), m.config), [])
        assert (cfg["model"]["init"] == "published") == (m.arch in ("lift", "widelast")), m.key
    for arm in ("lift_featkd", "lift_softkd", "widelast_featkd"):
        summary = demo / "4-students" / f"{arm}-seed{SEEDS[0]}" / "summary.json"
        assert json.loads(summary.read_text())["model"]["kwargs"]["init"] == "published", arm
