"""The one ``KEY=VALUE`` rule for settings given as text, shared by every command.

* ``KEY`` is a name or a dotted path of names (``img_size``, ``loss.alpha``).
* ``VALUE`` is read as YAML: ``32`` is an int, ``0.5`` a float, ``true`` / ``True`` a bool,
  ``null`` or nothing at all is None, ``[1, 2]`` a list, and anything else (``bf16``) a string.
  Text that YAML cannot read (``a: b: c``) stays the string it was. A value nested too deep,
  expanding too far through aliases or giving a key twice is an error
  (:mod:`vitdistill.utils.yamlsafe`).

``train`` applies the pairs to its config keys, ``analyze`` and ``inspect`` pass them to timm's
``create_model`` as keyword arguments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from vitdistill.errors import UserError
from vitdistill.utils import yamlsafe

_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parse_set(text: str) -> tuple[str, Any]:
    """``"loss.alpha=0.9"`` -> ``("loss.alpha", 0.9)``; a malformed pair is a UserError."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise UserError(
            f"'overrides' expects KEY=VALUE with KEY a name or dotted name (got {text!r})",
            settings=("overrides",),
        )
    if not raw.strip():
        return key, None
    try:
        return key, yamlsafe.load(raw, f"'overrides' {key}")
    except yamlsafe.YAMLLimitError as e:  # the command line names its --set flag for 'overrides'
        raise UserError(str(e), settings=("overrides",)) from None
    except yaml.YAMLError:
        return key, raw


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """Several ``KEY=VALUE`` pairs as a dict (a key given twice keeps its last value)."""
    return dict(parse_set(item) for item in items or ())
