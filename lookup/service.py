"""Answering lookups: read one version, hand misses to the miss seam, render bytes.

A hit is served from the stored bytes with its age; one older than its dataset's max age
is marked stale and refreshed (lookup.freshness); a sample of hits is checked against
live inference (lookup.shadow). A miss is recorded in the miss log (prescore.misslog),
then handed to the miss handler (live inference, single-flighted: lookup.singleflight).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lookup import render
from lookup.datasets import Served
from lookup.freshness import Ages, Refresher
from lookup.metrics import Metrics
from lookup.misses import Miss, MissHandler
from lookup.params import BatchRequest, Shape
from lookup.shadow import ShadowChecker
from lookup.store import Resolved, StoreReader
from prescore import keys
from prescore.codec import stored_source
from prescore.errors import FallbackUnavailable, StoreUnavailable
from prescore.misslog import MissLog


def _candidates(key: str, context: str | None) -> list[str]:
    """Store keys to try, best first: with a context, ``key|context`` then plain ``key``."""
    if context:
        return [keys.entity_key(key, context), key]
    return [key]


@dataclass
class Extras:
    """What a lookup does besides reading: all optional, all off the hit's critical path."""

    misslog: MissLog | None = None
    refresher: Refresher | None = None
    shadow: ShadowChecker | None = None
    shadow_rate: float = 0.0


class Lookup:
    """Single and batch lookups of one dataset version per request."""

    def __init__(
        self, reader: StoreReader, on_miss: MissHandler, metrics: Metrics,
        extras: Extras | None = None,
    ) -> None:  # fmt: skip
        self.reader = reader
        self.on_miss = on_miss
        self.metrics = metrics
        self.extras = extras or Extras()
        self.ages = Ages()

    def _stale(self, spec: Served, payload: bytes) -> tuple[int | None, bool]:
        age = self.ages.age(payload)
        return age, spec.max_age_s is not None and age is not None and age > spec.max_age_s

    def _served(
        self, spec: Served, key: str, context: str | None, payload: bytes, shape: Shape,
        resolved: Resolved, fell_back: bool, source: str,
    ) -> bytes:  # fmt: skip
        """A hit's body (``source``: as stored); a stale one replaced by its refresh if
        one was written back, else refreshed; a sampled one shadow-checked."""
        age, stale = self._stale(spec, payload)
        if stale and source == "precomputed":
            try:
                store_key = key if fell_back or not context else keys.entity_key(key, context)
                fresher = self.reader.written_back(resolved, store_key)
            except StoreUnavailable:
                fresher = None  # the stale answer is still an answer
            if fresher is not None:
                payload, source = fresher, stored_source(fresher)
                age, stale = self._stale(spec, payload)
        x = self.extras
        if stale:
            self.metrics.count(self.metrics.stale, spec.name)
            miss = Miss(spec.name, key, context)
            if spec.stale == "live" and spec.live:
                live = self.on_miss([miss], resolved)[0]
                if isinstance(live, bytes):
                    return render.hit(live, spec, shape, resolved, source="live", age=0)
            elif x.refresher is not None and spec.live:
                x.refresher.submit(miss, resolved)
        elif (  # written-back answers are live ones: comparing them checks nothing
            x.shadow is not None and spec.live and source == "precomputed"
            and random.random() < x.shadow_rate
        ):  # fmt: skip
            x.shadow.offer(spec, key, context, payload, resolved)
        return render.hit(
            payload, spec, shape, resolved, source=source, fell_back=fell_back, age=age,
            stale=stale,
        )  # fmt: skip

    def _count(self, spec: Served, sources: list[str], misses: int) -> None:
        written_back = sources.count("written_back")
        hits = len(sources) - written_back
        self.metrics.count_keys(spec.name, hits=hits, misses=misses, written_back=written_back)

    def _record(self, spec: Served, missed: list[str]) -> None:
        # the entity's key, not key|context: a bulk run scores an entity in every context
        if self.extras.misslog is not None and spec.miss_log and missed:
            self.extras.misslog.record(spec.name, missed)

    def one(self, spec: Served, key: str, context: str | None, shape: Shape) -> tuple[int, bytes]:
        """(status, body) of a single lookup: 200 with the payload or 404 not_found; a
        miss with live inference down or slow raises FallbackUnavailable / FallbackTimeout."""
        resolved, values = self.reader.read(spec.name, _candidates(key, context))
        payload = next((v for v in values if v is not None), None)
        if payload is not None:
            source = stored_source(payload)
            self._count(spec, [source], 0)
            fell_back = context is not None and values[0] is None
            return 200, self._served(
                spec, key, context, payload, shape, resolved, fell_back, source
            )
        self._count(spec, [], 1)
        self._record(spec, [key])
        live = self.on_miss([Miss(spec.name, key, context)], resolved)[0] if spec.live else None
        if isinstance(live, FallbackUnavailable):
            raise live
        if live is not None:
            return 200, render.hit(live, spec, shape, resolved, source="live", age=0)
        return 404, render.miss(spec, key, context, resolved)

    def many(self, spec: Served, req: BatchRequest) -> bytes:
        """A batch answer in request order; duplicates are read once and answered each time.

        With live inference down or too slow, the hits are served and each missing key gets
        a ``fallback_unavailable`` / ``fallback_timeout`` entry; the answer stays whole."""
        unique = list(dict.fromkeys(req.keys))
        per_key = [_candidates(k, req.context) for k in unique]
        resolved, values = self.reader.read(spec.name, [c for cands in per_key for c in cands])
        rendered: dict[str, bytes] = {}
        found: dict[str, str] = {}  # key -> where its stored answer came from
        at = 0
        for key, cands in zip(unique, per_key, strict=True):
            mine = values[at : at + len(cands)]
            at += len(cands)
            payload = next((v for v in mine if v is not None), None)
            if payload is not None:
                found[key] = stored_source(payload)
                fell_back = req.context is not None and mine[0] is None
                rendered[key] = self._served(
                    spec, key, req.context, payload, req.shape, resolved, fell_back, found[key]
                )
        missing = [k for k in unique if k not in rendered]
        self._count(spec, [found[k] for k in req.keys if k in found],
                    sum(1 for k in req.keys if k not in found))  # fmt: skip
        self._record(spec, missing)
        failed: dict[str, FallbackUnavailable] = {}
        if missing and spec.live:
            try:
                answers = self.on_miss([Miss(spec.name, k, req.context) for k in missing], resolved)
            except FallbackUnavailable as exc:  # the hits are still served
                answers = [exc] * len(missing)
            for key, live in zip(missing, answers, strict=True):
                if isinstance(live, FallbackUnavailable):
                    failed[key] = live
                elif live is not None:
                    rendered[key] = render.hit(
                        live, spec, req.shape, resolved, source="live", age=0
                    )
        parts = [
            rendered.get(k) or _unanswered(spec, k, req.context, failed.get(k)) for k in req.keys
        ]
        return render.batch(spec, resolved, parts, sum(1 for k in req.keys if k in rendered))


def _unanswered(
    spec: Served, key: str, context: str | None, error: FallbackUnavailable | None
) -> bytes:
    """A batch entry for a key with no payload: not_found, or why live inference gave none."""
    if error is None:
        return render.miss_item(spec, key, context)
    return render.error_item(spec, key, error.code, error.message)
