"""Payload codec (no I/O). Golden tests pin these exact bytes.

Payloads are compact JSON, stored ready to serve: the lookup answers a hit by splicing
the per-request fields (``source``, ``dataset_version``) in front of the stored bytes,
without decoding them. Never pickle.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prescore.errors import InvalidInput

SCORE_DECIMALS = 4
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


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
