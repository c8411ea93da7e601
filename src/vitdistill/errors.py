"""Errors that mean "the user asked for something that cannot be done".

Library code raises :class:`UserError` with a one-line, actionable message; the command line
prints it as ``vitdistill: error: <message>`` and exits with status 2, never with a traceback.
Anything else that escapes is a bug in vitdistill and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A mistake in the input (model name, data, config, checkpoint, flags).

    ``settings`` lists the keywords (or config keys) the message names, so that the command
    line can name its flags for them instead (``vitdistill.commands.flags``).
    """

    exit_code = 2

    def __init__(self, *args, settings: tuple[str, ...] = ()):
        super().__init__(*args)
        self.settings = tuple(settings)


class NotAvailableError(UserError):
    """A command or option that this version of vitdistill does not provide."""


_EXHAUSTED = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def exhausted(e: BaseException) -> str | None:
    """One line for a full disk, an exceeded quota or file-size limit anywhere in ``e``'s chain, else None.

    Writers report these in their own ways: an ``OSError`` with its errno, or a library error
    (torch's zip writer, safetensors) that only quotes the system's message.
    """
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(e, "errno", None)
        if isinstance(e, OSError) and code in _EXHAUSTED:
            where = f" writing {e.filename}" if e.filename else ""
            return f"{os.strerror(code)}{where}; free some space (or raise the limit) and run again"
        for code in _EXHAUSTED:
            if os.strerror(code).lower() in str(e).lower():
                return f"{os.strerror(code)} ({first_line(e, 120)}); free some space (or raise the limit) and run again"
        e = e.__cause__ or e.__context__
    return None


def closest_names(name: str, candidates, n: int = 5) -> list[str]:
    """The ``n`` candidates closest to ``name`` (difflib ratio), best first."""
    import difflib

    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def first_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` of an exception, safe for empty messages."""
    lines = str(e).strip().splitlines()
    if lines:
        return f"{type(e).__name__}: {lines[0][:limit]}"
    return (
        f"{type(e).__name__} (the file is empty or cut short)"
        if isinstance(e, EOFError)
        else type(e).__name__
    )
