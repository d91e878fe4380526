"""One load at a time of what a key names, in one lookup process.

A version's frames (its entry table, up to tens of MB) and a delta's keys are loaded on
the first read that needs them, on the request path. Right after a switch every thread
of a worker asks for the new version at once: without this each would load its own copy
(the memory and the seconds of CPU multiplied by the threads). With it one thread loads
and the others wait for its result, or its error: a load that fails (a Redis timeout) is
not tried again by each waiting thread in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiting = 0  # threads waiting for it


class OneLoad:
    """The loads running now, by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, _Flight[object]] = {}

    def run(self, key: Hashable, load: Callable[[], T]) -> T:
        """``load()``, unless a load of ``key`` is running: then what that one returns or
        raises. The load itself should look in its cache first (one may have just ended)."""
        with self._lock:
            flight = self._running.get(key)
            leads = flight is None
            if flight is None:
                flight = self._running[key] = _Flight()
            else:
                flight.waiting += 1
        if not leads:
            flight.done.wait()  # bounded: the load's own Redis calls have timeouts
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            result = flight.result = load()
            return result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._running[key]
            flight.done.set()

    def __len__(self) -> int:
        """Loads running now."""
        with self._lock:
            return len(self._running)

    def waiting(self, key: Hashable) -> int:
        """Threads waiting for the load of ``key`` running now (0: none runs)."""
        with self._lock:
            flight = self._running.get(key)
            return flight.waiting if flight is not None else 0
