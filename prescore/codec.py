"""Payload codec (no I/O). Golden tests pin these exact bytes.

Payloads are compact JSON, stored ready to serve: the lookup answers a hit by splicing
the per-request fields (``source``, ``dataset_version``) in front of the stored bytes,
without decoding them. Never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("body is not valid JSON", code="malformed_json") from exc


def encode_recommendations(
    user_id: str,
    items: Iterable[tuple[str, float]],
    *,
    model: str,
    model_version: str,
    scored_at: str,
    context: str | None = None,
    source: str | None = None,
) -> bytes:
    """One user's top-K ``(hotel_id, score)`` pairs, best first, as payload bytes."""
    doc: dict[str, Any] = {"user_id": user_id}
    if context:
        doc["context"] = context
    doc["items"] = [{"hotel_id": h, "score": round(float(s), SCORE_DECIMALS)} for h, s in items]
    doc.update(model=model, model_version=model_version, scored_at=scored_at)
    if source:
        doc["source"] = source
    return dumps(doc)


def encode_tags(
    image_id: str,
    tags: Iterable[tuple[str, float]],
    *,
    model: str,
    model_version: str,
    scored_at: str,
    source: str | None = None,
) -> bytes:
    """One image's ``(tag, score)`` pairs above threshold, best first, as payload bytes."""
    doc: dict[str, Any] = {
        "image_id": image_id,
        "tags": [{"tag": t, "score": round(float(s), SCORE_DECIMALS)} for t, s in tags],
        "model": model,
        "model_version": model_version,
        "scored_at": scored_at,
    }
    if source:
        doc["source"] = source
    return dumps(doc)


def envelope(payload: bytes, *, dataset_version: str, source: str = "precomputed") -> bytes:
    """Serve stored payload bytes with the per-request fields spliced in front."""
    if payload[:1] != b"{":
        raise ValueError("payload is not a JSON object")
    if b'"source":' in payload:  # live write-back already says where it came from
        head = b'{"dataset_version":' + dumps(dataset_version) + b","
    else:
        head = (
            b'{"source":' + dumps(source) + b',"dataset_version":' + dumps(dataset_version) + b","
        )
    return head + payload[1:]


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
    started_at: str = ""
    finished_at: str = ""
    published_at: str = ""
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> VersionInfo:
        doc = json.loads(raw)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def replace(self, **changes: Any) -> VersionInfo:
        return VersionInfo(**{**asdict(self), **changes})


def sort_versions(infos: Sequence[VersionInfo]) -> list[VersionInfo]:
    """Newest first (version ids sort by their UTC timestamp)."""
    return sorted(infos, key=lambda i: i.version, reverse=True)
