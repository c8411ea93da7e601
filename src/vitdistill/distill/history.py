"""A run's history: which settings applied from which optimizer step.

``RUN/config.yaml`` is the config the run started with and is never rewritten. Each start and
each resume appends one line to ``RUN/history.jsonl``: the step and epoch it starts from and,
for a resume, every setting that differs from the checkpoint's (``{key: {"from", "to"}}``).
The checkpoint carries the same list of changes, so the summary of a run resumed with new
settings says which steps ran with which.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vitdistill.distill import config as config_mod
from vitdistill.utils.io import atomic_write_text

_MISSING = "(not set)"


def config_changes(before: dict, after: dict) -> dict[str, dict[str, Any]]:
    """Every schema key whose value differs between two resolved configs, as ``{key: {from, to}}``."""
    changes = {}
    for key, decl in config_mod.SCHEMA.items():
        old, new = _lookup(before, key), _lookup(after, key)
        if old == _MISSING and new == _plain(decl.default):
            continue  # a key newer than the checkpoint, at its default: nothing changed
        if old != new:
            changes[key] = {"from": old, "to": new}
    return changes


def started_config(last: dict, changes: list[dict]) -> dict:
    """The config a run started with: a checkpoint's (``last``) with its resumes' changes undone."""
    undo = [
        (key, change["from"])
        for entry in reversed(changes)
        for key, change in entry["changed"].items()
        if change["from"] != _MISSING
    ]
    return config_mod.resolve(last, undo)


def _lookup(cfg: dict, key: str):
    try:
        return _plain(config_mod.get(cfg, key))
    except (KeyError, TypeError):
        return _MISSING  # a checkpoint written before the key existed


def _plain(value):
    """Tuples as lists (a Python config may hold tuples where YAML gives lists)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def append(run_dir: Path, entry: dict) -> None:
    """Add one line to ``RUN/history.jsonl`` (written whole, so a kill leaves the old file)."""
    path = Path(run_dir) / "history.jsonl"
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    line = json.dumps({**entry, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, default=str)
    atomic_write_text(path, old + line + "\n")
