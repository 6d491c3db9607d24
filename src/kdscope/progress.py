"""Progress output that reads well on a terminal and in a log.

On a terminal :func:`progress` is a tqdm bar. tqdm redraws its bar with carriage returns, which
in a file or a pipe makes one line of hundreds of kilobytes; so when stderr is not a terminal it
is a :class:`LineProgress` instead: one plain line when the bar starts or its description changes
(a new run, say) and one each tenth of the way, e.g.
``kd seed 1: 960/1920 step (50%), 00:42``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

#: plain lines per bar, besides one per description
STEPS = 10


class LineProgress(Generic[T]):
    """The part of tqdm's interface kdscope uses (``update``, ``set_description``,
    ``set_postfix_str``, ``close``, iteration), written as plain lines to ``stream``."""

    def __init__(
        self,
        iterable: Iterable[T] | None,
        total: int | None,
        desc: str,
        unit: str,
        disable: bool,
        stream: TextIO,
    ) -> None:
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.stream = stream
        self.postfix = ""
        self.n = 0
        self._tenths = 0
        self._start = time.monotonic()
        if desc:
            self._line()

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable or ():
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; a line when another tenth of the total is done."""
        self.n += n
        if self.total:
            tenths = min(self.n * STEPS // self.total, STEPS)
            if tenths > self._tenths:
                self._tenths = tenths
                self._line()

    def set_description(self, desc: str) -> None:
        """Name what is being done now; a line when it changes."""
        if desc != self.desc:
            self.desc = desc
            self._line()

    def set_postfix_str(self, postfix: str) -> None:
        """Detail shown in the next line (no line of its own: it may change very often)."""
        self.postfix = postfix

    def close(self) -> None:
        """Nothing to clear: the lines stay in the log."""

    def _line(self) -> None:
        """Write the current state as one line."""
        if self.disable:
            return
        label = f"{self.desc} [{self.postfix}]" if self.postfix else self.desc
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        percent = f" ({100 * self.n // self.total}%)" if self.total else ""
        elapsed = tqdm.format_interval(time.monotonic() - self._start)
        print(f"{label}: {count}{percent}, {elapsed}", file=self.stream, flush=True)


def progress(
    iterable: Iterable[T] | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
) -> LineProgress[T] | tqdm:
    """A progress bar on stderr: tqdm on a terminal, plain lines (:class:`LineProgress`)
    otherwise. The bar is cleared when closed; ``disable`` shows nothing."""
    stream = sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        return LineProgress(iterable, total, desc, unit, disable, stream)
    return tqdm(
        iterable,
        total=total,
        desc=desc or None,
        unit=unit,
        disable=disable,
        leave=False,
        dynamic_ncols=True,
    )
