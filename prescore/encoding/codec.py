"""Payload codec (no I/O). Golden tests pin these exact bytes.

Payloads are compact JSON, stored ready to serve: the lookup answers a hit by splicing
the per-request fields (``source``, ``dataset_version``) in front of the stored bytes,
without decoding them. Never pickle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from prescore.errors import InvalidInput

SCORE_DECIMALS = 4
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def utcnow_iso() -> str:
    """Now, as a registry entry's timestamps read (UTC, to the second)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(obj: Any) -> bytes:
    """Compact, UTF-8 JSON bytes."""
    return _dumps(obj).encode("utf-8")


def loads(raw: bytes | str) -> Any:
    """Parse JSON, turning malformed input into InvalidInput."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deep: not ours
        raise InvalidInput("body is not valid JSON", code="malformed_json") from exc


@dataclass(frozen=True)
class PayloadShape:
    """The field names of one dataset's payloads (from its declaration).

    ``{key_field: key, "context"?: ..., list_field: [{entry_field: name, ...extras,
    "score": s}, ...], "model", "model_version", "scored_at", "source"?}``: a ranking's
    entries are items (entry_field is the item key column), a labels dataset's are labels.
    """

    key_field: str = "key"
    list_field: str = "items"
    entry_field: str = "id"

    @property
    def entry_marker(self) -> bytes:
        """Bytes that open every list entry once: counting them counts entries without
        decoding (a JSON string cannot hold them: its quotes would be escaped)."""
        return b'{"' + self.entry_field.encode() + b'":'


def encode_payload(
    shape: PayloadShape,
    key: str,
    entries: Iterable[tuple[str, float]],
    *,
    model: str,
    model_version: str,
    scored_at: str,
    context: str | None = None,
    source: str | None = None,
    extras: Sequence[Mapping[str, Any]] | None = None,
) -> bytes:
    """One key's ``(entry, score)`` pairs, best first, as payload bytes; ``extras`` holds
    each entry's further fields (a ranking's item payload columns), in entry order."""
    doc: dict[str, Any] = {shape.key_field: key}
    if context:
        doc["context"] = context
    rows = []
    for i, (name, score) in enumerate(entries):
        entry: dict[str, Any] = {shape.entry_field: name}
        if extras is not None:
            entry.update(extras[i])
        entry["score"] = round(float(score), SCORE_DECIMALS)
        rows.append(entry)
    doc[shape.list_field] = rows
    doc.update(model=model, model_version=model_version, scored_at=scored_at)
    if source:
        doc["source"] = source
    return dumps(doc)


LIVE_TAIL = b',"source":"live"}'  # how a live answer written back ends (encode_payload)


def stored_source(payload: bytes) -> str:
    """Where a payload read from the store came from: a bulk run, or a live write-back."""
    return "written_back" if payload.endswith(LIVE_TAIL) else "precomputed"


def envelope(
    payload: bytes,
    *,
    dataset_version: str,
    source: str = "precomputed",
    fields: bytes = b"",
) -> bytes:
    """Serve payload bytes with the per-request fields spliced in front, without decoding:
    ``source`` (precomputed, live or written_back), ``dataset_version``, then ``fields``
    (encoded ``"name":value,`` pairs, e.g. ``"age_s":12,``)."""
    if payload[:1] != b"{":
        raise ValueError("payload is not a JSON object")
    if payload.endswith(LIVE_TAIL):  # the answer says its source once, in front
        payload = payload[: -len(LIVE_TAIL)] + b"}"
    return opening(source, dataset_version) + fields + payload[1:]


@functools.lru_cache(maxsize=64)
def opening(source: str, dataset_version: str) -> bytes:
    """The fields an answer starts with (a few sources, a few live versions: cached)."""
    return b'{"source":' + dumps(source) + b',"dataset_version":' + dumps(dataset_version) + b","


def truncate(payload: bytes, field_name: str, limit: int) -> bytes:
    """Payload with its list ``field_name`` cut to ``limit`` entries (decodes only if needed)."""
    doc = json.loads(payload)
    entries = doc.get(field_name)
    if not isinstance(entries, list) or len(entries) <= limit:
        return payload
    doc[field_name] = entries[:limit]
    return dumps(doc)


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a dataset's version registry."""

    version: str
    status: str  # writing | published | retired | failed | rolled_back
    model: str = ""
    model_version: str = ""
    rows: int = 0
    buckets: int = 0  # its keys' hash buckets (prescore.encoding.keys); 0: a plain key per key
    started_at: str = ""
    finished_at: str = ""
    published_at: str = ""
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # field by field, not asdict: its deep copy of ``extra`` (a version's key sample)
        # is most of a delta's registry writes
        return dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> VersionInfo:
        # orjson: a publish reads entries many times, each with its version's key sample
        # (it reads an integer past 64 bits as a float; no entry holds one)
        doc = orjson.loads(raw)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def replace(self, **changes: Any) -> VersionInfo:
        """A copy with ``changes`` (``extra`` shared, not copied: nothing changes one)."""
        return dataclasses.replace(self, **changes)


def sort_versions(infos: Sequence[VersionInfo]) -> list[VersionInfo]:
    """Newest first (version ids sort by their UTC timestamp)."""
    return sorted(infos, key=lambda i: i.version, reverse=True)
