"""A version's values in Redis: written into its hash buckets, counted, read, removed.

Where each key lives is prescore.encoding.keys' layout: a precomputed payload in bucket
``crc32(key) % buckets`` of its version, a live write-back as a key of its own (with a
TTL, recorded in the version's write-back set). Every operation here touches only the
version's own keys, so its cost grows with the version, never with the rest of Redis: no
SCAN, except for a version written before buckets (``buckets`` 0), kept readable so an
upgrade serves what is live until the next publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hiredis
import redis

from prescore.encoding import compact, keys
from prescore.encoding.registry_entry import VersionInfo
from prescore.store.bucket_batches import Grouped, group
from prescore.store.redis_client import Client, as_bytes, as_text, run_packed

Command = tuple[str, ...]
# A writer's progress: its field ('' adds to the shared one), the keys it has written and
# the units its model scored for them (pairs, rows, images; 0: not counted).
Reported = tuple[str, int, int]
# Sends a batch (its rows grouped by bucket) and the writer's progress only while its
# writer may still write (prescore.store.versions.Versions.fence); raises otherwise.
Fence = Callable[[Grouped, Reported], None]
UNITS = "/units"  # a writer's units scored, in the progress hash beside its keys' field
_PIPELINE = 1000  # commands a round trip when counting or removing
# Rows a write sends at once: a batch spreads over the version's buckets, and the more of
# its keys share a bucket the fewer commands (or script calls) Redis runs for them.
WRITE_BATCH = 10_000


@dataclass(frozen=True)
class Placed:
    """One version of a dataset and how many buckets its keys are spread over."""

    dataset: str
    version: str
    buckets: int

    @classmethod
    def of(cls, dataset: str, info: VersionInfo) -> Placed:
        """Where the keys of the version ``info`` registers live (no I/O)."""
        return cls(dataset, info.version, info.buckets)

    def bucket(self, key: str) -> str:
        return keys.bucket_key(self.dataset, self.version, keys.bucket_of(key, self.buckets))

    def reads(self, entity_keys: Iterable[str]) -> list[Command]:
        """The command that reads each key's precomputed payload (no I/O)."""
        if not self.buckets:
            return [("GET", keys.value_key(self.dataset, self.version, k)) for k in entity_keys]
        names = list(entity_keys)
        where = keys.bucket_keys(self.dataset, self.version, self.buckets, names)
        return [("HGET", bucket, k) for bucket, k in zip(where, names, strict=True)]

    def write_back(self, key: str) -> str:
        """The key a live answer for ``key`` is written back to."""
        return keys.value_key(self.dataset, self.version, key)

    def bucket_names(self) -> list[str]:
        return [keys.bucket_key(self.dataset, self.version, b) for b in range(self.buckets)]


@dataclass(frozen=True)
class Layer:
    """A delta read before its version (prescore.store.deltas), with its frames and,
    where the reader loaded them (:func:`keys_of`), the keys it holds: then only those
    keys are asked of it, and a read of any other key costs nothing more (None: every
    key is asked)."""

    placed: Placed
    frames: Mapping[int, compact.Frame] = field(default_factory=dict, compare=False)
    held: frozenset[str] | None = field(default=None, compare=False)

    def asked(self, entity_keys: list[str]) -> list[int]:
        """The indices of ``entity_keys`` this layer may hold."""
        if self.held is None:
            return list(range(len(entity_keys)))
        return [i for i, k in enumerate(entity_keys) if k in self.held]

    def as_json(self, stored: bytes, key: str) -> bytes:
        """A payload of this delta as JSON: its compact payloads are decoded with its own
        frames here, as its version's frames cannot (ValueError: not as written)."""
        return compact.decode(stored, key, self.frames) if compact.is_compact(stored) else stored


@dataclass
class Tally:
    """How many keys one writer (a task attempt: ``field`` names its partition) has
    written so far, and the units its model scored for them (``units``: the caller adds
    a batch's before writing it). Reported under its own field, a retried task's counts
    replace its lost attempt's instead of adding to them."""

    field: str
    total: int = 0
    units: int = 0


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write(
    client: Client,
    where: Placed,
    rows: Iterable[tuple[str, bytes]],
    batch: int = WRITE_BATCH,
    tally: Tally | None = None,
    fence: Fence | None = None,
) -> int:
    """HSET each ``(key, payload)`` into its bucket, ``batch`` rows a round trip, and count
    them in the version's progress (under ``tally``'s field, else a shared one); returns
    how many were written. With ``fence``, each batch lands only while the writer may
    still write (prescore.store.versions.Versions.fence)."""
    written = 0
    chunk: list[tuple[str, bytes]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= batch:
            written += _write_chunk(client, where, chunk, tally, fence)
            chunk = []
    written += _write_chunk(client, where, chunk, tally, fence)
    return written


def written(client: Client, where: Placed) -> int:
    """Keys written so far to a version being written, by its writers' own counts."""
    return progress(client, where)[0]


def progress(client: Client, where: Placed) -> tuple[int, int]:
    """(keys written, units scored) so far in a version being written, by its writers'
    own counts."""
    name = keys.written_key(where.dataset, where.version)
    try:
        counts = client.hgetall(name)
    except redis.ResponseError:  # WRONGTYPE: a writer from before, one counter for all
        return int(client.get(name) or 0), 0
    units = [int(n) for f, n in counts.items() if as_text(f).endswith(UNITS)]
    return sum(int(n) for n in counts.values()) - sum(units), sum(units)


def _write_chunk(
    client: Client,
    where: Placed,
    rows: list[tuple[str, bytes]],
    tally: Tally | None,
    fence: Fence | None,
) -> int:
    if not rows:
        return 0
    grouped = group(where.dataset, where.version, where.buckets, rows)
    total = (tally.total if tally is not None else 0) + len(rows)
    reported = (tally.field, total, tally.units) if tally is not None else ("", len(rows), 0)
    if fence is not None:
        fence(grouped, reported)
    else:
        send(client, where.dataset, where.version, grouped, reported)
    if tally is not None:
        tally.total = total
    return len(rows)


def send(
    client: Client,
    dataset: str,
    version: str,
    buckets: Grouped,
    reported: Reported,
) -> None:
    """A batch's HSETs and the writer's progress at once, unchecked: an unfenced write's
    (a version's own writers all write fenced, prescore.store.writers)."""
    commands: list[tuple[Any, ...]] = []
    pairs, row = buckets.pairs(), 0
    for name, count in zip(buckets.names, buckets.counts, strict=True):
        commands.append(("HSET", name, *pairs[2 * row : 2 * (row + count)]))
        row += count
    name = keys.written_key(dataset, version)
    field, total, units = reported
    if field:
        commands.append(("HSET", name, field, total))
        if units:
            commands.append(("HSET", name, field + UNITS, units))
    else:
        commands.append(("HINCRBY", name, "-", total))
    run_simple(client, commands)


def fence_buckets(
    client: Client, where: Placed, token: str, between: Callable[[], None] | None = None
) -> None:
    """Make each bucket of a version being begun, holding its writer's ``token`` in
    keys.FENCE_FIELD: a cluster's writer lands a batch in a bucket only while it is there
    (prescore.store.transitions), and it goes with the bucket. ``between`` runs after each
    round trip (the writer renews its lease: a large version has many buckets)."""
    for names in _chunks(where.bucket_names(), _PIPELINE):
        run_simple(client, [("HSET", name, keys.FENCE_FIELD, token) for name in names])
        if between is not None:
            between()


def count(client: Client, where: Placed) -> int:
    """Keys present in the version's buckets (HLEN of each, less its fence: what is
    there, not what was sent, so a lost or doubled write cannot pass)."""
    if not where.buckets:
        pattern = keys.version_prefix(where.dataset, where.version) + "*"
        return sum(1 for _ in client.scan_iter(match=pattern, count=5000))
    total = 0
    for names in _chunks(where.bucket_names(), _PIPELINE // 2):
        asked = [("HLEN", name) for name in names] + [
            ("HEXISTS", name, keys.FENCE_FIELD) for name in names
        ]
        found = run_simple(client, asked)
        lengths, fences = found[: len(names)], found[len(names) :]
        total += sum(int(n) for n in lengths) - sum(int(f) for f in fences)
    return total


def write_frames(client: Client, where: Placed, frames: Mapping[int, compact.Frame]) -> None:
    """Store the frames the version's compact payloads are decoded with."""
    if frames:
        fields = compact.frames_to_fields(frames)
        name = keys.frames_key(where.dataset, where.version)
        for part in _chunks(list(fields.items()), 8):  # bounded replies: no field is large
            client.hset(name, mapping=dict(part))


def load_frames(client: Client, where: Placed) -> dict[int, compact.Frame]:
    """The version's frames (none for a version without compact payloads)."""
    name = keys.frames_key(where.dataset, where.version)
    heads = client.hget(name, compact.HEADS)
    if heads is None:
        return {}
    try:
        wanted = compact.entry_fields(as_bytes(heads))
        fields: dict[str, bytes] = {}
        for part in _chunks(wanted, 8):
            found = client.hmget(name, part)
            fields.update({f: as_bytes(v) for f, v in zip(part, found, strict=True) if v})
        return compact.frames_from_fields(as_bytes(heads), fields)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # not as written
        raise ValueError(f"{where.dataset} {where.version}: its frames are unreadable") from exc


def run_simple(client: Client, commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies of ``commands`` as Redis gives them (integers, OK: replies that need
    no parsing), all at once. On one Redis they are packed by hiredis in one call each:
    a version's thousands of buckets cost redis-py's pipeline more than Redis spends
    on them. A cluster's go by its pipeline, each to its node."""
    if isinstance(client, redis.RedisCluster):
        return execute(client, commands)
    return run_packed(client, [hiredis.pack_command(c) for c in commands])


def execute(client: Client, commands: list[Command]) -> list[Any]:
    """The replies of ``commands``, sent as one pipeline (one round trip on one node)."""
    if len(commands) == 1:
        return [client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute())


def fetch(
    run: Callable[[list[Command]], list[Any]],
    where: Placed,
    entity_keys: list[str],
    deltas: Sequence[Layer] = (),
) -> list[bytes | None]:
    """Each key's stored bytes, from the newest of ``deltas`` holding it, else
    precomputed, else written back; None where it has none of these. ``run`` sends
    commands and returns their replies (the deltas and the buckets in one round trip)."""
    return fetch_many(run, [(where, entity_keys, deltas)])[0]


def fetch_many(
    run: Callable[[list[Command]], list[Any]],
    reads: Sequence[tuple[Placed, list[str], Sequence[Layer]]],
) -> list[list[bytes | None]]:
    """:func:`fetch` of several (version, keys, its deltas) at once: one round trip for
    all of them (a canary's keys and the live version's), and one more only for the
    write-backs of keys none of them holds."""
    plans = [_plan(where, entity_keys, deltas) for where, entity_keys, deltas in reads]
    sent = [c for _, commands in plans for c in commands]
    replies = run(sent) if sent else []
    found_all: list[list[bytes | None]] = []
    at = 0
    for (_, entity_keys, deltas), (asked, commands) in zip(reads, plans, strict=True):
        part, at = replies[at : at + len(commands)], at + len(commands)
        found_all.append(_layered(part, entity_keys, deltas, asked))
    backs = [
        (n, i)
        for n, ((where, entity_keys, _), found) in enumerate(zip(reads, found_all, strict=True))
        if where.buckets
        for i, v in enumerate(found)
        if v is None
    ]
    if backs:
        got = run([("GET", reads[n][0].write_back(reads[n][1][i])) for n, i in backs])
        for (n, i), value in zip(backs, got, strict=True):
            found_all[n][i] = value
    return found_all


def _plan(
    where: Placed, entity_keys: list[str], deltas: Sequence[Layer]
) -> tuple[list[list[int]], list[Command]]:
    """Which keys each delta is asked for, and the commands that read them and then every
    key from the version's own buckets."""
    if not entity_keys:
        return [], []
    asked = [layer.asked(entity_keys) for layer in deltas]
    commands = [
        c
        for layer, indices in zip(deltas, asked, strict=True)
        for c in layer.placed.reads([entity_keys[i] for i in indices])
    ]
    return asked, [*commands, *where.reads(entity_keys)]


def _layered(
    replies: list[Any], entity_keys: list[str], deltas: Sequence[Layer], asked: list[list[int]]
) -> list[bytes | None]:
    """Each key's bytes from the replies of :func:`_plan`'s commands: the newest delta's
    that holds it, else the version's own."""
    if not entity_keys:
        return []
    from_deltas = sum(len(indices) for indices in asked)
    found: list[bytes | None] = replies[from_deltas:] if from_deltas else replies
    at = from_deltas
    for layer, indices in zip(reversed(deltas), reversed(asked), strict=True):  # newest last
        at -= len(indices)
        for i, value in zip(indices, replies[at : at + len(indices)], strict=True):
            if value is not None:
                found[i] = layer.as_json(value, entity_keys[i])
    return found


def read_raw(
    client: Client, where: Placed, entity_keys: list[str], deltas: Sequence[Layer] = ()
) -> list[bytes | None]:
    """Each key's stored bytes (see :func:`fetch`); None where it has none."""
    return fetch(partial(execute_grouped, client), where, entity_keys, deltas)


def execute_grouped(client: Client, commands: list[Command]) -> list[Any]:
    """:func:`execute`, with the HGETs of one bucket sent as one HMGET: the same replies,
    for far fewer commands where many keys share a bucket (a gate's sample of a delta;
    the lookup's own reads of a few keys from many buckets gain nothing from it)."""
    by_bucket: dict[Any, list[int]] = {}
    others = []
    for n, command in enumerate(commands):
        if command[0] == "HGET":
            by_bucket.setdefault(command[1], []).append(n)
        else:
            others.append(n)
    grouped = [("HMGET", name, *(commands[n][2] for n in ns)) for name, ns in by_bucket.items()]
    replies = execute(client, [*grouped, *(commands[n] for n in others)])
    out: list[Any] = [None] * len(commands)
    for ns, got in zip(by_bucket.values(), replies, strict=False):
        for n, value in zip(ns, got, strict=True):
            out[n] = value
    for n, value in zip(others, replies[len(grouped) :], strict=True):
        out[n] = value
    return out


def as_json(
    found: list[bytes | None], entity_keys: list[str], frames: Mapping[int, compact.Frame]
) -> list[bytes | None]:
    """Stored bytes as served: JSON as they are, compact payloads decoded."""
    return [
        v if v is None or v[:1] == b"{" else compact.decode(v, k, frames)
        for k, v in zip(entity_keys, found, strict=True)
    ]


def keys_of(client: Client, where: Placed) -> frozenset[str]:
    """Every key a sealed version holds in its buckets (a delta's: it never changes)."""
    found: set[str] = set()
    for names in _chunks(where.bucket_names(), _PIPELINE // 10):
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hkeys(name)
        for fields in pipe.execute():
            found.update(as_text(f) for f in fields)
    found.discard(keys.FENCE_FIELD)
    return frozenset(found)


def held(client: Client, where: Placed, entity_keys: list[str]) -> list[str]:
    """The ``entity_keys`` the version holds precomputed (its write-backs aside)."""
    found: list[str] = []
    for part in _chunks(entity_keys, _PIPELINE):
        checks: list[Command] = [
            ("EXISTS", keys.value_key(where.dataset, where.version, k))
            if not where.buckets
            else ("HEXISTS", where.bucket(k), k)
            for k in part
        ]
        found += [k for k, there in zip(part, execute(client, checks), strict=True) if there]
    return found


def read(
    client: Client,
    where: Placed,
    entity_keys: list[str],
    frames: Mapping[int, compact.Frame] | None = None,
    deltas: Sequence[Layer] = (),
) -> list[bytes | None]:
    """Each key's payload as served (JSON), or None; ``frames``: the version's, if loaded;
    ``deltas``: the version's, newest first (their payloads are JSON)."""
    raw = read_raw(client, where, entity_keys, deltas)
    if frames is None and any(v is not None and compact.is_compact(v) for v in raw):
        frames = load_frames(client, where)
    return as_json(raw, entity_keys, frames or {})


def _window(ttl_s: int, now: float | None = None) -> int:
    return int(time.time() if now is None else now) // max(ttl_s, 1)


def record_write_backs(pipe: Any, where: Placed, names: list[str], ttl_s: int) -> None:
    """Add live write-backs to the version's record of them (queued on ``pipe``): a set
    per TTL window, so that no set outlives its members' window or grows past what one
    window's bound (``PRESCORE_LIVE_MAX_KEYS``) lets in."""
    if names:
        record = keys.write_backs_key(where.dataset, where.version, _window(ttl_s))
        pipe.sadd(record, *names)
        pipe.expire(record, 2 * ttl_s)  # its last members expire within one TTL of it


def retract_write_backs(pipe: Any, where: Placed, names: list[str], ttl_s: int) -> None:
    """Remove live write-backs that landed after their version's keys were removed, and
    the record of them (queued on ``pipe``; one key a command, as a cluster takes them)."""
    for name in names:
        pipe.delete(name)
    pipe.srem(keys.write_backs_key(where.dataset, where.version, _window(ttl_s)), *names)
    pipe.delete(keys.live_counter_key(where.dataset, where.version))


def _recorded(client: Client, where: Placed, ttl_s: int) -> list[str]:
    """The records of the two windows whose write-backs may not have expired yet, and
    those write-backs."""
    now = _window(ttl_s)
    records = [keys.write_backs_key(where.dataset, where.version, w) for w in (now - 1, now)]
    members = [as_text(k) for r in records for k in client.smembers(r)]
    return records + members


def delete(client: Client, where: Placed, batch: int = 1000, ttl_s: int = 86_400) -> int:
    """UNLINK every key of the version (buckets, write-backs and their bound's counter,
    frames, progress) from its own record of them, ``batch`` keys a command (non-blocking
    on the server); ``ttl_s``: the live write-backs' TTL."""
    if not where.buckets:
        pattern = keys.version_prefix(where.dataset, where.version) + "*"
        names = [as_text(k) for k in client.scan_iter(match=pattern, count=5000)]
    else:
        names = where.bucket_names() + _recorded(client, where, ttl_s)
    names.append(keys.frames_key(where.dataset, where.version))
    names.append(keys.written_key(where.dataset, where.version))
    names.append(keys.live_counter_key(where.dataset, where.version))
    # One command a batch; redis-py's cluster client splits it by slot.
    return sum(int(client.unlink(*part)) for part in _chunks(names, batch))
