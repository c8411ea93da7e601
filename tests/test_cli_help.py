"""Every option of every command explains itself, and building the parser does not load torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from vitdistill.cli import COMMANDS, build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_every_command_is_in_the_parser():
    assert set(COMMANDS) <= set(_subparsers(build_parser()))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command):
    sub = _subparsers(build_parser())[command]
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in sub._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and (a.help is None or not a.help.strip() or a.help == argparse.SUPPRESS)
    ]
    assert not missing, f"`vitdistill {command}` options without help: {missing}"
    sub.format_help()  # every help string formats (a stray % would raise here)


def test_parser_is_built_without_torch_timm_or_numpy():
    code = (
        "import sys, vitdistill.cli as c; c.build_parser()\n"
        "for name in ['vitdistill.commands.' + n for n in c.COMMANDS]: __import__(name)\n"
        "print(sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_help_exits_cleanly_without_torch():
    code = (
        "import sys\nfrom vitdistill.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "inspect" in r.stdout


def test_students_still_register_when_timm_is_imported_later():
    code = (
        "import sys, vitdistill\nassert 'timm' not in sys.modules\nimport timm\n"
        "print(timm.is_model('deit_tiny_lift_patch16_224'), timm.is_model('deit_tiny_widelast_patch16_224'))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"]
