"""Fast 503s while the store is stalled: after a read timed out, refuse at once, trying
the store again with one request at a time.

A Redis that stops answering (paused, swapping, a long script) costs each read its whole
socket timeout. Without a gate every request pays it, queued behind the app threads that
are paying it already, so answers take several timeouts. After a read times out the gate
opens: requests are refused at once (503 ``store_unavailable``) for one timeout, then one
request at a time goes to the store as a probe. A probe that is answered closes the gate;
one that times out keeps it open for another timeout. So a request waits for the store at
most about one timeout (``PRESCORE_REDIS_TIMEOUT_S``), and the lookup recovers on its own
within about two of the store answering again. Only timeouts open it: a store that
refuses connections fails each read in milliseconds already.

Whether the gate is open is one attribute read on the hit path, without a lock (the
window breaker of live inference, lookup.live.breaker, counts every outcome instead).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class StallGate:
    """Closed (``until`` 0), or open: refusing until ``until``, then one probe at a time."""

    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s, self.clock = open_s, clock
        self.until = 0.0
        self._probe_since: float | None = None  # when the probe in flight was let through
        self._prober = 0  # the thread that runs it
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Whether a read may go to the store now: closed, or as the probe while open."""
        if not self.until:
            return True
        with self._lock:
            now = self.clock()
            if not self.until:
                return True
            probing = self._probe_since is not None and now - self._probe_since < 2 * self.open_s
            if probing or now < self.until:  # (a probe that never reported is forgotten)
                return False
            self._probe_since, self._prober = now, threading.get_ident()
            return True

    def failed(self, timed_out: bool) -> None:
        """A read failed: ``timed_out``, the store stalled: refuse for another timeout."""
        if not timed_out and not self.until:
            return
        with self._lock:
            if self._prober == threading.get_ident():  # the probe failed: the next may go
                self._probe_since, self._prober = None, 0
            if timed_out:
                self.until = self.clock() + self.open_s

    def answered(self) -> None:
        """The store answered a read: closed again (a lock only when it was open)."""
        if self.until:
            with self._lock:
                self.until, self._probe_since, self._prober = 0.0, None, 0
