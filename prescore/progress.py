"""Progress of long work, said as lines (a log reads them as well as a terminal): done of
total, the rate so far and the time left at that rate, at most once every ``every_s``.
No I/O of its own: the lines go to the ``say`` it is given."""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: 45s, 3m 05s, 2h 07m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class Progress:
    """Counts ``unit`` done of ``total`` (0: unknown) and says so now and then."""

    def __init__(
        self, what: str, total: int, say: Callable[[str], None], *, unit: str = "rows",
        every_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._say = say
        self._every_s = every_s
        self._clock = clock
        self._started = self._last = clock()

    def add(self, n: int) -> None:
        """``n`` more done; a line if ``every_s`` passed since the last one."""
        self.done += n
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
