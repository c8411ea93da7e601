"""Output folders know their kind; commands never write into another kind's folder or their input.

Real outputs of every kind (a run, an analysis, a comparison, an export, a results table, a demo
folder) are made once; then every writing command is pointed at every folder of another kind,
with its marker and as an older version left it (no marker), and must refuse in one line
leaving the folder byte for byte as it was. Links to output folders are written through and
stay links; walks over data folders follow links without looping and skip output folders and
names that are not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vitdistill.cli import main
from vitdistill.utils.markers import MARKER, kind_of

TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
SYN = "synthetic:shapes?n=12&n_val=8&size=16&types=3"
FAST = ["--batch-size", "4", "--permutations", "0", "--rotation-images", "0", "--no-plots", "--no-progress"]
RECIPE = {
    "model": {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 16, "patch_size": 4, "embed_dim": 16,
                                                         "depth": 2, "num_heads": 2}},
    "data": {"train": SYN, "batch_size": 8},
    "epochs": 1,
    "device": "cpu",
    "aug": {"auto_augment": None, "reprob": 0.0},
    "log": {"progress": False},
}  # fmt: skip


NOUN = {
    "run": "a training run",
    "analysis": "an analysis",
    "comparison": "a comparison",
    "export": "an export",
    "results": "a results table",
    "demo": "a demo",
}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err
    return err[0]


def image_folder(root: Path, classes=("a", "b"), per_class=3) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (16, 16), (40 * i, 20, 200)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One real output folder of each kind, and the recipe that made the run."""
    root = tmp_path_factory.mktemp("world")
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps(RECIPE))
    out = {k: root / k for k in ("run", "analysis", "comparison", "export", "results", "demo")}
    assert main(["train", "--config", str(recipe), "--output", str(out["run"])]) == 0
    assert main(["analyze", *TINY, "--data", SYN, "--images", "4", *FAST, "--out", str(out["analysis"])]) == 0
    assert main(["compare", str(out["analysis"]), "--out", str(out["comparison"])]) == 0
    assert main(["export", str(out["run"]), "--out", str(out["export"])]) == 0
    assert main(["results", str(out["run"]), "--out", str(out["results"])]) == 0
    out["demo"].mkdir()
    (out["demo"] / "demo.json").write_text("{}")  # a demo that has only begun: its first file
    for kind, folder in out.items():
        assert kind_of(folder) == kind
    return root, recipe, out


def writers(root: Path, recipe: Path, out: dict[str, Path]) -> dict[str, list[str]]:
    """The command line that writes each kind of folder, without its output folder (appended)."""
    return {
        "run": ["train", "--config", str(recipe), "--output"],
        "analysis": ["analyze", *TINY, "--data", SYN, "--images", "4", *FAST, "--out"],
        "comparison": ["compare", str(out["analysis"]), "--out"],
        "export": ["export", str(out["run"]), "--out"],
        "results": ["results", str(out["run"]), "--out"],
        "demo": ["demo", "--quick", "--no-progress", "--out"],
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["marked", "unmarked"])
def test_no_command_writes_into_another_kind_of_folder(world, tmp_path, capsys, legacy):
    root, recipe, out = world
    refused = 0
    for target_kind, folder in out.items():
        target = tmp_path / target_kind
        shutil.copytree(folder, target, symlinks=True)
        if legacy:
            (target / MARKER).unlink(missing_ok=True)
            (target / ".result_set.json").unlink(missing_ok=True)
        before = snapshot(target)
        for kind, argv in writers(root, recipe, out).items():
            if kind == target_kind:
                continue
            capsys.readouterr()
            assert main([*argv, str(target)]) == 2, (kind, target_kind)
            line = one_line_error(capsys)
            assert f"holds {NOUN[target_kind]} (written by" in line, line
            assert snapshot(target) == before, (kind, target_kind)
            refused += 1
    assert refused == 30


def test_outputs_are_never_written_into_their_input(world, tmp_path, capsys):
    root, recipe, out = world
    data = image_folder(tmp_path / "data")
    before = snapshot(data)
    (tmp_path / "link").symlink_to(data / "a")
    cases = [
        ["analyze", *TINY, "--data", str(data), *FAST, "--out", str(data / "res")],
        ["analyze", *TINY, "--data", str(data), *FAST, "--out", str(data)],
        ["analyze", *TINY, "--data", str(data), *FAST, "--out", str(tmp_path / "link" / "res")],
        ["train", "--config", str(recipe), "--data", str(data), "--output", str(data / "run")],
        ["compare", str(out["analysis"]), "--out", str(out["analysis"] / "cmp")],
        ["export", str(out["run"]), "--out", str(out["run"] / "export")],
        ["results", str(out["run"]), "--out", str(out["run"] / "table")],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "inside the input" in one_line_error(capsys)
    assert snapshot(data) == before
    assert not (out["analysis"] / "cmp").exists() and not (out["run"] / "export").exists()


def test_an_output_folder_inside_data_is_not_read_as_images(world, tmp_path, capsys):
    _, _, out = world
    data = image_folder(tmp_path / "data")
    shutil.copytree(out["comparison"], data / "a" / "old-comparison")  # pngs inside a class folder
    Image.new("RGB", (16, 16)).save(data / "a" / "old-comparison" / "stray.png")
    res = tmp_path / "res"
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--out", str(res)]) == 0
    summary = json.loads((res / "summary.json").read_text())
    assert summary["images"] == 6
    assert "skipped 1 vitdistill output folders" in capsys.readouterr().err


def _is_link_to(link: Path, target: Path) -> bool:
    return link.is_symlink() and Path(os.path.realpath(link)) == Path(os.path.realpath(target))


def test_a_linked_output_folder_is_written_through_and_stays_a_link(world, tmp_path):
    root, recipe, out = world
    for kind, argv in writers(root, recipe, out).items():
        if kind in ("demo", "run"):
            continue
        real, link = tmp_path / f"real-{kind}", tmp_path / f"link-{kind}"
        real.mkdir()
        (real / "mine.txt").write_text("the user's")
        link.symlink_to(real)
        for _ in range(2):  # the second write replaces the first set through the link
            assert main([*argv, str(link)]) == 0, kind
            assert _is_link_to(link, real), kind
        assert kind_of(real) == kind and (real / "mine.txt").read_text() == "the user's"
        assert not [p.name for p in tmp_path.iterdir() if "staging" in p.name]


def test_walks_follow_links_once_and_count_loops(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    (data / "a" / "up").symlink_to("..")
    (data / "a" / "to_b").symlink_to("../b")
    (data / "b" / "to_a").symlink_to("../a")
    (data / "b" / "deeper").mkdir()
    (data / "b" / "deeper" / "loop").symlink_to("../..")
    res = tmp_path / "res"
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--out", str(res)]) == 0
    err = capsys.readouterr().err
    assert json.loads((res / "summary.json").read_text())["images"] == 6
    assert "skipped 4 link loops" in err, err


def test_names_that_are_not_utf8_are_skipped_and_counted(tmp_path, capsys):
    data = image_folder(tmp_path / "data")
    raw = os.fsencode(data)
    Image.new("RGB", (16, 16)).save(os.fsdecode(raw + b"/a/bad\xff.png"), format="PNG")
    os.mkdir(raw + b"/b/sub\xfe")
    Image.new("RGB", (16, 16)).save(os.fsdecode(raw + b"/b/sub\xfe/x.png"), format="PNG")
    os.mkdir(raw + b"/c\xfd")  # a class folder
    Image.new("RGB", (16, 16)).save(os.fsdecode(raw + b"/c\xfd/x.png"), format="PNG")
    res = tmp_path / "res"
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--out", str(res)]) == 0
    assert json.loads((res / "summary.json").read_text())["images"] == 6
    assert "skipped 3 names that are not UTF-8" in capsys.readouterr().err


def test_a_marker_that_is_not_a_file_is_refused_in_one_line(world, tmp_path, capsys):
    root, recipe, out = world
    target = tmp_path / "odd"
    (target / MARKER).mkdir(parents=True)
    (target / "mine.txt").write_text("the user's")
    before = snapshot(target)
    assert main(["compare", str(out["analysis"]), "--out", str(target)]) == 2
    assert "is not a file" in one_line_error(capsys)
    assert snapshot(target) == before


def test_a_link_to_a_folder_above_the_data_is_a_loop_not_a_walk_of_everything(tmp_path, capsys):
    outer = tmp_path / "outer"
    data = image_folder(outer / "data")
    (outer / "stray").mkdir()
    Image.new("RGB", (16, 16)).save(outer / "stray" / "not-data.png")
    (data / "a" / "up2").symlink_to("../..")  # leads to `outer`, around the data (as a link to / would)
    res = tmp_path / "res"
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--out", str(res)]) == 0
    assert json.loads((res / "summary.json").read_text())["images"] == 6
    assert "skipped 1 link loops" in capsys.readouterr().err


def test_a_json_file_never_replaces_a_file_of_an_output_folder(world, tmp_path, capsys):
    root, recipe, out = world
    for kind, name in [("analysis", "summary.json"), ("export", "config.json"), ("run", "summary.json")]:
        target = tmp_path / kind
        shutil.copytree(out[kind], target, symlinks=True)
        before = snapshot(target)
        for argv in (["eval", str(out["run"]), "--data", SYN], ["inspect", "vit_tiny_patch16_224"]):
            capsys.readouterr()
            assert main([*argv, "--json", str(target / name)]) == 2, (kind, argv[0])
            assert f"is a file of {NOUN[kind]}" in one_line_error(capsys)
            assert snapshot(target) == before
    assert main(["eval", str(out["run"]), "--data", SYN, "--json", str(tmp_path / "run" / "eval.json")]) == 0
    # an earlier eval result in a run folder may be replaced by the next one; nothing else may
    first = (tmp_path / "run" / "eval.json").read_text()
    assert main(["eval", str(out["run"]), "--data", SYN, "--json", str(tmp_path / "run" / "eval.json")]) == 0
    assert json.loads((tmp_path / "run" / "eval.json").read_text()).keys() == json.loads(first).keys()


def test_a_link_back_to_a_flat_image_folder_is_not_a_class(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 20, 200)).save(data / f"{i}.png")
    (data / "here").symlink_to(".")
    res = tmp_path / "res"
    assert main(["analyze", *TINY, "--data", str(data), *FAST, "--out", str(res)]) == 0
    listed = (res / "images.txt").read_text().split()
    assert sorted(listed[1::2]) == [str(data / f"{i}.png") for i in range(3)]
    assert "skipped 1 link loops" in capsys.readouterr().err


def test_an_out_that_is_a_link_loop_or_too_long_is_one_line(world, tmp_path, capsys):
    root, recipe, out = world
    (tmp_path / "A").symlink_to("B")
    (tmp_path / "B").symlink_to("A")
    for bad, why in [(tmp_path / "A", "symbolic links"), (tmp_path / ("x" * 300), "too long")]:
        for argv in (
            ["compare", str(out["analysis"]), "--out"],
            ["eval", str(out["run"]), "--data", SYN, "--json"],
        ):
            capsys.readouterr()
            assert main([*argv, str(bad)]) == 2, (argv[0], why)
            assert why in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A", "B"]


def test_an_out_that_links_to_nothing_says_so(world, tmp_path, capsys):
    root, recipe, out = world
    (tmp_path / "L").symlink_to(tmp_path / "nowhere")
    for argv in (
        ["compare", str(out["analysis"]), "--out"],
        ["results", str(out["run"]), "--out"],
        ["eval", str(out["run"]), "--data", SYN, "--json"],
    ):
        capsys.readouterr()
        assert main([*argv, str(tmp_path / "L")]) == 2, argv[0]
        assert "which does not exist" in one_line_error(capsys), argv[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L"]  # the link is kept, nothing created
