import subprocess
import sys

from vitdistill.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "vitdistill", "--version"], capture_output=True, text=True)
    assert r.returncode == 0
    assert r.stdout.startswith("vitdistill ")


def test_readme_test_command_is_what_ci_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    r = subprocess.run(
        ["bash", "-c", "source <(sed -n '/^cmd=/p' .ci/run); echo \"$cmd\""],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert r.stdout.strip() and r.stdout.strip() in readme
