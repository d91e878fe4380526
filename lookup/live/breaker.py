"""The circuit breaker in front of live inference: trips on a failure ratio over a window.

pybreaker trips on a number of failures in a row, which a busy lookup reaches within
milliseconds of any short stall (eight misses past a 100 ms deadline), and then refuses
every miss for the whole reset time. This breaker instead counts the outcomes of the
last ``window_s`` seconds and opens only when at least ``min_calls`` were made and at
least ``ratio`` of them failed; after ``reset_s`` it lets ``probes`` trial calls through
(half open) and closes when they succeed, or opens again at the first failure. So a
stall of a second costs the misses of about that second, not of the reset time after.
Thread-safe; one per dataset.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CircuitOpen(Exception):
    """The breaker refused the call without making it."""


class WindowBreaker:
    """Closed, open or half open; ``call`` runs a function under it."""

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        min_calls: int = 20,
        ratio: float = 0.5,
        reset_s: float = 1.0,
        probes: int = 3,
        excluded: tuple[type[BaseException], ...] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s, self.min_calls, self.ratio = window_s, min_calls, ratio
        self.reset_s, self.probes, self.excluded = reset_s, probes, excluded
        self.clock = clock
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._opened_at: float | None = None
        self._trials = 0  # half open: trial calls let through
        self._passed = 0  # half open: trial calls that succeeded
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self._opened_at >= self.reset_s else "open"

    def _admit(self) -> bool:
        """Whether a call may be made now (half open: while trial calls are left)."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and self._trials < self.probes:
                self._trials += 1
                return True
            return False

    def _record(self, failed: bool) -> None:
        with self._lock:
            now = self.clock()
            if self._state() == "half-open":
                if failed:
                    self._open(now)
                    return
                self._passed += 1
                if self._passed >= self.probes:  # healthy again
                    self._opened_at = None
                    self._outcomes.clear()
                return
            self._outcomes.append((now, failed))
            while self._outcomes and self._outcomes[0][0] < now - self.window_s:
                self._outcomes.popleft()
            calls = len(self._outcomes)
            failures = sum(1 for _, f in self._outcomes if f)
            if calls >= self.min_calls and failures >= self.ratio * calls:
                self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at, self._trials, self._passed = now, 0, 0
        self._outcomes.clear()

    def call(self, func: Callable[..., T], *args: object) -> T:
        """``func(*args)``, or CircuitOpen while the breaker is open."""
        if not self._admit():
            raise CircuitOpen("circuit open")
        try:
            result = func(*args)
        except self.excluded:  # the caller's own bad input says nothing of an outage
            self._record(False)
            raise
        except BaseException:
            self._record(True)
            raise
        self._record(False)
        return result
