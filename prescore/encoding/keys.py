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
fence is there, checked by a script on the bucket's own node (prescore.store.transitions), and
it goes with the bucket when the version is failed or removed.

A key's text is what a client sends and what a bucket field holds. It is any UTF-8
string without control characters, 1 to MAX_KEY_BYTES bytes, compared as it is (no
Unicode normalization: the two spellings of "é" are two keys). A dataset whose key has
several columns, or that has contexts, joins the parts with ``|`` (a context is one more
part): there a part's ``\\`` and ``|`` are written ``\\\\`` and ``\\|`` (:class:`KeyForm`).
A key's text is percent-encoded where it becomes part of a Redis key's name
(:func:`key_name`), so no key can reach another's name, a bucket (``#``) or a cluster
hash tag (``{``).
"""

from __future__ import annotations

import functools
import numbers
import re
import secrets
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from prescore.errors import InvalidInput

PREFIX = "ps"
MAX_KEY_BYTES = 1024  # a key's text, or a context's, in UTF-8
SEPARATOR = "|"
ESCAPE = "\\"

# Control characters, and lone surrogates (a JSON "\ud800" is one; no UTF-8 holds it).
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
_BANNED = _CONTROL + "\\ud800-\\udfff"
_BANNED_RE = re.compile(f"[{_BANNED}]")


def _text(banned: str) -> str:
    return f"[^{banned}]+"


def _part(banned: str) -> str:
    """A part of a joined key, escapes and all."""
    return rf"(?:[^{banned}\\|]|\\[\\|])+"


def _joined(parts: int, banned: str) -> str:
    return _part(banned) + (re.escape(SEPARATOR) + _part(banned)) * (parts - 1)


_TEXT, _PART = _text(_BANNED), _part(_BANNED)
_ESCAPED_RE = re.compile(r"\\(.)")
_DATASET_RE = re.compile(r"[a-z][a-z0-9_-]{0,39}")  # as prescore.data.datasets declares them
VERSION_PATTERN = r"^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9a-f]{6}$"  # a version id (OpenAPI's too)
_VERSION_RE = re.compile(VERSION_PATTERN[1:-1])


def check_dataset(dataset: str) -> str:
    """Return ``dataset`` if it is a valid dataset name, else raise InvalidInput."""
    if not _DATASET_RE.fullmatch(dataset):
        raise InvalidInput(f"not a dataset name: {dataset!r}", code="unknown_dataset")
    return dataset


def check_text(raw: str, *, what: str = "key") -> str:
    """Return ``raw`` if it may be a key's text: not empty, no control character, at most
    MAX_KEY_BYTES bytes of UTF-8."""
    if not raw:
        raise InvalidInput(f"{what} is empty", code="invalid_id")
    if found := _BANNED_RE.search(raw):
        why = "a lone surrogate (no UTF-8 text)" if found[0] >= "\ud800" else "a control character"
        raise InvalidInput(f"{what} holds {why}", code="invalid_id")
    if len(raw) > MAX_KEY_BYTES // 4 and len(raw.encode()) > MAX_KEY_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_KEY_BYTES} bytes", code="invalid_id")
    return raw


def escape(part: str) -> str:
    """A part as a joined key writes it: ``\\`` and ``|`` escaped by a ``\\``."""
    if ESCAPE in part or SEPARATOR in part:
        return part.replace(ESCAPE, ESCAPE * 2).replace(SEPARATOR, ESCAPE + SEPARATOR)
    return part


def check_version(raw: str) -> str:
    """Return ``raw`` if it has the shape of a dataset version id."""
    if not _VERSION_RE.fullmatch(raw):
        raise InvalidInput(f"not a version id: {raw!r}", code="invalid_version")
    return raw


def entity_key(key: str, context: str | None = None) -> str:
    """The store key of an entity's key text, optionally in one context: ``key|context``
    (the context escaped: it is one more part)."""
    return key if not context else f"{key}{SEPARATOR}{escape(context)}"


def key_text(raw: object) -> str | None:
    """A key as a request body or a table gives it: a string as it is, an integer (not a
    bool) as its decimal digits, which is how the bulk job stores an integer key column;
    None for anything else."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
        return str(int(raw))
    return None


@dataclass(frozen=True)
class KeyForm:
    """How one dataset's keys are written: ``parts`` columns, and whether it has contexts.

    A single-column key of a dataset without contexts is its value as it is, ``|`` and
    ``\\`` included. Otherwise a key's text joins its parts by ``|``, each part escaped
    (:func:`escape`), so that no part and no context can run into the next.
    """

    parts: int = 1
    contexts: bool = False
    files: bool = False  # a key names a file (an images dataset's): :func:`check_file_name`

    @property
    def joined(self) -> bool:
        return self.parts > 1 or self.contexts

    def check(self, raw: str, *, what: str = "key") -> str:
        """Return ``raw`` if it is a key's text in this form, else raise InvalidInput."""
        check_text(raw, what=what)
        if self.joined and not _joined_re(self.parts).fullmatch(raw):
            raise InvalidInput(self._why(raw, what), code="invalid_id")
        if self.files:
            check_file_name(raw, what=what)
        return raw

    def _why(self, raw: str, what: str) -> str:
        how = "(a '|' or '\\' inside a part is written '\\|' or '\\\\')"
        if re.search(r"\\(?![\\|])", raw):
            return f"{what} has a '\\' that escapes neither '\\' nor '|' {how}"
        got = len(re.findall(_PART, raw))
        if self.parts == 1:
            return f"{what} is one part; a '|' inside it is written '\\|' {how}"
        return f"{what} is {self.parts} parts joined by '|'; got {got} {how}"

    def check_given(self, raw: object, *, what: str = "key") -> str:
        """:meth:`check` of a key as a request body or a table gives it (:func:`key_text`):
        every reader of keys takes and refuses the same ones."""
        text = key_text(raw)
        if text is None:
            raise InvalidInput(f"{what} must be a string or an integer", code="invalid_id")
        return self.check(text, what=what)

    def of_values(self, values: Sequence[object], *, what: str = "key") -> str:
        """The key text of one row's key column values (strings or integers)."""
        texts = [key_text(v) for v in values]
        parts = [t for t in texts if t is not None]
        if len(parts) != self.parts:
            raise InvalidInput(f"{what} must be strings or integers", code="invalid_id")
        if not self.joined:
            return check_text(parts[0], what=what)
        return self.check(SEPARATOR.join(map(escape, parts)), what=what)

    def split(self, key: str) -> list[str]:
        """The parts' values of a checked key text (:meth:`check`)."""
        if not self.joined:
            return [key]
        return [_ESCAPED_RE.sub(r"\1", p) for p in re.findall(_PART, key)]

    def schema(self, banned: str = "") -> dict[str, object]:
        """The JSON Schema of a key's text in this form (its byte bound is in UTF-8,
        so maxLength, in characters, is an upper bound only); ``banned``: characters
        refused besides (a regex class's text, as a URL refuses U+FFFD)."""
        # no surrogate range: JSON Schema's regexes are of Unicode text, which holds none
        refused = _CONTROL + banned
        key = _joined(self.parts, refused) if self.joined else _text(refused)
        if self.files:
            key = f"[^{refused}./_][^{refused}/]*"
        longest = MAX_FILE_KEY_BYTES if self.files else MAX_KEY_BYTES
        return {"type": "string", "minLength": 1, "maxLength": longest, "pattern": f"^{key}$"}

    def all_valid(self, raws: list[str]) -> bool:
        """Whether :meth:`check` accepts every one of ``raws`` (one regex over them all: a
        batch's check; check each key to learn which one fails and why)."""
        try:
            lines = "\n".join(raws)
        except TypeError:  # not all of them str
            return False
        if not raws or lines.count("\n") != len(raws) - 1:  # a key of its own holds a newline
            return False
        if _lines_re(self.parts, self.joined).fullmatch(lines) is None:
            return False
        if self.files and not all(
            _FILE_NAME_RE.fullmatch(r) and len(r.encode()) <= MAX_FILE_KEY_BYTES for r in raws
        ):
            return False
        if max(map(len, raws)) <= MAX_KEY_BYTES // 4:  # short enough in any UTF-8
            return True
        return all(len(r.encode()) <= MAX_KEY_BYTES for r in raws)


@functools.lru_cache(maxsize=16)
def _joined_re(parts: int) -> re.Pattern[str]:
    return re.compile(_joined(parts, _BANNED))


@functools.lru_cache(maxsize=16)
def _lines_re(parts: int, joined: bool) -> re.Pattern[str]:
    """Keys of one form, one a line (no key holds a newline: it is a control character)."""
    key = _joined_re(parts).pattern if joined else _TEXT
    return re.compile(f"{key}(?:\n{key})*")


CONTEXT_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_KEY_BYTES,
    "pattern": f"^{_text(_CONTROL)}$",
}


MAX_FILE_KEY_BYTES = 240  # a file name's 255 bytes, less the longest extension's
_FILE_NAME_RE = re.compile(r"[^./_][^/]*")


def check_file_name(key: str, *, what: str = "key") -> str:
    """Return ``key`` if it can name a file ``<key>.<ext>`` in a folder (an images
    dataset's key): no ``/`` (it would reach out of the folder), not starting with ``.``
    or ``_`` (a file Hadoop's listing hides, which the bulk job never scores), short
    enough for a file name."""
    if not _FILE_NAME_RE.fullmatch(key):
        raise InvalidInput(f"{what} holds a '/' or starts with '.' or '_'", code="invalid_id")
    if len(key) > MAX_FILE_KEY_BYTES // 4 and len(key.encode()) > MAX_FILE_KEY_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_FILE_KEY_BYTES} bytes", code="invalid_id")
    return key


def check_context(raw: str) -> str:
    """Return ``raw`` if it may be a context's value (any text a key part may be)."""
    return check_text(raw, what="context")


def key_name(key: str) -> str:
    """A key's text where it is part of a Redis key's name: percent-encoded but for
    letters, digits, ``_.-~`` and ``|`` (so the ids and ``id|context`` keys of before are
    their own names). No name then holds a cluster hash tag's brace, a ``:`` or a
    bucket's ``#``, and two keys never share one."""
    return quote(key, safe=SEPARATOR)


def value_key(dataset: str, version: str, key: str) -> str:
    return version_prefix(dataset, version) + key_name(key)


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
    """Hash bucket ``bucket`` of a version (no key's name holds a '#': none collides)."""
    return f"{version_prefix(dataset, version)}#{bucket}"


def bucket_keys(dataset: str, version: str, buckets: int, entity_keys: Iterable[str]) -> list[str]:
    """The bucket key of each of ``entity_keys``: bucket_key(.., bucket_of(key, buckets))
    in one pass (a batch read's: bucket_of's CRC inline, a call a key saved; a golden
    test holds the two equal)."""
    head, crc = version_prefix(dataset, version) + "#", zlib.crc32
    return [f"{head}{crc(k.encode()) % buckets}" for k in entity_keys]


def bucket_indices(entity_keys: Iterable[str], buckets: int) -> list[int]:
    """bucket_of each of ``entity_keys``, in one pass (a bulk write's)."""
    crc = zlib.crc32
    return [crc(k.encode()) % buckets for k in entity_keys]


def bucket_names(dataset: str, version: str, numbers: Iterable[int]) -> list[str]:
    """bucket_key of each bucket number, in one pass (a bulk write's)."""
    head = version_prefix(dataset, version) + "#"
    return [f"{head}{n}" for n in numbers]


def frames_key(dataset: str, version: str) -> str:
    """The frames of a version's compact payloads (prescore.encoding.compact)."""
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
    """The progress of ``version`` being written, a field per writer: its keys written
    so far, and (under ``FIELD/units``) the units its model scored for them."""
    return f"{PREFIX}:{{{dataset}}}:written:{version}"


def miss_log_key(dataset: str) -> str:
    """The miss log: key -> times it missed (bounded)."""
    return f"{PREFIX}:{{{dataset}}}:misses"


def miss_seen_key(dataset: str) -> str:
    """The miss log: key -> when it last missed (bounded)."""
    return f"{PREFIX}:{{{dataset}}}:misses:seen"


def flight_key(dataset: str, version: str, key: str) -> str:
    """The lease of the one live call for a missing key (lookup.live.singleflight)."""
    return f"{PREFIX}:{dataset}:flight:{version}:{key_name(key)}"


def flight_outcome_key(dataset: str, version: str, key: str, token: str) -> str:
    """The outcome of the live call under the lease holding ``token``."""
    return f"{flight_key(dataset, version, key)}:{token}"


def negative_key(dataset: str, version: str, key: str) -> str:
    """Set when live inference had no answer for a key (remembered briefly)."""
    return f"{PREFIX}:{dataset}:neg:{version}:{key_name(key)}"


def live_counter_key(dataset: str, version: str) -> str:
    """Counts the live write-backs of one version (bounded by PRESCORE_LIVE_MAX_KEYS)."""
    return f"{PREFIX}:{{{dataset}}}:live:{version}"


def pointer_key(dataset: str) -> str:
    return f"{PREFIX}:{{{dataset}}}:current"


def registry_key(dataset: str) -> str:
    return f"{PREFIX}:{{{dataset}}}:versions"


def deltas_key(dataset: str) -> str:
    """The live version's deltas: its id, then theirs, newest first (prescore.store.deltas)."""
    return f"{PREFIX}:{{{dataset}}}:deltas"


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


def canary_key(dataset: str) -> str:
    """The canary beside the live version: its id, the candidate's, the candidate's share
    (prescore.store.canaries)."""
    return f"{PREFIX}:{{{dataset}}}:canary"
