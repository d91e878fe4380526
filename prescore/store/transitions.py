"""Atomic transitions of a dataset's version registry, pointer and writer leases.

Every change of a version's state (publish, gate, release, fail, rollback, retire) is a
compare-and-set: the caller reads the pointer and the registry entries it decides on,
works out the new entries, and one Lua script applies them only if what was read is
still there, byte for byte (and, for a writer's own transition, only while its lease
holds its token). Otherwise nothing is written and the caller reads again and decides
again, as redis-py's ``Redis.transaction`` retries a WATCHed block. The pointer, the
registry and the leases share the ``{dataset}`` hash tag, so the script runs on one node
of a Redis Cluster as on a single Redis.

A lease is a key without a TTL holding ``token:deadline`` (milliseconds of the Redis
server's clock): a ``volatile-*`` eviction policy cannot take it, and only the holder of
the token moves its deadline on. A lease past its deadline is lapsed: its writer is dead.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis

from prescore.encoding import keys
from prescore.store.bucket_batches import Grouped
from prescore.store.redis_client import Client, as_text, run_packed

# KEYS: pointer, registry, lease (or the registry again when none is checked), deltas,
#       canary
# ARGV: pointer as read ('' none), new pointer ('' leave), token ('' no check),
#       release the lease ('1'), n, then n (version, entry as read, new entry) triples,
#       then '1' to check the deltas, the deltas as read and what they become ('' none),
#       then the same three for the canary.
# A new pointer removes the deltas (they belong to the version it leaves) and the canary
# (it ran beside that version) unless the change names what they become (a publish
# carries the deltas newer than the new version).
_APPLY = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 'pointer' end
local d = 6 + 3 * tonumber(ARGV[5])
if ARGV[d] == '1' and (redis.call('GET', KEYS[4]) or '') ~= ARGV[d + 1] then
  return 'deltas'
end
if ARGV[d + 3] == '1' and (redis.call('GET', KEYS[5]) or '') ~= ARGV[d + 4] then
  return 'canary'
end
if ARGV[3] ~= '' then
  local held = redis.call('GET', KEYS[3]) or ''
  local sep = string.find(held, ':', 1, true)
  if not sep or string.sub(held, 1, sep - 1) ~= ARGV[3]
     or tonumber(string.sub(held, sep + 1)) < ms then return 'lease' end
end
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  local v, was = ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  if (redis.call('HGET', KEYS[2], v) or '') ~= was then return 'entry' end
end
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[6 + 3 * i], ARGV[8 + 3 * i])
end
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[d] == '1' then
  if ARGV[d + 2] == '' then redis.call('DEL', KEYS[4])
  else redis.call('SET', KEYS[4], ARGV[d + 2]) end
elseif ARGV[2] ~= '' and ARGV[2] ~= ARGV[1] then
  redis.call('DEL', KEYS[4])
end
if ARGV[d + 3] == '1' then
  if ARGV[d + 5] == '' then redis.call('DEL', KEYS[5])
  else redis.call('SET', KEYS[5], ARGV[d + 5]) end
elseif ARGV[2] ~= '' and ARGV[2] ~= ARGV[1] then
  redis.call('DEL', KEYS[5])
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) end
return 'ok'
"""

# KEYS: lease. ARGV: token, lease ms, '1' to take a free lease. Returns 1 held, 0 lost
# (another token holds it, it is gone, or its deadline passed: a lapse is final).
_HOLD = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, ':', 1, true)
  if not sep or string.sub(held, 1, sep - 1) ~= ARGV[1] then return 0 end
  -- a lapsed lease stays lapsed: another job may already be failing its version
  if tonumber(string.sub(held, sep + 1)) < ms then return 0 end
elseif ARGV[3] ~= '1' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. (ms + tonumber(ARGV[2])))
return 1
"""

# KEYS: leases. ARGV: a token ('' any). Returns for each: 1 held (by that token) before
# its deadline, 0 missing, lapsed or held by another.
_ALIVE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local out = {}
for i, name in ipairs(KEYS) do
  local held = redis.call('GET', name) or ''
  local sep = string.find(held, ':', 1, true)
  local ok = sep and tonumber(string.sub(held, sep + 1)) >= ms
  if ok and ARGV[1] ~= '' then ok = string.sub(held, 1, sep - 1) == ARGV[1] end
  out[i] = ok and 1 or 0
end
return out
"""

# KEYS: lease, registry, progress, then the batch's buckets. ARGV: token, version, the
# writer's progress field ('' adds to the shared one), its keys (0: none in this call) and
# units scored (0: none; under FIELD/units), then each bucket's number of keys, then
# the key/payload pairs of them all, bucket by bucket. Writes only while the version is
# 'writing' and its lease is held by the token, before its deadline: 'ok', else what
# was not.
_WRITE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local held = redis.call('GET', KEYS[1]) or ''
local sep = string.find(held, ':', 1, true)
if not sep or string.sub(held, 1, sep - 1) ~= ARGV[1]
   or tonumber(string.sub(held, sep + 1)) < ms then return 'lease' end
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if not entry or cjson.decode(entry)['status'] ~= 'writing' then return 'status' end
local a = 3 + #KEYS  -- the first pair, after the buckets' counts
for i = 4, #KEYS do
  local last = a + 2 * tonumber(ARGV[2 + i]) - 1
  for j = a, last, 2000 do  -- unpack's bound: Lua's stack holds 8,000 values
    redis.call('HSET', KEYS[i], unpack(ARGV, j, math.min(j + 1999, last)))
  end
  a = last + 1
end
if ARGV[3] == '' then
  if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[3], '-', ARGV[4]) end
else
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
  if ARGV[5] ~= '0' then redis.call('HSET', KEYS[3], ARGV[3] .. '/units', ARGV[5]) end
end
return 'ok'
"""

# KEYS: one bucket. ARGV: the writer's token, then key/payload pairs. Writes only while
# the bucket holds the token as its fence (keys.FENCE_FIELD, set when the version began,
# gone with the bucket once the version is failed or removed): 1, else 0 and nothing.
_WRITE_BUCKET = (
    "if redis.call('HGET',KEYS[1],'')~=ARGV[1] then return 0 end "
    "for j=2,#ARGV,2000 do redis.call('HSET',KEYS[1],unpack(ARGV,j,math.min(j+1999,#ARGV))) end "
    "return 1"
)

# KEYS: buckets. ARGV: the writer's token. Seals each bucket whose fence is the token (the
# fence becomes '': no writer holds that), so that nothing more lands in a version that
# is being published or gated; how many are sealed (a gone bucket is not).
_SEAL = """
local n = 0
for _, name in ipairs(KEYS) do
  local fence = redis.call('HGET', name, '')
  if fence == ARGV[1] then
    redis.call('HSET', name, '', '')
    n = n + 1
  elseif fence == '' then
    n = n + 1
  end
end
return n
"""

ATTEMPTS = 50  # compare-and-set rounds before a transition gives up (each lost to a writer)


class Conflict(Exception):
    """What a transition read changed before it could apply (its CAS lost)."""


@dataclass(frozen=True)
class Change:
    """A transition: the pointer as read and where it goes, each entry as read (None:
    absent) and what it becomes, and the writer's lease it needs (and releases)."""

    pointer_was: str | None
    entries: Mapping[str, tuple[bytes | None, bytes]]
    pointer_to: str | None = None
    lease: tuple[str, str] | None = None  # (version, token): held, then released
    release: bool = True
    # the live version's deltas as read and what they become (prescore.store.deltas);
    # None: neither checked nor changed
    deltas: tuple[str, str] | None = None
    # the canary as read and what it becomes (prescore.store.canaries); None: neither
    # checked nor changed
    canary: tuple[str, str] | None = None


@dataclass
class Registry:
    """The scripts of one dataset, registered once per client (EVALSHA, reloaded by
    redis-py when Redis has forgotten them; a batch's writes send their script as EVAL,
    :func:`_write_calls`)."""

    client: Client
    dataset: str
    _scripts: dict[str, Any] = field(default_factory=dict)

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.client.register_script(source)
        return self._scripts[name]

    def apply(self, change: Change) -> str:
        """'ok', or what had changed: 'pointer', 'entry', 'deltas', 'canary' or 'lease'
        (nothing written)."""
        lease = keys.registry_key(self.dataset)
        token = ""
        if change.lease is not None:
            lease, token = keys.lease_key(self.dataset, change.lease[0]), change.lease[1]
        args: list[Any] = [
            change.pointer_was or "",
            change.pointer_to or "",
            token,
            "1" if change.lease is not None and change.release else "0",
            len(change.entries),
        ]
        for version, (was, new) in change.entries.items():
            args += [version, was or b"", new]
        for checked in (change.deltas, change.canary):
            args += ["1", *checked] if checked is not None else ["0", "", ""]
        names = [
            keys.pointer_key(self.dataset),
            keys.registry_key(self.dataset),
            lease,
            keys.deltas_key(self.dataset),
            keys.canary_key(self.dataset),
        ]
        return as_text(self._script("apply", _APPLY)(keys=names, args=args))

    def hold(self, version: str, token: str, lease_s: float, take: bool = False) -> bool:
        """Take (``take``) or renew the lease of ``version`` for ``lease_s``: False when
        another token holds it, or (renewing) when it is gone."""
        ms = max(int(lease_s * 1000), 1)
        name = keys.lease_key(self.dataset, version)
        return bool(self._script("hold", _HOLD)(keys=[name], args=[token, ms, "1" if take else ""]))

    def alive(self, versions: list[str], token: str = "") -> list[bool]:
        """Whether each version's writer (the one holding ``token``, if given) still holds
        its lease, before its deadline."""
        if not versions:
            return []
        names = [keys.lease_key(self.dataset, v) for v in versions]
        return [bool(x) for x in self._script("alive", _ALIVE)(keys=names, args=[token])]

    def write(
        self,
        version: str,
        token: str,
        buckets: Grouped,
        progress: tuple[str, int, int],
    ) -> str:
        """Write a batch (its rows grouped by bucket) and the writer's progress (its field,
        '' for the shared one, its keys and its units scored), only while ``token``
        holds the version's lease and the version is 'writing': 'ok', else 'lease',
        'status' or 'fence'.

        On a single Redis each script call checks the lease and the entry, then writes
        its buckets, and nothing after a refusal lands. The batch goes as several
        calls, packed by hiredis from slices of its one array of arguments
        (prescore.store.bucket_batches) and each sent once packed, their replies read
        after the last: Redis runs one while the next is packed. redis-py's pipeline,
        which checks and packs each argument in Python and sends nothing before the
        last, cost the writer more than Redis spent running the calls. A cluster
        spreads the buckets over its nodes, where no script sees the lease: each bucket
        is written by a script on its own node that checks the bucket's fence (what a
        failed version's writer could still land before the check is removed with the
        bucket), then the progress under the lease's check."""
        head = [
            keys.lease_key(self.dataset, version),
            keys.registry_key(self.dataset),
            keys.written_key(self.dataset, version),
        ]
        if isinstance(self.client, redis.RedisCluster):
            if not _write_fenced(self.client, token, buckets):
                return "fence"
            script = self._script("write", _WRITE)
            return as_text(script(keys=head, args=[token, version, *progress]))
        calls = _write_calls(head, token, version, buckets, progress)
        outcomes = [as_text(o) for o in run_packed(self.client, calls)]
        return next((o for o in outcomes if o != "ok"), "ok")

    def seal(self, token: str, buckets: list[str]) -> int:
        """Seal every one of ``buckets`` still fenced with ``token`` (keys.FENCE_FIELD
        becomes ''): from then on no writer lands anything in them. How many are sealed:
        fewer than all when the version was failed or removed meanwhile."""
        script = self._script("seal", _SEAL)
        pipe = self.client.pipeline(transaction=False)
        if isinstance(self.client, redis.RedisCluster):  # each bucket on its own node
            for name in buckets:
                node = self.client.get_node_from_key(name)
                pipe.execute_command("EVAL", _SEAL, 1, name, token, target_nodes=node)
        else:
            for start in range(0, len(buckets), 1000):
                script(keys=buckets[start : start + 1000], args=[token], client=pipe)
        return sum(int(n) for n in pipe.execute())


def _write_fenced(cluster: redis.RedisCluster, token: str, buckets: Grouped) -> bool:
    """One pipeline of per-bucket fenced writes over a cluster's nodes: whether every
    bucket still held ``token``. redis-py's cluster pipeline has no script methods
    (it cannot load a script on the node that lacks it): the generic command sends
    EVAL, whose short script needs no loading, to the bucket's node (named, or the
    pipeline would ask a node for each command's keys first)."""
    pipe = cluster.pipeline(transaction=False)
    for name, mapping in buckets.mappings():
        args: list[Any] = [token]
        for key, payload in mapping.items():
            args += (key, payload)
        node = cluster.get_node_from_key(name)
        pipe.execute_command("EVAL", _WRITE_BUCKET, 1, name, *args, target_nodes=node)
    return all(int(o) for o in pipe.execute())


def _write_calls(
    head: list[str], token: str, version: str, buckets: Grouped, progress: tuple[str, int, int]
) -> Iterator[bytes]:
    """The fenced write script's calls of a batch (``head``: its lease, registry and
    progress keys), packed, the writer's progress with the last. EVAL, not EVALSHA: Redis
    keeps the script by its text, and a Redis restarted or flushed mid-batch cannot
    refuse one call of a batch whose others it ran."""
    pairs, row = buckets.pairs(), 0
    for first, end in _calls(buckets.counts):
        counts = buckets.counts[first:end]
        rows = sum(counts)
        last = end == len(buckets.counts)
        args = [token, version, *(progress if last else ("", 0, 0)), *counts]
        args += pairs[2 * row : 2 * (row + rows)]
        row += rows
        names = buckets.names[first:end]
        command = ("EVAL", _WRITE, len(head) + len(names), *head, *names, *args)
        yield hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub's 1-tuple


# A script call's share of a batch: Redis runs nothing else while it runs, so a call
# stops at this many buckets or once it holds this many rows (more only where one
# bucket holds more: a large batch puts many rows in each bucket, and fewer HSETs store
# them).
_BUCKETS_A_CALL = 256
_ROWS_A_CALL = 512


def _calls(counts: list[int]) -> Iterator[tuple[int, int]]:
    """The buckets (first, end) of each call, given each bucket's rows; one call at
    least (it carries the writer's progress)."""
    first, rows = 0, 0
    for i, count in enumerate(counts):
        rows += count
        if rows >= _ROWS_A_CALL or i + 1 - first >= _BUCKETS_A_CALL:
            yield first, i + 1
            first, rows = i + 1, 0
    if first < len(counts) or not counts:
        yield first, len(counts)


def new_token() -> str:
    """A writer's lease token: whoever does not hold it cannot renew, write or publish."""
    return secrets.token_hex(16)


def transition(registry: Registry, decide: Callable[[], Change]) -> Change:
    """Apply what ``decide`` works out from a fresh read, again until nothing it read
    changed in between; ``decide`` raises to refuse. A lost lease raises Conflict."""
    for _ in range(ATTEMPTS):
        change = decide()
        outcome = registry.apply(change)
        if outcome == "ok":
            return change
        if outcome == "lease":  # 'pointer', 'entry', 'deltas', 'canary': decide again
            raise Conflict("the writer's lease is no longer held by this writer")
    raise Conflict(f"the registry kept changing under {ATTEMPTS} attempts")
