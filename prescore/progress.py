"""Progress of long work: done of total, the rate so far and the time left at that rate.

Said as lines (a log reads them as well as a terminal), at most once every ``every_s``, to
the ``say`` it is given; or, given a terminal's stream, drawn there as one bar that is
redrawn in place (tqdm's). It opens nothing itself: where its output goes is the caller's
choice."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 45s, 3m 05s, 2h 07m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class Progress:
    """Counts ``unit`` done of ``total`` (0: unknown) and says so now and then; with
    ``bar`` (a terminal's stream), draws a bar there instead of saying lines. A context
    manager: leaving it ends the bar's line."""

    def __init__(
        self,
        what: str,
        total: int,
        say: Callable[[str], None],
        *,
        unit: str = "rows",
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        bar: TextIO | None = None,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._say = say
        self._every_s = every_s
        self._clock = clock
        self._started = self._last = clock()
        self._bar = _bar(what, total, unit, bar) if bar is not None else None
        if self._bar is not None and self._bar.disable:  # TQDM_DISABLE=1: lines, as in a log
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def add(self, n: int) -> None:
        """``n`` more done; a line if ``every_s`` passed since the last one (or the bar
        moved on)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last >= self._every_s:
            self._last = now
            self._say(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (self._clock() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        said = f"  {self.what}: {self.done:,}"
        if self.total:
            said += f" of {self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            said += f" {self.unit}"
        said += f", {rate:,.0f} {self.unit}/s"
        if self.total and rate > 0 and self.done < self.total:
            said += f", about {duration((self.total - self.done) / rate)} left"
        return said


def _bar(what: str, total: int, unit: str, stream: TextIO) -> Any:
    """tqdm's bar on ``stream``: done of total, rate and time left, redrawn in place at
    most 5 times a second (its rate smoothed, as a person reads it)."""
    from tqdm import tqdm  # the tables extra's; only a terminal draws it

    return tqdm(
        total=total or None,
        desc=f"  {what}",
        unit=f" {unit}",
        unit_scale=True,
        file=stream,
        mininterval=0.2,
        dynamic_ncols=True,
    )
