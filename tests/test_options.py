"""Each analysis setting is declared once: the flag, the keyword, the check, the help and the docs
all come from ``AnalysisOptions``; Python errors name keywords and the command line names flags."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vitdistill.analysis.options import AnalysisOptions
from vitdistill.cli import build_parser, main
from vitdistill.commands import flags
from vitdistill.errors import UserError
from vitdistill.utils.options import from_keywords, specs, validate

ROOT = Path(__file__).resolve().parents[1]
TINY = ["vit_tiny_patch16_224", "--set", "img_size=16", "--set", "patch_size=4", "--set", "depth=2"]
DATA = "synthetic:shapes?n=12&n_val=6&size=16&types=3"


def _analyze_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["analyze"]


def test_every_declared_setting_is_a_flag_and_nothing_else_is():
    parser = _analyze_parser()
    dests = {a.dest for a in parser._actions if a.option_strings} - {"help", "overrides", "data", "out"}
    assert dests == set(specs(AnalysisOptions))
    by_dest = {a.dest: a for a in parser._actions}
    assert by_dest["num_workers"].option_strings == ["--workers"]
    assert by_dest["sep_alphas"].option_strings == ["--sep-thresholds"]
    assert by_dest["plots"].option_strings == ["--no-plots"]
    assert by_dest["batch_size"].option_strings == ["--batch-size"]


def test_no_flag_given_means_the_declared_defaults():
    args = build_parser().parse_args(["analyze", "m", "--data", "d"])
    assert flags.options_from(args, AnalysisOptions) == {}  # analyze() applies the declaration's
    args = build_parser().parse_args(
        ["analyze", "m", "--data", "d", "--thresholds", "50,75", "--rotation-threshold", "80", "--no-plots"]
    )
    got = flags.options_from(args, AnalysisOptions)
    assert got == {"thresholds": (0.5, 0.75), "rotation_threshold": 0.8, "plots": False}


def test_help_shows_defaults_in_the_flags_unit():
    text = _analyze_parser().format_help().replace("\n", " ")
    assert "(default 80,90,95,99)" in " ".join(text.split())
    assert "(default 90)" in " ".join(text.split())  # --rotation-threshold, a percentage


def test_docs_hold_the_generated_table():
    docs = (ROOT / "docs" / "analysis.md").read_text()
    assert flags.markdown(AnalysisOptions) in docs, "regenerate: python -m vitdistill.commands.flags"


@pytest.mark.parametrize(
    ("kwargs", "python_says", "cli_argv", "cli_says"),
    [
        ({"images": 0}, "'images' must be >= 1 (got 0)", ["--images", "0"], "--images must be >= 1 (got 0)"),
        (
            {"num_workers": -1},
            "'num_workers' must be >= 0",
            ["--workers", "-1"],
            "--workers must be >= 0 (got -1)",
        ),
        (
            {"sep_alphas": (-10, 50)},
            "'sep_alphas' must be in (0, 100]",
            ["--sep-thresholds=-10,50"],
            "--sep-thresholds must be in (0, 100] (got -10)",
        ),
        (
            {"thresholds": (0.5, 1.5)},
            "'thresholds' must be in (0, 1] (got 1.5)",
            ["--thresholds", "50,150"],
            "--thresholds must be a percentage in (0, 100] (got 150)",
        ),
        (
            {"device": "cuda:x"},
            "'device' must be cpu, cuda or cuda:N",
            ["--device", "cuda:x"],
            "--device must be cpu, cuda or cuda:N",
        ),
    ],
)
def test_python_names_the_keyword_and_the_cli_the_flag(
    kwargs, python_says, cli_argv, cli_says, capsys, tmp_path
):
    from vitdistill.analysis import analyze

    with pytest.raises(UserError) as ei:
        analyze("vit_tiny_patch16_224", DATA, tmp_path / "o", **kwargs)
    assert python_says in str(ei.value) and "--" not in str(ei.value)
    assert main(["analyze", *TINY, "--data", DATA, "--out", str(tmp_path / "o"), *cli_argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitdistill analyze: error: ") and cli_says in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kwargs", "cli_argv", "cli_says"),
    [
        ({"seed": -1}, ["--seed", "-1"], "--seed must be in [0, 4294967295] (got -1)"),
        ({"seed": 2**32}, ["--seed", str(2**32)], "--seed must be in [0, 4294967295]"),
        ({"batch_size": 10**23}, ["--batch-size", str(10**23)], "--batch-size must fit in a signed 64-bit"),
        ({"permutations": 2**64}, ["--permutations", str(2**64)], "--permutations must fit in a signed"),
    ],
)
def test_seeds_and_counts_that_torch_or_numpy_cannot_take_are_refused_up_front(
    kwargs, cli_argv, cli_says, capsys, tmp_path
):
    with pytest.raises(UserError, match=f"'{next(iter(kwargs))}' must"):
        validate(AnalysisOptions(**kwargs))
    assert main(["analyze", *TINY, "--data", DATA, "--out", str(tmp_path / "o"), *cli_argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitdistill analyze: error: ") and cli_says in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_compare_labels_as_one_string_name_the_keyword(tmp_path):
    from vitdistill.analysis import compare

    with pytest.raises(UserError, match="'labels' must be a sequence of strings"):
        compare([str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "c", labels="a,b")


def test_an_unknown_keyword_names_the_closest():
    with pytest.raises(TypeError, match="did you mean images"):
        from_keywords(AnalysisOptions, {"imagez": 3})


def test_wrong_types_are_refused_by_keyword():
    for kwargs in ({"images": 2.5}, {"center": "yes"}, {"thresholds": "0.9"}, {"sep_mode": "half"}):
        with pytest.raises(UserError, match=f"'{next(iter(kwargs))}'"):
            validate(AnalysisOptions(**kwargs))


@pytest.mark.parametrize("kwargs", [{"rank_rtol": float("nan")}, {"thresholds": (0.9, float("nan"))}])
def test_nan_is_in_no_range(kwargs):
    with pytest.raises(UserError, match="got nan"):
        validate(AnalysisOptions(**kwargs))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_rotation_threshold_check_agrees_with_its_interval(v):
    ok = 0 < v <= 1  # False for NaN
    try:
        validate(AnalysisOptions(rotation_threshold=v))
    except UserError:
        assert not ok
    else:
        assert ok


def test_every_default_passes_its_own_check():
    validate(AnalysisOptions())
    assert [f.name for f in dataclasses.fields(AnalysisOptions)] == list(specs(AnalysisOptions))


@given(
    st.lists(st.sampled_from(["images", "device", "resume", "out"]), max_size=3),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
)
def test_retell_only_touches_the_named_settings(names, text):
    table = {"images": "--images", "device": "--device", "resume": "--resume", "out": "--out"}
    assert flags.retell(text, (), table) == text
    told = flags.retell(text, tuple(names), table)
    if not any(f"'{n}'" in text or f"{n}=" in text for n in names):
        assert told == text


def test_retell_forms():
    table = {"device": "--device", "fresh": "--fresh", "out": "--out"}
    msg = "device='cuda': CUDA is absent; use device='cpu'; set fresh=True, or choose another 'out'"
    assert (
        flags.retell(msg, ("device", "fresh", "out"), table)
        == "--device cuda: CUDA is absent; use --device cpu; set --fresh, or choose another --out"
    )
    assert flags.retell("the device is 'device'", ("device",), {}) == "the device is 'device'"
