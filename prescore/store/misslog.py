"""The miss log: every key a dataset's lookups missed, in bounded space in Redis.

Two sorted sets per dataset (sharing its hash tag): ``misses`` (key -> how many times it
missed) and ``misses:seen`` (key -> when it last did). A lookup records the misses of a
request in one pipelined round trip, on the miss path only; every ``trim_every``
recordings of a process trim both sets to the ``cap`` keys missed most. The next bulk
run of the dataset scores the logged keys its tables hold besides the rows its filter
selects, reports how many came from the log, and removes the keys it scored; a run over
image files scores every file, and removes the logged keys its version then holds
(``prescore misses NAME`` lists the log).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prescore.encoding import keys
from prescore.store import values
from prescore.store.redis_client import OUTAGES, Client, as_text
from prescore.store.values import Placed

log = logging.getLogger(__name__)
CAP = 10_000
TRIM_EVERY = 200


@dataclass(frozen=True)
class Missed:
    key: str
    count: int
    last_seen: float | None


class MissLog:
    """Recording and reading one dataset's missed keys."""

    def __init__(self, client: Client, cap: int = CAP, trim_every: int = TRIM_EVERY) -> None:
        self.client = client
        self.cap = cap
        self.trim_every = trim_every
        self._recorded = itertools.count(1)

    def record(self, dataset: str, missed: Sequence[str]) -> None:
        """Count ``missed`` keys (a failure to record is logged, never raised)."""
        if not missed:
            return
        counts, seen = keys.miss_log_key(dataset), keys.miss_seen_key(dataset)
        now = time.time()
        pipe = self.client.pipeline(transaction=False)
        for key in missed:
            pipe.zincrby(counts, 1, key)
        pipe.zadd(seen, dict.fromkeys(missed, now))
        try:
            pipe.execute()
            if next(self._recorded) % self.trim_every == 0:
                self._trim(dataset)
        except OUTAGES as exc:
            log.warning("miss log of %s not recorded: %s", dataset, type(exc).__name__)

    def _trim(self, dataset: str) -> None:
        """Keep the ``cap`` keys missed most, in both sets alike."""
        counts = keys.miss_log_key(dataset)
        dropped: list[Any] = self.client.zrange(counts, 0, -self.cap - 1)
        if dropped:
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(counts, *dropped)
            pipe.zrem(keys.miss_seen_key(dataset), *dropped)
            pipe.execute()

    def top(self, dataset: str, n: int = 20) -> list[Missed]:
        """The ``n`` keys missed most, most first."""
        found: list[Any] = self.client.zrevrange(
            keys.miss_log_key(dataset), 0, n - 1, withscores=True
        )
        names = [as_text(k) for k, _ in found]
        seen: list[Any] = self.client.zmscore(keys.miss_seen_key(dataset), names) if names else []
        return [
            Missed(name, int(score), when)
            for name, (_, score), when in zip(names, found, seen, strict=True)
        ]

    def size(self, dataset: str) -> int:
        return int(self.client.zcard(keys.miss_log_key(dataset)))

    def all_keys(self, dataset: str) -> list[str]:
        raw: list[Any] = self.client.zrange(keys.miss_log_key(dataset), 0, -1)
        return [as_text(k) for k in raw]

    def held_by(self, where: Placed, logged: Sequence[str]) -> list[str]:
        """The ``logged`` keys that a version holds precomputed."""
        return values.held(self.client, where, list(logged))

    def forget(self, dataset: str, scored: Sequence[str]) -> None:
        """Remove keys a bulk run has scored."""
        for start in range(0, len(scored), 1000):
            part = list(scored[start : start + 1000])
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(keys.miss_log_key(dataset), *part)
            pipe.zrem(keys.miss_seen_key(dataset), *part)
            pipe.execute()
