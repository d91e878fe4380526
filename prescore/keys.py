"""Redis key layout (no I/O). Golden tests pin these exact bytes.

Value keys spread over the cluster; the control keys of one dataset (pointer and
registry) share a hash tag ``{dataset}`` so that publish and rollback switch them in one
MULTI/EXEC transaction, on a single Redis and on Redis Cluster alike.

    ps:{dataset}:current            -> version id that readers use
    ps:{dataset}:versions           -> hash: version id -> VersionInfo JSON
    ps:{dataset}:lease:{version}    -> token:deadline of the version's writer (no TTL)
    ps:{dataset}:owned              -> hash: version -> buckets, every version that may
                                       hold keys, until gc has removed them
    ps:{dataset}:written:{version}  -> hash: writer -> keys it has written so far
    ps:{dataset}:live:{version}     -> live write-backs under the version (bounded)
    ps:{dataset}:misses             -> zset: key -> misses; ...:misses:seen -> last miss
    ps:dataset:flight:{version}:{key} -> one live call's lease: its token (short)
    ps:dataset:flight:{version}:{key}:{token} -> that call's outcome (short)
    ps:dataset:neg:{version}:{key}    -> live inference had no answer for the key (short)
    ps:{dataset}:frames:{version}   -> hash: frame id -> the text compact payloads share
    ps:{dataset}:wb:{version}:{w}   -> set: write-back keys made in TTL window w (bounded)
    ps:dataset:{version}:#{n}       -> hash bucket n of the version: key -> payload, and
                                       field '' -> its writer's fence (FENCE_FIELD)
    ps:dataset:{version}:{key}      -> one live write-back: payload JSON (with a TTL)

A version's precomputed payloads live in ``buckets`` hashes (the count is fixed when the
version is begun and kept in its registry entry), a key in bucket ``crc32(key) % buckets``:
small hashes are stored by Redis as listpacks, a fraction of the memory of one key each,
and a version's keys are then known without a SCAN (its buckets, its write-back set).
A version registered with ``buckets`` 0 (written before buckets) has a plain key per key.
Each bucket is made when its version begins, holding its writer's token in the field
``''`` (no key is empty): a cluster's writer lands a batch in a bucket only while that
fence is there, checked by a script on the bucket's own node (prescore.transitions), and
it goes with the bucket when the version is failed or removed.

A key is an entity id, several key columns' values joined by ``|``, optionally followed
by ``|context``; every part is a plain id token (:func:`check_id`).
"""

from __future__ import annotations

import functools
import numbers
import re
import secrets
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from prescore.errors import InvalidInput

PREFIX = "ps"
MAX_ID_LENGTH = 128
CONTEXT_SEPARATOR = "|"

# Ids are plain tokens: no glob characters (SCAN patterns), no whitespace, no braces
# (cluster hash tags), so a key can never collide with or match another dataset's.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_DATASET_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # as prescore.datasets declares them
_VERSION_RE = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}")


def check_dataset(dataset: str) -> str:
    """Return ``dataset`` if it is a valid dataset name, else raise InvalidInput."""
    if not _DATASET_RE.fullmatch(dataset):
        raise InvalidInput(f"not a dataset name: {dataset!r}", code="unknown_dataset")
    return dataset


def check_id(raw: str, *, what: str = "id") -> str:
    """Return ``raw`` if it is a valid entity id (user, item, image, context)."""
    if not raw:
        raise InvalidInput(f"{what} is empty", code="invalid_id")
    if len(raw) > MAX_ID_LENGTH:
        raise InvalidInput(f"{what} is longer than {MAX_ID_LENGTH} characters", code="invalid_id")
    if not _ID_RE.fullmatch(raw):
        raise InvalidInput(
            f"{what} may hold only letters, digits, '_', '.', '-' and must start "
            "with a letter or digit",
            code="invalid_id",
        )
    return raw


def check_version(raw: str) -> str:
    """Return ``raw`` if it has the shape of a dataset version id."""
    if not _VERSION_RE.fullmatch(raw):
        raise InvalidInput(f"not a version id: {raw!r}", code="invalid_version")
    return raw


def entity_key(key: str, context: str | None = None) -> str:
    """The store key of an entity, optionally in one context: ``key|context``."""
    return key if not context else f"{key}{CONTEXT_SEPARATOR}{context}"


def key_text(raw: object) -> str | None:
    """A key as a request body or a table gives it: a string as it is, an integer (not a
    bool) as its decimal digits, which is how the bulk job stores an integer key column;
    None for anything else."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
        return str(int(raw))
    return None


def check_given_key(raw: object, parts: int = 1, *, what: str = "key") -> str:
    """:func:`check_key` of a key as given (:func:`key_text`): every reader of keys from a
    request body or a table, so all of them take and refuse the same ones."""
    text = key_text(raw)
    if text is None:
        raise InvalidInput(f"{what} must be a string or an integer", code="invalid_id")
    return check_key(text, parts, what=what)


def check_key(raw: str, parts: int = 1, *, what: str = "key") -> str:
    """Return ``raw`` if it is ``parts`` valid ids joined by ``|`` (a composite key)."""
    pieces = raw.split(CONTEXT_SEPARATOR) if parts > 1 else [raw]
    if len(pieces) != parts:
        raise InvalidInput(
            f"{what} is {parts} ids joined by '|'; got {len(pieces)}", code="invalid_id"
        )
    for piece in pieces:
        check_id(piece, what=what)
    return raw


@functools.lru_cache(maxsize=8)
def _keys_re(parts: int) -> re.Pattern[str]:
    """Keys of ``parts`` ids, one a line: what check_key accepts, for many at once."""
    one = f"[A-Za-z0-9][A-Za-z0-9_.\\-]{{0,{MAX_ID_LENGTH - 1}}}"
    key = one + (re.escape(CONTEXT_SEPARATOR) + one) * (parts - 1)
    return re.compile(f"{key}(?:\n{key})*")


def all_valid(raws: list[str], parts: int = 1) -> bool:
    """Whether check_key accepts every one of ``raws`` (one regex over them all: a batch's
    check; check each key to learn which one fails and why)."""
    try:
        lines = "\n".join(raws)
    except TypeError:  # not all of them str
        return False
    if not raws or lines.count("\n") != len(raws) - 1:  # a key of its own holds a newline
        return False
    return _keys_re(parts).fullmatch(lines) is not None


def value_key(dataset: str, version: str, key: str) -> str:
    return version_prefix(dataset, version) + key


def version_prefix(dataset: str, version: str) -> str:
    """Prefix of every value key of one version (its buckets and its write-backs)."""
    return f"{PREFIX}:{dataset}:{version}:"


FENCE_FIELD = ""  # a bucket's field holding its writer's token: no key is empty
BUCKET_TARGET = 64  # keys per bucket: under Redis' listpack bound (128 entries) with margin


def bucket_count(expected_keys: int) -> int:
    """Buckets for a version of about ``expected_keys`` keys."""
    return max(1, -(-expected_keys // BUCKET_TARGET))


def bucket_of(key: str, buckets: int) -> int:
    """The bucket of ``key`` among ``buckets`` (CRC-32: the same in every process)."""
    return zlib.crc32(key.encode()) % buckets


def bucket_key(dataset: str, version: str, bucket: int) -> str:
    """Hash bucket ``bucket`` of a version ('#' never starts an id: no key collides)."""
    return f"{version_prefix(dataset, version)}#{bucket}"


def bucket_keys(dataset: str, version: str, buckets: int, entity_keys: Iterable[str]) -> list[str]:
    """The bucket key of each of ``entity_keys``: bucket_key(.., bucket_of(key, buckets))
    in one pass (a batch read's: bucket_of's CRC inline, a call a key saved; a golden
    test holds the two equal)."""
    head, crc = version_prefix(dataset, version) + "#", zlib.crc32
    return [f"{head}{crc(k.encode()) % buckets}" for k in entity_keys]


def frames_key(dataset: str, version: str) -> str:
    """The frames of a version's compact payloads (prescore.compact)."""
    return f"{PREFIX}:{{{dataset}}}:frames:{version}"


def write_backs_key(dataset: str, version: str, window: int) -> str:
    """The set of a version's live write-back keys made in one TTL window (``window`` =
    seconds since the epoch // the TTL), so that retiring the version finds them."""
    return f"{PREFIX}:{{{dataset}}}:wb:{version}:{window}"


def lease_key(dataset: str, version: str) -> str:
    """Held (with an expiry) while a writer of ``version`` is alive: its heartbeat."""
    return f"{PREFIX}:{{{dataset}}}:lease:{version}"


def owned_key(dataset: str) -> str:
    """Every version that may hold keys (its bucket count), kept past the registry's
    history until gc has removed them: no version's keys are ever beyond finding."""
    return f"{PREFIX}:{{{dataset}}}:owned"


def written_key(dataset: str, version: str) -> str:
    """Counts the keys written so far under ``version``, a field per writer."""
    return f"{PREFIX}:{{{dataset}}}:written:{version}"


def miss_log_key(dataset: str) -> str:
    """The miss log: key -> times it missed (bounded)."""
    return f"{PREFIX}:{{{dataset}}}:misses"


def miss_seen_key(dataset: str) -> str:
    """The miss log: key -> when it last missed (bounded)."""
    return f"{PREFIX}:{{{dataset}}}:misses:seen"


def flight_key(dataset: str, version: str, key: str) -> str:
    """The lease of the one live call for a missing key (lookup.singleflight)."""
    return f"{PREFIX}:{dataset}:flight:{version}:{key}"


def flight_outcome_key(dataset: str, version: str, key: str, token: str) -> str:
    """The outcome of the live call under the lease holding ``token``."""
    return f"{flight_key(dataset, version, key)}:{token}"


def negative_key(dataset: str, version: str, key: str) -> str:
    """Set when live inference had no answer for a key (remembered briefly)."""
    return f"{PREFIX}:{dataset}:neg:{version}:{key}"


def live_counter_key(dataset: str, version: str) -> str:
    """Counts the live write-backs of one version (bounded by PRESCORE_LIVE_MAX_KEYS)."""
    return f"{PREFIX}:{{{dataset}}}:live:{version}"


def pointer_key(dataset: str) -> str:
    return f"{PREFIX}:{{{dataset}}}:current"


def registry_key(dataset: str) -> str:
    return f"{PREFIX}:{{{dataset}}}:versions"


def new_version_id(
    now: datetime | None = None, token: str | None = None, after: str | None = None
) -> str:
    """A sortable, unique dataset version id such as ``20261124T115301.042Z-3f9a0c``.

    With ``after`` (the newest id so far), the id sorts after it even when both are made
    in the same millisecond: "newest" must mean "made last" for rollback and retiring.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if after is not None:
        floor = datetime.strptime(after[:19], "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
        now = max(now, floor + timedelta(milliseconds=1))
    token = token or secrets.token_hex(3)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{token}"
