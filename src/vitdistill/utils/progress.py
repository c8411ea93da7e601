"""Progress a person can follow both on a terminal and in a log file.

:class:`Progress` shows a tqdm bar when its stream is a terminal. When the stream is a file or a
pipe (a batch job's log) a bar would be either invisible or thousands of carriage returns, so it
prints a plain line instead, at most every ``every_s`` seconds (30 by default), plus one at the
end::

    analyze deit_tiny: 3200/50000 img (6%), 106 img/s, ETA 7m21s

>>> with Progress(len(todo), "analyze", unit="img") as bar:
...     for batch in loader:
...         bar.update(len(batch))

The clock is a parameter so the throttling can be tested without waiting.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO


def fmt_duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``: short enough for a log line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _bar_class(stream, tty: bool | None):
    """tqdm on a terminal, tqdm's notebook widget under Jupyter, else None (plain lines)."""
    if tty if tty is not None else _is_tty(stream):
        from tqdm import tqdm

        return tqdm
    if tty is None and "ipykernel" in sys.modules:
        from tqdm.auto import tqdm

        return tqdm
    return None


class Progress:
    """A tqdm bar on a terminal (a widget in a notebook); else a line every ``every_s`` s and at the end.

    ``enabled=False`` shows nothing. ``tty`` overrides the terminal check; ``final_line=False``
    skips the closing line (for callers that print their own summary right after).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        file: IO[str] | None = None,
        every_s: float = 30.0,
        final_line: bool = True,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.enabled, self.every_s, self.final_line, self.clock = enabled, every_s, final_line, clock
        self.n = self.start_n = initial
        self.postfix = ""
        self.t_start = self.t_last = clock()
        self.bar = None
        bar_class = _bar_class(self.file, tty)
        if enabled and bar_class is not None:
            self.bar = bar_class(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                leave=False,
                file=self.file,
                dynamic_ncols=True,
            )
        self.closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_postfix(self, text: str) -> None:
        """Extra text shown after the counts (``loss 2.31``)."""
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.t_last >= self.every_s:
            self.t_last = now
            self._print(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The plain progress line as of ``now``."""
        now = self.clock() if now is None else now
        done = self.n - self.start_n
        rate = done / max(now - self.t_start, 1e-9)
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {fmt_duration((self.total - self.n) / rate)}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.final_line:
            now = self.clock()
            self._print(f"{self.line(now)}; done in {fmt_duration(now - self.t_start)}")

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)
