"""Single-flight misses: concurrent misses of one key cost one live inference.

Within a lookup process, threads that miss a key another thread is already asking live
inference for wait for that one call. Across processes and pods, the first to miss takes
a short Redis lease on the key (``SET NX PX`` of a random token, the deadline long); the
others read the token and poll the outcome key of that flight within their own deadline.
The leader puts there the answer (``P`` + payload), that there is none (``N``) or its
error (``E`` + code), for a few deadlines: every waiter gets what the leader got, errors
included. After an answer the lease is kept as long, so a miss that read the store just
before the write-back finds the answer; after an error it is dropped, so the next miss
asks again.

A key live inference has no answer for (the model cannot score it, the image does not
exist) is remembered for ``negative_ttl_s`` under the version read, so a storm of bad
keys reaches the fallback once per key and TTL, not once per request.

Keys (prescore.encoding.keys.flight_key, negative_key): single-key commands only, spread over a
cluster.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from lookup.live.misses import FAILURES, Answer, Failure, Miss, MissHandler
from lookup.metrics import Metrics
from lookup.store import Resolved
from prescore.encoding import keys
from prescore.errors import FallbackTimeout, FallbackUnavailable, InvalidInput, Unscorable
from prescore.store.redis_client import OUTAGES, Client, mget

log = logging.getLogger(__name__)
UNSCORABLE = Unscorable.code
POLL_S = 0.005
# a leader's live call starts a moment after its lease (and answers within its own
# deadline): a waiter gives it that moment and a poll more before it gives up
GRACE_S = 0.02


def _error(code: str) -> Failure:
    """The failure another process's call recorded under ``code``."""
    if code == "fallback_timeout":
        return FallbackTimeout("live inference took too long (another request's call)")
    if code in ("fallback_unavailable", ""):
        return FallbackUnavailable("live inference unavailable (another request's call)")
    if code == UNSCORABLE:
        return Unscorable("live inference cannot use the key's input (another request's call)")
    return InvalidInput("live inference refused the input (another request's call)", code=code)


class SingleFlight:
    """A MissHandler around another that makes one live call per missing key at a time."""

    def __init__(
        self,
        inner: MissHandler,
        client: Client,
        deadline_s: float,
        negative_ttl_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        self.client = client
        self.deadline_s = deadline_s
        self.negative_ttl_s = negative_ttl_s
        self.metrics = metrics
        self._flights: dict[tuple[str, str, str], Future[Answer]] = {}
        self._lock = threading.Lock()

    def __call__(self, misses: Sequence[Miss], version: Resolved) -> list[Answer]:
        deadline = time.monotonic() + self.deadline_s
        names = [keys.entity_key(m.key, m.context) for m in misses]
        out: list[Answer] = [None] * len(misses)
        negative = self._negatives(misses, names, version)
        lead: list[int] = []
        wait_remote: list[int] = []
        wait_local: list[tuple[int, Future[Answer]]] = []
        mine: dict[int, Future[Answer]] = {}
        with self._lock:
            for i, (miss, name) in enumerate(zip(misses, names, strict=True)):
                known, out[i] = negative[i]
                if known:  # no answer, or an input that cannot be used
                    continue
                flight = (miss.dataset, version.version, name)
                found = self._flights.get(flight)
                if found is not None:
                    wait_local.append((i, found))
                else:
                    mine[i] = self._flights[flight] = Future()
        tokens: dict[int, str] = {}
        try:
            for i in mine:
                leads, tokens[i] = self._lease(misses[i], names[i], version)
                (lead if leads else wait_remote).append(i)
            self._lead(misses, lead, version, out)
            self._release(misses, names, version, {i: mine[i] for i in lead}, out)
            self._settle(misses, names, version, lead, tokens, [out[i] for i in lead])
            for i in wait_remote:  # another process leads: its outcome is in Redis
                out[i] = self._await_remote(misses[i], tokens[i], version, deadline)
        finally:
            self._release(misses, names, version, mine, out)
        for i, future in wait_local:
            out[i] = self._await_local(future, deadline)
        saved = len(wait_local) + len(wait_remote)
        if saved and self.metrics is not None:
            self.metrics.count(self.metrics.saved, misses[0].dataset, by=saved)
        return out

    def _negatives(
        self, misses: Sequence[Miss], names: list[str], version: Resolved
    ) -> list[tuple[bool, Answer]]:
        """For each miss, whether live inference's recent outcome for it is remembered,
        and that outcome: no answer (None) or an input it cannot use (Unscorable)."""
        found = [
            keys.negative_key(m.dataset, version.version, n)
            for m, n in zip(misses, names, strict=True)
        ]
        try:
            raws = mget(self.client, found)
        except OUTAGES:
            return [(False, None)] * len(misses)
        return [(r is not None, _error(UNSCORABLE) if r == b"U" else None) for r in raws]

    def _lease(self, miss: Miss, name: str, version: Resolved) -> tuple[bool, str]:
        """Whether this process leads the live call of ``name``, and the flight's token
        (Redis down: each process asks on its own)."""
        ms = int(self.deadline_s * 1000) + 50
        lease = keys.flight_key(miss.dataset, version.version, name)
        token = secrets.token_hex(8)
        try:
            for _ in range(2):  # a lease that lapsed between the two calls is taken again
                if self.client.set(lease, token, nx=True, px=ms):
                    return True, token
                held: Any = self.client.get(lease)
                if held is not None:
                    return False, held.decode() if isinstance(held, bytes) else str(held)
        except OUTAGES:
            pass
        return True, token

    def _lead(
        self, misses: Sequence[Miss], lead: list[int], version: Resolved, out: list[Answer]
    ) -> None:
        """The one live call for the keys this process leads; its outcome in ``out``."""
        if not lead:
            return
        try:
            answers = self.inner([misses[i] for i in lead], version)
        except FAILURES as exc:  # a handler that raises all the same: every waiter gets it
            answers = [exc] * len(lead)
        except Exception:  # a fault of its own: logged; the waiters here and elsewhere
            # get it as an outage, and the next miss asks again, not after the lease
            log.exception("live inference of %d %s key(s) failed", len(lead), misses[0].dataset)
            answers = [FallbackUnavailable("live inference unavailable")] * len(lead)
        for i, answer in zip(lead, answers, strict=True):
            out[i] = answer

    def _release(
        self,
        misses: Sequence[Miss],
        names: list[str],
        version: Resolved,
        flights: dict[int, Future[Answer]],
        out: list[Answer],
    ) -> None:
        """Hand ``out`` to this process's waiters of ``flights`` (once; before Redis is told)."""
        with self._lock:
            for i, future in flights.items():
                if not future.done():
                    self._flights.pop((misses[i].dataset, version.version, names[i]), None)
                    future.set_result(out[i])

    def _settle(
        self,
        misses: Sequence[Miss],
        names: list[str],
        version: Resolved,
        lead: list[int],
        tokens: dict[int, str],
        answers: Sequence[Answer],
    ) -> None:
        """Tell the waiters of other processes, and remember keys with no answer."""
        keep_ms = int(self.deadline_s * 3000) + 100
        try:
            pipe = self.client.pipeline(transaction=False)
            for i, answer in zip(lead, answers, strict=True):
                lease = keys.flight_key(misses[i].dataset, version.version, names[i])
                flight = keys.flight_outcome_key(
                    misses[i].dataset, version.version, names[i], tokens[i]
                )
                if isinstance(answer, bytes):
                    pipe.set(flight, b"P" + answer, px=keep_ms)
                elif isinstance(answer, Unscorable):  # as no answer: the data must change
                    pipe.set(flight, b"E" + answer.code.encode(), px=keep_ms)
                    neg = keys.negative_key(misses[i].dataset, version.version, names[i])
                    pipe.set(neg, b"U", px=int(self.negative_ttl_s * 1000))
                elif isinstance(answer, FAILURES):
                    pipe.set(flight, b"E" + answer.code.encode(), px=keep_ms)
                    pipe.delete(lease)  # a miss after a failure asks again
                else:
                    pipe.set(flight, b"N", px=keep_ms)
                    neg = keys.negative_key(misses[i].dataset, version.version, names[i])
                    pipe.set(neg, b"1", px=int(self.negative_ttl_s * 1000))
                if not isinstance(answer, FAILURES) or isinstance(answer, Unscorable):
                    # late misses read the answer
                    pipe.pexpire(lease, keep_ms)
            pipe.execute()
        except OUTAGES:
            pass  # the waiters time out; the next miss asks again

    def _await_remote(self, miss: Miss, token: str, version: Resolved, deadline: float) -> Answer:
        name = keys.entity_key(miss.key, miss.context)
        flight = keys.flight_outcome_key(miss.dataset, version.version, name, token)
        last = False
        while not last:
            last = time.monotonic() >= deadline + GRACE_S  # one read after the deadline
            try:
                raw: Any = self.client.get(flight)
            except OUTAGES:
                return FallbackUnavailable("live inference unavailable (store unreachable)")
            if raw is None:  # the leader is still asking
                if not last:
                    time.sleep(POLL_S)
                continue
            if raw[:1] == b"P":
                return bytes(raw[1:])
            if raw[:1] == b"N":
                return None
            if raw[:1] == b"E":
                return _error(raw[1:].decode())
        return FallbackTimeout("live inference took too long (another request's call)")

    def _await_local(self, future: Future[Answer], deadline: float) -> Answer:
        try:
            return future.result(timeout=max(0.0, deadline + GRACE_S - time.monotonic()))
        except FutureTimeout:
            return FallbackTimeout("live inference took too long (another request's call)")
