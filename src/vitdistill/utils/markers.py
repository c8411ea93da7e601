"""Every output folder knows what it holds.

A folder written by a command carries a one-line marker file, ``.vitdistill-kind``, naming its
kind (run, analysis, comparison, export, results, demo). A command writes only into a folder of
its own kind (or a new, empty or foreign one, which it then marks); into a folder of another
kind it refuses at once, in one line, so that one command never overwrites what another wrote.
Folders written before markers existed are recognised by their files.

Output folders are never data: a command refuses an output folder inside its own input data,
and the walk over an image folder skips folders that carry a marker.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from vitdistill.errors import UserError

MARKER = ".vitdistill-kind"

#: The kind of folder each writing command makes.
KIND_OF_COMMAND = {
    "train": "run",
    "analyze": "analysis",
    "compare": "comparison",
    "export": "export",
    "results": "results",
    "demo": "demo",
}
KINDS = tuple(KIND_OF_COMMAND.values())
_NOUN = {
    "run": "a training run",
    "analysis": "an analysis",
    "comparison": "a comparison",
    "export": "an export",
    "results": "a results table",
    "demo": "a demo",
}
_COMMAND_OF_KIND = {k: c for c, k in KIND_OF_COMMAND.items()}


def kind_of(folder: str | os.PathLike) -> str | None:
    """The kind of output ``folder`` holds: its marker, else what its files say; None for anything else."""
    folder = Path(folder)
    try:
        text = (folder / MARKER).read_text(errors="replace").strip()
    except OSError:
        return _legacy_kind(folder)
    return text if text in KINDS else _legacy_kind(folder)


def _legacy_kind(folder: Path) -> str | None:
    """The kind of a folder written before markers existed, from the files only that kind writes."""

    def has(*names: str) -> bool:
        return all((folder / n).exists() for n in names)

    if has("config.yaml") and (has("checkpoints") or has("metrics.jsonl")):
        return "run"
    if has("demo.json"):
        return "demo"
    if has("compare.json"):
        return "comparison"
    if has(".analysis_state") or has("images.txt", "per_image.csv") or _summary_has(folder, "svd"):
        return "analysis"
    if has("model.safetensors", "config.json"):
        return "export"
    if has("results_runs.json") or has("results.md", "results.csv"):
        return "results"
    return None


def _summary_has(folder: Path, key: str) -> bool:
    try:
        s = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(s, dict) and key in s


def describe_kind(kind: str) -> str:
    """``kind`` in words, with the command that writes it: "an analysis (written by `vitdistill analyze`)"."""
    return f"{_NOUN[kind]} (written by `vitdistill {_COMMAND_OF_KIND[kind]}`)"


def claim(folder: str | os.PathLike, command: str) -> bool:
    """Refuse ``folder`` if it holds another kind of output than ``command`` writes; else mark it.

    Returns True if the marker was written now.
    """
    kind = KIND_OF_COMMAND.get(command)
    if kind is None:
        return False
    folder = Path(folder)
    found = kind_of(folder)
    if found is not None and found != kind:
        raise UserError(
            f"{folder} holds {describe_kind(found)}; "
            f"`vitdistill {command}` writes {_NOUN[kind]} and would overwrite it: choose another folder"
        )
    marker = folder / MARKER
    if marker.exists() and not marker.is_file():
        raise UserError(
            f"{folder}: {marker.name} is not a file, so this folder's kind cannot be marked; "
            "remove it or choose another folder"
        )
    if found is None or not marker.is_file():
        from vitdistill.utils.io import atomic_write_text

        atomic_write_text(folder / MARKER, kind + "\n")
        return True
    return False


def is_output(folder: str | os.PathLike) -> bool:
    """True if ``folder`` carries a marker (an output folder, never data)."""
    return os.path.isfile(os.path.join(folder, MARKER))


def unclaim_if_empty(folder: str | os.PathLike, remove_folder: bool) -> None:
    """Undo :func:`claim` if ``folder`` holds nothing but the marker (a command that failed before
    writing): remove the marker, and the folder too with ``remove_folder``."""
    with contextlib.suppress(OSError):
        if set(os.listdir(folder)) <= {MARKER}:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, MARKER))
            if remove_folder:
                os.rmdir(folder)


def refuse_inside(out: str | os.PathLike, inputs, setting: str = "out") -> None:
    """Refuse an output folder that is one of ``inputs`` or lies inside one (links resolved).

    ``inputs`` are the folders a command reads (data folders, analyses, runs); entries that are
    not existing folders (``synthetic:...``, list files) are ignored. ``setting`` is the keyword
    that named ``out``, for the message (the command line names its flag instead).
    """
    real_out = Path(os.path.realpath(Path(out).expanduser()))
    for given in inputs:
        if given is None:
            continue
        p = Path(str(given)).expanduser()
        if not p.is_dir():
            continue
        real_in = Path(os.path.realpath(p))
        if real_out == real_in or real_in in real_out.parents:
            raise UserError(
                f"'{setting}' {out} is inside the input {given}: the outputs would be read back as input "
                "on the next run; choose a folder outside it",
                settings=(setting,),
            )
