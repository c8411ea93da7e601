"""One module per ``vitdistill`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

# The library names its settings by keyword; on the command line they are these flags.
MODEL_FLAGS = {"trust_checkpoint=True": "--trust-checkpoint", "checkpoint=PATH": "--checkpoint PATH"}


@contextlib.contextmanager
def as_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a library UserError with each keyword setting it names replaced by its flag."""
    from vitdistill.errors import UserError

    try:
        yield
    except UserError as e:
        text = str(e)
        for setting, flag in flags.items():
            text = text.replace(setting, flag)
        if text == str(e):
            raise
        raise type(e)(text) from None
