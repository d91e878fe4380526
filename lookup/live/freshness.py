"""How old an answer is, and refreshing stale ones off the request's path.

Every answer says its ``age_s``: the seconds since its ``scored_at``, read from the stored
bytes (the time text parsed once per distinct value). A dataset declaring ``max_age_s``
marks an older answer ``"stale": true``; with ``stale = "refresh"`` (the default) it is
served as it is and a bounded pool asks live inference for a fresh one in the
background (written back like a miss's answer), with ``stale = "live"`` the request
itself asks, within the deadline, and serves the stale answer only if that fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from lookup.live.misses import Miss, MissHandler
from lookup.store import Resolved

log = logging.getLogger(__name__)
_SCORED = b'"scored_at":"'
_CACHE = 4096


class Ages:
    """Answers' ages from their ``scored_at``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._epochs: dict[bytes, float | None] = {}

    def age(self, payload: bytes) -> int | None:
        """Whole seconds since the payload was scored (None: it does not say)."""
        at = payload.rfind(_SCORED)
        if at < 0:
            return None
        stamp = payload[at + len(_SCORED) : at + len(_SCORED) + 20]
        epoch = self._epochs.get(stamp, -1.0)
        if epoch == -1.0:
            try:
                when = datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%SZ")
                epoch = when.replace(tzinfo=timezone.utc).timestamp()
            except (UnicodeDecodeError, ValueError):
                epoch = None
            if len(self._epochs) >= _CACHE:
                self._epochs.clear()
            self._epochs[stamp] = epoch
        return None if epoch is None else max(0, int(self.clock() - epoch))


class Refresher:
    """Fresh answers for stale keys, asked of live inference in the background."""

    def __init__(self, on_miss: MissHandler, workers: int = 2, queued: int = 64) -> None:
        self.on_miss = on_miss
        self.queued = queued
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh")
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def submit(self, miss: Miss, version: Resolved) -> bool:
        """Ask for ``miss`` in the background; False when it is already asked for or the
        queue is full (a refresh is never worth slowing the answers)."""
        flight = (miss.dataset, f"{miss.key}|{miss.context or ''}")
        with self._lock:
            if flight in self._pending or len(self._pending) >= self.queued:
                return False
            self._pending.add(flight)
        self._pool.submit(self._run, miss, version, flight)
        return True

    def _run(self, miss: Miss, version: Resolved, flight: tuple[str, str]) -> None:
        try:
            self.on_miss([miss], version)
        except Exception as exc:
            log.warning("refresh of %s %s failed: %s", miss.dataset, miss.key, type(exc).__name__)
        finally:
            with self._lock:
                self._pending.discard(flight)
