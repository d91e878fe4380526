"""Answering lookups: read one version, hand misses to the miss seam, render bytes.

A hit is served from the stored bytes with its age; one older than its dataset's max age
is marked stale and refreshed (lookup.live.freshness); a sample of hits is checked against
live inference (lookup.live.shadow). A miss is recorded in the miss log (prescore.store.misslog),
then handed to the miss handler (live inference, single-flighted: lookup.live.singleflight).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat

from lookup import render
from lookup.datasets import Served
from lookup.live.freshness import Ages, Refresher
from lookup.live.misses import FAILURES, Answer, Failure, Miss, MissHandler
from lookup.live.shadow import ShadowChecker
from lookup.metrics import Metrics
from lookup.params import BY_KEY, BatchRequest, Pick, Shape
from lookup.store import Resolved, StoreReader
from prescore.encoding import compact, keys, routing
from prescore.encoding.codec import stored_source
from prescore.errors import NotFound, StoreUnavailable
from prescore.store.misslog import MissLog


def _candidates(key: str, context: str | None, plain: bool = True) -> list[str]:
    """Store keys to try, best first: with a context, ``key|context``, then the ``plain``
    key where the context is not one the bulk run scores (Served.falls_back)."""
    if context:
        own = keys.entity_key(key, context)
        return [own, key] if plain else [own]
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
        self,
        reader: StoreReader,
        on_miss: MissHandler,
        metrics: Metrics,
        extras: Extras | None = None,
    ) -> None:
        self.reader = reader
        self.on_miss = on_miss
        self.metrics = metrics
        self.extras = extras or Extras()
        self.ages = Ages()

    def _stale(self, spec: Served, scored_text: bytes) -> tuple[int | None, bool]:
        """(age, whether it is stale) of an answer whose ``scored_text`` says its scored_at."""
        age = self.ages.age(scored_text)
        return age, spec.max_age_s is not None and age is not None and age > spec.max_age_s

    def _served(
        self,
        spec: Served,
        key: str,
        context: str | None,
        payload: bytes,
        shape: Shape,
        resolved: Resolved,
        fell_back: bool,
        source: str,
    ) -> bytes:
        """A hit's body (``source``: as stored); a stale one replaced by its refresh if
        one was written back, else refreshed; a sampled one shadow-checked."""
        store_key = key if fell_back or not context else keys.entity_key(key, context)
        age, stale = self._stale(spec, resolved.scored_text(payload))
        if stale and source == "precomputed":
            try:
                fresher = self.reader.written_back(resolved, store_key)
            except StoreUnavailable:
                fresher = None  # the stale answer is still an answer
            if fresher is not None:
                payload, source = fresher, stored_source(fresher)
                age, stale = self._stale(spec, resolved.scored_text(payload))
        x = self.extras
        if stale:
            self.metrics.count(self.metrics.stale, spec.name)
            miss = Miss(spec.name, key, context)
            if spec.stale == "live" and spec.live:
                live = self._live([miss], resolved)[0]
                if isinstance(live, bytes):  # else the stale answer is still an answer
                    return render.hit(live, spec, shape, resolved, source="live", age=0)
            elif x.refresher is not None and spec.live:
                x.refresher.submit(miss, resolved)
        elif (  # written-back answers are live ones: comparing them checks nothing
            x.shadow is not None
            and spec.live
            and source == "precomputed"
            and random.random() < x.shadow_rate
        ):
            x.shadow.offer(spec, key, context, resolved.as_json(payload, store_key), resolved)
        return render.hit(
            payload,
            spec,
            shape,
            resolved,
            source=source,
            fell_back=fell_back,
            age=age,
            stale=stale,
            key=store_key,
        )

    def _count(self, spec: Served, sources: list[str], misses: int, side: str = "") -> None:
        written_back = sources.count("written_back")
        hits = len(sources) - written_back
        self.metrics.count_keys(spec.name, hits=hits, misses=misses, written_back=written_back)
        if side:  # a canary runs: the same, by the side that served them
            if sources:
                self.metrics.count(
                    self.metrics.canary_keys, spec.name, side, "hit", by=len(sources)
                )
            if misses:
                self.metrics.count(self.metrics.canary_keys, spec.name, side, "miss", by=misses)

    def _chooser(self, dataset: str, key: str, pick: Pick) -> Callable[[Resolved], Resolved]:
        """Which version answers ``key`` (prescore.store.canaries): the one ``pick``
        pins, or the side the pick or the key's slot sends it to."""
        if pick.version is None:
            return lambda live: live.served(key, pick.canary)
        pinned = pick.version

        def choose(live: Resolved) -> Resolved:
            found = live.pinned(pinned) or self.reader.resolve(dataset, fresh=True).pinned(pinned)
            if found is None:
                raise NotFound(
                    f"version {pinned} is neither the live version of {dataset} nor its "
                    "canary's; only those are served",
                    code="version_not_served",
                )
            return found

        return choose

    def _record(self, spec: Served, missed: list[str]) -> None:
        # the entity's key, not key|context: a bulk run scores an entity in every context
        if self.extras.misslog is not None and spec.miss_log and missed:
            self.extras.misslog.record(spec.name, missed)

    def _live(self, misses: list[Miss], resolved: Resolved) -> list[Answer]:
        """The miss handler's answers; one that raises all the same (a handler of a
        deployment's own) answers each miss with its error."""
        try:
            return self.on_miss(misses, resolved)
        except FAILURES as exc:
            return [exc] * len(misses)

    def one(
        self, spec: Served, key: str, context: str | None, shape: Shape, pick: Pick = BY_KEY
    ) -> tuple[int, bytes]:
        """(status, body) of a single lookup: 200 with the payload or 404 not_found; a
        miss that live inference failed raises its error (FallbackUnavailable,
        FallbackTimeout, or the fallback's InvalidInput). ``pick``: which version, while
        a canary runs (default: the key's side)."""
        started = time.perf_counter()
        choose = self._chooser(spec.name, key, pick)
        fallback = spec.falls_back(context)
        resolved, values = self.reader.read(spec.name, _candidates(key, context, fallback), choose)
        answer = self._one(spec, key, context, shape, resolved, values)
        if resolved.side:
            took = time.perf_counter() - started
            self.metrics.seconds(self.metrics.canary_seconds, spec.name, took, resolved.side)
        return answer

    def _one(
        self,
        spec: Served,
        key: str,
        context: str | None,
        shape: Shape,
        resolved: Resolved,
        values: list[bytes | None],
    ) -> tuple[int, bytes]:
        payload = next((v for v in values if v is not None), None)
        if payload is not None:
            source = stored_source(payload)
            self._count(spec, [source], 0, resolved.side)
            fell_back = context is not None and values[0] is None
            return 200, self._served(
                spec, key, context, payload, shape, resolved, fell_back, source
            )
        self._count(spec, [], 1, resolved.side)
        self._record(spec, [key])
        live = self._live([Miss(spec.name, key, context)], resolved)[0] if spec.live else None
        if isinstance(live, FAILURES):
            raise live
        if live is not None:
            return 200, render.hit(live, spec, shape, resolved, source="live", age=0)
        return 404, render.miss(spec, key, context, resolved)

    def _hits(
        self,
        spec: Served,
        req: BatchRequest,
        unique: list[str],
        resolved: Resolved,
        values: list[bytes | None],
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        """The rendered answers of the ``unique`` keys ``resolved`` holds (``values``: the
        reads of their candidates), and where each came from. A compact payload that
        needs nothing but decoding (fresh, found under the key asked for, no score floor,
        no shadow checks) is decoded straight into its answer; every other goes through
        _served."""
        ctx, shape = req.context, req.shape
        x = self.extras
        straight = shape.min_score is None and not (x.shadow is not None and spec.live)
        openings = _Openings(self, spec, resolved)
        rendered: dict[str, bytes] = {}
        found: dict[str, str] = {}  # key -> where its stored answer came from
        # frame id -> its answers' opening, and (key, (payload, store key)) of each
        direct: dict[int, tuple[bytes, list[tuple[str, tuple[bytes, str]]]]] = {}
        rest = []
        for key, store_key, payload, fell_back in _picked(
            unique, values, ctx, spec.falls_back(ctx)
        ):
            if payload is None:
                continue
            plain = straight and not fell_back and compact.is_compact(payload)
            head = openings[payload[1]] if plain else None
            if head is not None:
                found[key] = "precomputed"
                direct.setdefault(payload[1], (head, []))[1].append((key, (payload, store_key)))
            else:
                found[key] = stored_source(payload)
                rest.append((key, payload, fell_back))
        for frame_id, (head, group) in direct.items():  # first: an undecodable one stops all
            bodies = resolved.decode_many(frame_id, [item for _, item in group], head, shape.limit)
            rendered.update(zip([key for key, _ in group], bodies, strict=True))
        for key, payload, fell_back in rest:
            rendered[key] = self._served(
                spec, key, ctx, payload, shape, resolved, fell_back, found[key]
            )
        return rendered, found

    def many(self, spec: Served, req: BatchRequest) -> bytes:
        """A batch answer in request order; duplicates are read once and answered each time.

        With live inference down, slow or refusing, the hits are served and each missing
        key gets an entry with the failure's code; the answer stays whole. While a canary
        runs, its keys are read from it and the rest from the live version (one read
        each), and each entry says which version answered it."""
        unique = list(dict.fromkeys(req.keys))
        live = self.reader.resolve(spec.name)
        groups = self._groups(spec.name, live, unique, req.pick)
        ctx = req.context
        plain = spec.falls_back(ctx)
        asked = [
            ([c for k in group for c in _candidates(k, ctx, plain)] if ctx else group, choose)
            for group, choose in groups
        ]
        live, reads = self.reader.read_many(spec.name, asked, live)
        rendered: dict[str, bytes] = {}
        found: dict[str, str] = {}
        failed: dict[str, Failure] = {}
        side: dict[str, Resolved] = {}
        for (group, _), (resolved, values) in zip(groups, reads, strict=True):
            self._group(spec, req, group, resolved, values, rendered, found, failed)
            side.update(dict.fromkeys(group, resolved))
        for resolved in {id(r): r for r in side.values()}.values():
            its = [k for k in req.keys if side[k] is resolved]
            self._count(
                spec,
                [found[k] for k in its if k in found],
                sum(1 for k in its if k not in found),
                resolved.side,
            )
        parts = [
            rendered.get(k) or _unanswered(spec, k, req.context, failed.get(k)) for k in req.keys
        ]
        served = sum(1 for k in req.keys if k in rendered)
        if req.pick != BY_KEY:  # every key from the one version asked for
            return render.batch(spec, side[req.keys[0]], parts, served)
        # the live version the keys were finally read beside, and the canary if it answered
        canary = next((r.version for r in side.values() if r.side == "canary"), None)
        return render.batch(spec, live, parts, served, canary)

    def _groups(
        self, dataset: str, live: Resolved, unique: list[str], pick: Pick
    ) -> list[tuple[list[str], Callable[[Resolved], Resolved] | None]]:
        """The keys read from each version, with how that version is chosen from the
        live one: all from one, unless a canary runs beside ``live`` and the request
        leaves the choice to each key's slot."""
        if pick != BY_KEY:
            return [(unique, self._chooser(dataset, "", pick))]
        if live.canary is None:
            return [(unique, None)]
        to = routing.canary_keys(unique, live.canary.version, live.canary_share)
        split = [
            ([k for k in unique if k not in to], _live_side),
            ([k for k in unique if k in to], _canary_side),
        ]
        return [(group, choose) for group, choose in split if group]

    def _group(
        self,
        spec: Served,
        req: BatchRequest,
        unique: list[str],
        resolved: Resolved,
        values: list[bytes | None],
        rendered: dict[str, bytes],
        found: dict[str, str],
        failed: dict[str, Failure],
    ) -> None:
        """Answer the ``unique`` keys read from one version into ``rendered``, with where
        each came from (``found``) and why live inference gave none (``failed``)."""
        hits, sources = self._hits(spec, req, unique, resolved, values)
        rendered.update(hits)
        found.update(sources)
        missing = [k for k in unique if k not in hits]
        self._record(spec, missing)
        if missing and spec.live:
            answers = self._live([Miss(spec.name, k, req.context) for k in missing], resolved)
            for key, live in zip(missing, answers, strict=True):
                if isinstance(live, FAILURES):
                    failed[key] = live
                elif live is not None:
                    rendered[key] = render.hit(
                        live, spec, req.shape, resolved, source="live", age=0
                    )


def _live_side(live: Resolved) -> Resolved:
    return live.served("", canary=False)


def _canary_side(live: Resolved) -> Resolved:
    return live.served("", canary=True)


def _picked(
    unique: list[str], values: list[bytes | None], context: str | None, plain: bool = True
) -> Iterator[tuple[str, str, bytes | None, bool]]:
    """(key, the store key its payload was found under, the payload, whether it fell back
    to the plain key) for each key, from the reads of its candidates (_candidates)."""
    if not context:
        yield from zip(unique, unique, values, repeat(False))
        return
    if not plain:  # a scored context: its own key only
        named = [keys.entity_key(key, context) for key in unique]
        yield from zip(unique, named, values, repeat(False))
        return
    for i, key in enumerate(unique):
        own, fallback = values[2 * i], values[2 * i + 1]
        if own is not None or fallback is None:
            yield key, keys.entity_key(key, context), own, False
        else:
            yield key, key, fallback, True


class _Openings(dict[int, bytes | None]):
    """The opening of the fresh answers of each frame a batch meets, worked out once a
    request; None where its answers are stale (or it has no frame): those go the whole
    way, through Lookup._served."""

    def __init__(self, lookup: Lookup, spec: Served, resolved: Resolved) -> None:
        super().__init__()
        self.lookup, self.spec, self.resolved = lookup, spec, resolved

    def __missing__(self, frame_id: int) -> bytes | None:
        frame = self.resolved.frames.get(frame_id)
        head = None
        if frame is not None:
            age, stale = self.lookup._stale(self.spec, frame.tail)
            head = None if stale else render.opening_of(self.resolved, "precomputed", age)
        self[frame_id] = head
        return head


def _unanswered(spec: Served, key: str, context: str | None, error: Failure | None) -> bytes:
    """A batch entry for a key with no payload: not_found, or why live inference gave none."""
    if error is None:
        return render.miss_item(spec, key, context)
    return render.error_item(spec, key, error.code, error.message)
