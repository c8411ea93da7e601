"""The README's code runs as written, and shipped files cite only files that ship.

Every fenced ``python`` / ``bash`` block of README.md runs here, in a fresh process and an empty
folder (with ``configs/`` beside it, as in a checkout). A block that cannot run on a CPU-only test
machine says so in an HTML comment right above it, ``<!-- no-test: REASON -->``; it is reported as
skipped with that reason, never silently dropped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")


def readme_blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, skip reason or None) of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        reason, k = None, start - 1
        while k >= 0 and lines[k].strip().startswith("<!--"):  # the comments right above the fence
            hit = NO_TEST.search(lines[k])
            reason = reason or (hit.group(1) if hit else None)
            k -= 1
        blocks.append((start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", reason))
        i = j + 1
    return blocks


BLOCKS = [b for b in readme_blocks(README.read_text()) if b[1] in ("python", "bash")]


def _env(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "vitdistill"  # the console script an install provides
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vitdistill "$@"\n')
    shim.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PATH=path, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def test_readme_has_runnable_python_and_bash_blocks():
    assert any(lang == "python" and reason is None for _, lang, _, reason in BLOCKS)
    assert any(lang == "bash" and reason is None for _, lang, _, reason in BLOCKS)
    assert all(reason for _, lang, code, reason in BLOCKS if "torchrun" in code or "/data/" in code)


@pytest.mark.slow
@pytest.mark.parametrize("line, lang, code, reason", BLOCKS, ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, lang, code, reason, tmp_path):
    if reason:
        pytest.skip(f"README.md:{line} is marked no-test: {reason}")
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, f"README.md:{line} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_cpu_recipes_say_the_teacher_comes_first():
    text = README.read_text()
    teacher = text.index("vitdistill train --config configs/cpu/teacher.yaml --output runs/cpu/teacher")
    assert teacher < text.index("vitdistill train --config configs/cpu/lift_softkd_spectral.yaml")


def _shipped_text_files() -> list[Path]:
    files = [README, *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").rglob("*.yaml"))]
    files += sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "src").rglob("*.yaml"))
    files += sorted((ROOT / "src").rglob("*.md"))
    return files


def test_shipped_files_cite_no_missing_spec_file():
    offenders = [str(p.relative_to(ROOT)) for p in _shipped_text_files() if "PAPER.md" in p.read_text()]
    assert not offenders, f"cite the paper as arXiv 2511.15572, not PAPER.md: {offenders}"


def test_relative_links_and_repo_paths_in_docs_exist():
    missing = []
    for doc in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if "://" not in target and not (doc.parent / target).exists():
                missing.append(f"{doc.name}: {target}")
        for path in re.findall(r"\b((?:configs|docs|benchmarks|scripts)/[\w./-]*\w)", text):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing


def test_the_first_command_leaves_the_venv_active_for_the_rest():
    """The tour's commands call `vitdistill` bare, so the first command activates its venv."""
    text = README.read_text()
    first = text[text.index("<!-- demo-command -->") :].split("```bash\n", 1)[1].split("```", 1)[0]
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0] == "python3 -m venv .venv" and steps[1] == ". .venv/bin/activate", steps
    assert "vitdistill" in steps[-1] and not steps[-1].startswith(".venv/"), steps
