"""Reading one version of a dataset from Redis, with a short per-process pointer cache.

A request resolves the pointer once and reads every key from that version, so an answer
never mixes versions. The pointer is cached for ``pointer_cache_s`` per process: a hit
then costs one Redis round trip. A publish keeps the previous version's keys for
rollback, so a cached pointer still reads complete data; and when a read misses, the
pointer is read afresh and the keys read again from the new version if it moved (a
version retired or rolled back meanwhile), so neither the cache nor a publish racing a
read turns a hit into a miss or a partial answer. A declared dataset without a pointer is
never a 404 that reads as "no such key": it is a 503, ``dataset_lost`` where it was
published (this process saw it live, or its registry lists a version that was; Redis
restarted without its data), else ``not_published`` (nothing published yet, or the store
lost its registry too), in every process, one started after the loss included.

A version's keys are read from its hash buckets (prescore.store.values), one round trip for any
number of keys; only the keys missing there are looked for among its live write-backs,
in a second. Payloads are returned as stored: a compact one is decoded by
:meth:`Resolved.decode` with the version's frames (loaded once per version) as the answer
is rendered, so its JSON is built once, with the answer's own fields in front.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import redis

from lookup.lean_reader import LeanReader
from lookup.loading import OneLoad
from lookup.stall import StallGate
from prescore.encoding import compact, keys, routing
from prescore.encoding.registry_entry import VersionInfo
from prescore.errors import StoreUnavailable
from prescore.store import canaries, deltas, values
from prescore.store.redis_client import OUTAGES, Client, outage
from prescore.store.values import Command, Layer, Placed

log = logging.getLogger(__name__)

# an error reply to a read (WRONGTYPE, NOPERM) says the store is not as the lookup reads it
_READ_ERRORS: tuple[type[BaseException], ...] = (*OUTAGES, redis.ResponseError)
_INFO_CACHE_MAX = 16  # versions, each with its frames (a run's item text)
_DELTA_CACHE_MAX = 256  # deltas (at most MAX_DELTAS a version), with the keys each holds
# a delta's keys a process holds, so that a read asks a delta only for keys it has; a
# larger delta is asked for every key (a full run is the better tool for it anyway)
DELTA_KEYS_HELD = 100_000
# the keys of all deltas a process holds (a few tens of MB): a delta that would pass it is
# asked for every key too, so that many large deltas cannot grow a lookup without bound
DELTA_KEYS_HELD_TOTAL = 400_000
_WAS_LIVE = ("published", "retired")  # statuses of a version that has been live


def _lean(client: Client) -> LeanReader | None:
    """The lean reader of a single-node RESP2 client (a cluster's reads go by redis-py)."""
    if not isinstance(client, redis.Redis):
        return None
    try:
        return LeanReader(client)
    except ValueError:  # another protocol than the one it parses
        return None


def undecodable(what: str) -> StoreUnavailable:
    """The error a read of stored bytes no encoder wrote is: a 503 that says so."""
    return StoreUnavailable(
        f"the stored payloads of {what} cannot be decoded", code="undecodable_payload"
    )


@dataclass(frozen=True)
class Resolved:
    """The version one request reads, with what the registry says of it."""

    dataset: str
    version: str
    model: str = ""
    model_version: str = ""
    buckets: int = 0
    frames: Mapping[int, compact.Frame] = field(default_factory=dict, compare=False)
    # the error an undecodable payload of this version is, counted by the reader that read it
    on_undecodable: Callable[[], StoreUnavailable] | None = field(
        default=None, compare=False, repr=False
    )
    deltas: tuple[Layer, ...] = ()  # the version's, newest first (prescore.store.deltas)
    # the version served to a share of keys beside this one (prescore.store.canaries),
    # and that share in basis points (prescore.encoding.routing)
    canary: Resolved | None = None
    canary_share: int = 0
    side: str = ""  # while a canary runs, which side this is: "live" or "canary"

    def served(self, key: str, canary: bool | None = None) -> Resolved:
        """The version that answers ``key``: the canary's for its share of keys (or for
        every key, ``canary`` True; for none, False), else this one."""
        if self.canary is None or canary is False:
            return self
        if canary or routing.to_canary(key, self.canary.version, self.canary_share):
            return self.canary
        return self

    def pinned(self, version: str) -> Resolved | None:
        """This version or its canary's, whichever is ``version`` (None: neither)."""
        if version == self.version:
            return self
        return self.canary if self.canary and self.canary.version == version else None

    @property
    def placed(self) -> Placed:
        return Placed(self.dataset, self.version, self.buckets)

    def scored_text(self, stored: bytes) -> bytes:
        """The text that says when ``stored`` was scored: a compact payload's frame's."""
        if stored[:1] == b"{" or len(stored) < 2:
            return stored
        frame = self.frames.get(stored[1])
        return b"" if frame is None else frame.tail

    def decode(
        self, stored: bytes, key: str, opening: bytes = b"{", limit: int | None = None
    ) -> bytes:
        """A compact payload stored under ``key`` as JSON (see prescore.encoding.compact.decode);
        one that cannot be decoded is a 503 ``undecodable_payload``."""
        try:
            return compact.decode(stored, key, self.frames, opening, limit)
        except ValueError as exc:  # a store not as written
            raise self._undecodable() from exc

    def decode_many(
        self,
        frame_id: int,
        stored: list[tuple[bytes, str]],
        opening: bytes,
        limit: int | None,
    ) -> list[bytes]:
        """:meth:`decode` of each (payload, key) of one frame, in one loop (a batch's)."""
        frame = self.frames.get(frame_id)
        try:
            if frame is None:
                raise ValueError(f"no frame {frame_id}")
            return compact.decode_many(frame, stored, opening, limit)
        except ValueError as exc:
            raise self._undecodable() from exc

    def _undecodable(self) -> StoreUnavailable:
        if self.on_undecodable is not None:
            return self.on_undecodable()
        return undecodable(f"{self.dataset} {self.version}")

    def as_json(self, stored: bytes, key: str) -> bytes:
        """``stored`` as JSON: JSON as it is, a compact payload decoded."""
        return stored if stored[:1] == b"{" else self.decode(stored, key)


class StoreReader:
    """Read payloads of one dataset version; Redis outages become StoreUnavailable."""

    def __init__(
        self,
        client: Client,
        pointer_cache_s: float,
        clock: Callable[[], float] = time.monotonic,
        stall_s: float = 1.0,
        on_error: Callable[[str], None] | None = None,
        held_keys: int = DELTA_KEYS_HELD_TOTAL,
    ) -> None:
        self.client = client
        self.held_keys = held_keys  # of all the deltas cached (DELTA_KEYS_HELD_TOTAL)
        self.stall = StallGate(stall_s, clock)  # fast 503s while the store is stalled
        self.pointer_cache_s = pointer_cache_s
        self._clock = clock
        self._pointers: dict[str, tuple[float, Resolved]] = {}
        self._infos: dict[tuple[str, str], Resolved] = {}  # version ids never change meaning
        self._deltas: dict[tuple[str, str], Layer] = {}
        self._lock = threading.Lock()
        self._loads = OneLoad()  # a version's frames, a delta's keys: one thread loads each
        self._seen: set[str] = set()  # datasets this process has found published
        self._lean = _lean(client)
        self.on_error = on_error  # (action): counts outages, stalls and undecodable reads
        self._down = False  # said once when the store fails, and once when it answers again

    def _outage(self, action: str, doing: str, exc: BaseException) -> StoreUnavailable:
        """The error a Redis outage while ``doing`` is, told to ``on_error`` as ``action``
        (a plain try/except where this is used: a context manager costs the hot path)."""
        if self.on_error is not None:
            self.on_error(action)
        self.stall.failed(timed_out=isinstance(exc, redis.TimeoutError))
        if not self._down:  # each failed request logs its own line; this one says the change
            self._down = True
            log.warning("store unavailable", extra={"action": action, "cause": outage(exc)})
        return StoreUnavailable(f"store unavailable while {doing}", cause=outage(exc))

    def _answered(self) -> None:
        """The store answered a read (an attribute read each when nothing changed)."""
        self.stall.answered()
        if self._down:
            self._down = False
            log.warning("store available again")

    def resolve(self, dataset: str, *, fresh: bool = False) -> Resolved:
        """The version readers use now (cached for ``pointer_cache_s`` unless ``fresh``);
        refused at once while the store is stalled (lookup.stall)."""
        if not self.stall.admit():
            if self.on_error is not None:
                self.on_error("stalled")
            raise StoreUnavailable("store unavailable: it stopped answering; retrying shortly")
        if not fresh and self.pointer_cache_s > 0:
            cached = self._pointers.get(dataset)
            if cached is not None and cached[0] > self._clock():
                return cached[1]
        try:
            raw, listed, canary = self._run(
                [
                    ("GET", keys.pointer_key(dataset)),
                    ("GET", keys.deltas_key(dataset)),
                    ("GET", keys.canary_key(dataset)),
                ]
            )
        except OUTAGES as exc:
            raise self._outage("pointer", "reading the version pointer", exc) from exc
        self._answered()
        if raw is None:
            self._pointers.pop(dataset, None)
            raise self._unpublished(dataset)
        self._seen.add(dataset)
        version = raw.decode() if isinstance(raw, bytes) else raw
        resolved = self._info(dataset, version)
        if ids := deltas.listed(listed, version):
            resolved = replace(resolved, deltas=tuple(self._delta(dataset, i, ids) for i in ids))
        if (beside := canaries.parsed(canary, version)) is not None:
            candidate = replace(self._info(dataset, beside.version), side="canary")
            resolved = replace(resolved, canary=candidate, canary_share=beside.share, side="live")
        if self.pointer_cache_s > 0:
            self._pointers[dataset] = (self._clock() + self.pointer_cache_s, resolved)
        return resolved

    def _unpublished(self, dataset: str) -> StoreUnavailable:
        """The 503 a declared dataset without a live version is: lost, or not published."""
        lost = dataset in self._seen
        if not lost:
            try:
                entries = self.client.hvals(keys.registry_key(dataset))
            except OUTAGES as exc:
                return self._outage("registry", "reading the version registry", exc)
            lost = any(_was_live(e) for e in entries)
        if lost:
            return StoreUnavailable(
                f"the published data of {dataset!r} is missing from the store (it was "
                "lost, e.g. Redis restarted empty); it must be republished",
                code="dataset_lost",
            )
        return StoreUnavailable(
            f"{dataset!r} has no published version: publish it (or, if it was published, "
            "the store lost it with its registry and it must be republished)",
            code="not_published",
        )

    def _info(self, dataset: str, version: str) -> Resolved:
        found = self._infos.get((dataset, version))
        if found is not None:
            return found
        return self._loads.run(
            ("version", dataset, version), partial(self._load_info, dataset, version)
        )

    def _load_info(self, dataset: str, version: str) -> Resolved:
        found = self._infos.get((dataset, version))
        if found is not None:  # loaded by a run that ended as this one began
            return found
        try:
            raw = self.client.hget(keys.registry_key(dataset), version)
        except OUTAGES as exc:
            raise self._outage("registry", "reading the version registry", exc) from exc
        if raw is None:  # not cached: the registry is asked again next time
            return Resolved(
                dataset, version, on_undecodable=partial(self._undecodable, f"{dataset} {version}")
            )
        info = VersionInfo.from_bytes(raw)
        where = Placed(dataset, version, info.buckets)
        try:
            frames = values.load_frames(self.client, where) if info.buckets else {}
        except OUTAGES as exc:
            raise self._outage("registry", "reading the version's frames", exc) from exc
        except ValueError as exc:  # a store not as written: every read of it would fail
            raise self._undecodable(f"{dataset} {version}") from exc
        resolved = Resolved(
            dataset,
            version,
            info.model,
            info.model_version,
            info.buckets,
            frames,
            partial(self._undecodable, f"{dataset} {version}"),
        )
        with self._lock:
            if len(self._infos) >= _INFO_CACHE_MAX:
                self._infos.clear()
            self._infos[(dataset, version)] = resolved
        return resolved

    def _delta(self, dataset: str, version: str, listed: tuple[str, ...]) -> Layer:
        """Where a delta's keys are and, up to DELTA_KEYS_HELD of them (and while all
        those held stay within ``held_keys``), which they are: cached, as an attached
        delta never changes (a key of one rolled back meanwhile reads as missing there
        and is read from the version's own buckets). ``listed``: the dataset's deltas now."""
        found = self._deltas.get((dataset, version))
        if found is not None:
            return found
        load = partial(self._load_delta, dataset, version, listed)
        return self._loads.run(("delta", dataset, version), load)

    def _load_delta(self, dataset: str, version: str, listed: tuple[str, ...]) -> Layer:
        found = self._deltas.get((dataset, version))
        if found is not None:  # loaded by a run that ended as this one began
            return found
        info = self.entry(dataset, version)
        where = Placed(dataset, version, info.buckets if info else 0)
        try:
            held = None
            small = info is not None and where.buckets and info.rows <= DELTA_KEYS_HELD
            if small and self._room(dataset, listed, info.rows if info else 0):
                held = values.keys_of(self.client, where)
            frames = values.load_frames(self.client, where) if where.buckets else {}
        except OUTAGES as exc:
            raise self._outage("registry", "reading a delta's keys", exc) from exc
        except ValueError as exc:  # its frames not as written
            raise self._undecodable(f"{dataset} {version}") from exc
        found = Layer(where, frames, held)
        if info is None:  # listed, yet no entry (a store not as written): asked again
            return found
        with self._lock:
            if len(self._deltas) >= _DELTA_CACHE_MAX:
                self._deltas.clear()
            self._deltas[(dataset, version)] = found
        return found

    def _room(self, dataset: str, listed: tuple[str, ...], rows: int) -> bool:
        """Whether ``rows`` more keys fit in ``held_keys``, once the cached deltas of
        ``dataset`` no longer listed are let go (a request still reading them has them)."""
        with self._lock:
            for key in [k for k in self._deltas if k[0] == dataset and k[1] not in listed]:
                del self._deltas[key]
            used = sum(len(layer.held or ()) for layer in self._deltas.values())
        return used + rows <= self.held_keys

    def entry(self, dataset: str, version: str) -> VersionInfo | None:
        """The registry's entry of ``version``, read now (None: it has none)."""
        try:
            raw = self.client.hget(keys.registry_key(dataset), version)
        except OUTAGES as exc:
            raise self._outage("registry", "reading the version registry", exc) from exc
        return None if raw is None else VersionInfo.from_bytes(raw)

    def read(
        self,
        dataset: str,
        entity_keys: list[str],
        pick: Callable[[Resolved], Resolved] | None = None,
    ) -> tuple[Resolved, list[bytes | None]]:
        """Every key from one version (``pick``: which of the live version and its
        canary, from the live one; default the live one): the payload bytes, or None
        where it is missing."""
        return self.read_many(dataset, [(entity_keys, pick)])[1][0]

    def read_many(
        self,
        dataset: str,
        groups: list[tuple[list[str], Callable[[Resolved], Resolved] | None]],
        resolved: Resolved | None = None,
    ) -> tuple[Resolved, list[tuple[Resolved, list[bytes | None]]]]:
        """:meth:`read` of each group of keys, all in one round trip (a batch's keys of the
        live version and its canary's), from ``resolved`` (default: resolved now). Where
        a key is missing, the pointer is read afresh and a group whose version moved
        meanwhile is read again from the new one. (the live version read beside last,
        and each group's version and payloads)"""
        resolved = resolved or self.resolve(dataset)
        chosen = [pick(resolved) if pick else resolved for _, pick in groups]
        found = self._get(chosen, [entity_keys for entity_keys, _ in groups])
        self._answered()
        if any(v is None for values_ in found for v in values_):
            latest = self.resolve(dataset, fresh=True)
            again = [pick(latest) if pick else latest for _, pick in groups]
            moved = [
                n
                for n, (was, now) in enumerate(zip(chosen, again, strict=True))
                if (was.version, was.deltas) != (now.version, now.deltas)
            ]
            if moved:
                reread = self._get([again[n] for n in moved], [groups[n][0] for n in moved])
                for n, values_ in zip(moved, reread, strict=True):
                    found[n] = values_
            chosen, resolved = again, latest  # the same data may now be the live version's
        return resolved, list(zip(chosen, found, strict=True))

    def _get(
        self, versions: list[Resolved], entity_keys: list[list[str]]
    ) -> list[list[bytes | None]]:
        """Each key's payload as stored, of each version: from the buckets (and its
        deltas), else from the write-backs."""
        reads = [(r.placed, k, r.deltas) for r, k in zip(versions, entity_keys, strict=True)]
        try:
            return values.fetch_many(self._run, reads)
        except _READ_ERRORS as exc:
            raise self._outage("payloads", "reading payloads", exc) from exc
        except ValueError as exc:  # a delta's compact payload not as written
            what = " or ".join(f"{r.dataset} {r.version}" for r in versions)
            raise self._undecodable(f"{what}'s deltas") from exc

    def _undecodable(self, what: str) -> StoreUnavailable:
        if self.on_error is not None:
            self.on_error("decode")
        return undecodable(what)

    def written_back(self, resolved: Resolved, key: str) -> bytes | None:
        """The live write-back of ``key`` under the version, if there is one: a bucket's
        payload is read first, so a stale one's refresh is found only here."""
        if not resolved.buckets:
            return None  # a plain-key version: the write-back replaced the payload itself
        try:
            found: bytes | None = self._run([("GET", resolved.placed.write_back(key))])[0]
        except _READ_ERRORS as exc:
            raise self._outage("payloads", "reading a write-back", exc) from exc
        return found

    def _run(self, commands: list[Command]) -> list[Any]:
        if self._lean is not None:
            return self._lean.run(commands)
        return values.execute(self.client, commands)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except OUTAGES as exc:
            raise self._outage("ping", "pinging Redis", exc) from exc


def _was_live(entry: bytes | str) -> bool:
    """Whether a registry entry is of a version that has been live (an entry that is not
    one, left by anything else, says nothing)."""
    try:
        return VersionInfo.from_bytes(entry).status in _WAS_LIVE
    except (ValueError, TypeError, AttributeError):
        return False
