"""Response bodies as bytes. A hit that needs no cutting is spliced, never decoded."""

from __future__ import annotations

import json
from typing import Any

from lookup.datasets import Served
from lookup.params import Shape
from lookup.store import Resolved
from prescore.encoding.codec import dumps, envelope, opening, stored_source


def cut(payload: bytes, spec: Served, shape: Shape) -> bytes:
    """The payload with its list cut to ``shape``; decodes only when something is cut."""
    if shape.min_score is None and (
        shape.limit is None
        or (spec.counts_entries and payload.count(spec.shape.entry_marker) <= shape.limit)
    ):
        return payload
    doc = json.loads(payload)
    entries = doc.get(spec.shape.list_field)
    if not isinstance(entries, list):
        return payload
    if shape.min_score is not None:
        floor = shape.min_score
        entries = [e for e in entries if _score(e) >= floor]
    if shape.limit is not None:
        entries = entries[: shape.limit]
    doc[spec.shape.list_field] = entries
    return dumps(doc)


def _score(entry: Any) -> float:
    score = entry.get("score") if isinstance(entry, dict) else None
    return float(score) if isinstance(score, int | float) else float("-inf")


def hit(
    payload: bytes,
    spec: Served,
    shape: Shape,
    resolved: Resolved,
    source: str | None = None,
    fell_back: bool = False,
    age: int | None = None,
    stale: bool = False,
    key: str | None = None,
) -> bytes:
    """One served payload: ``source`` (default: as stored), dataset_version and its
    ``age_s`` in front; ``fell_back``: a context was asked for, and only the plain key's
    entry exists; ``stale``: older than its dataset's max age. A compact payload (stored
    under ``key``) is decoded straight into the answer, cut to ``shape.limit``."""
    fields = _fields(age, stale, fell_back)
    if payload[:1] != b"{":  # compact (precomputed): one join builds the whole answer
        if key is None:
            raise ValueError("a compact payload is decoded with the key it is stored under")
        if shape.min_score is None:
            head = opening(source or "precomputed", resolved.version) + fields
            return resolved.decode(payload, key, head, shape.limit)
        payload = resolved.decode(payload, key)
    return envelope(
        cut(payload, spec, shape),
        dataset_version=resolved.version,
        source=source or stored_source(payload),
        fields=fields,
    )


def _fields(age: int | None, stale: bool, fell_back: bool) -> bytes:
    """An answer's own fields, as JSON spliced in after its source and version."""
    fields = b"" if age is None else b'"age_s":%d,' % age
    if stale:
        fields += b'"stale":true,'
    if fell_back:
        fields += b'"context_fallback":true,'
    return fields


def opening_of(resolved: Resolved, source: str, age: int | None) -> bytes:
    """What an answer from ``source`` opens with, when it is neither stale nor fell back."""
    return opening(source, resolved.version) + _fields(age, False, False)


def _miss_message(spec: Served, key: str, context: str | None) -> str:
    where = f" in context {context!r}" if context else ""
    return f"no entry of {spec.name} for {spec.shape.key_field} {key!r}{where}"


def miss(spec: Served, key: str, context: str | None, resolved: Resolved) -> bytes:
    """The 404 body of a single lookup that missed."""
    return dumps(
        {
            "error": "not_found",
            "message": _miss_message(spec, key, context),
            "dataset": spec.name,
            spec.shape.key_field: key,
            "dataset_version": resolved.version,
            "model_version": resolved.model_version,
        }
    )


def miss_item(spec: Served, key: str, context: str | None) -> bytes:
    """One not-found entry of a batch answer."""
    return dumps(
        {
            spec.shape.key_field: key,
            "error": "not_found",
            "message": _miss_message(spec, key, context),
        }
    )


def error_item(spec: Served, key: str, code: str, message: str) -> bytes:
    """One entry of a batch answer for a key that could not be answered (e.g. live
    inference unavailable): the key and a stable error code."""
    return dumps({spec.shape.key_field: key, "error": code, "message": message})


def batch(
    spec: Served, resolved: Resolved, parts: list[bytes], found: int, canary: str | None = None
) -> bytes:
    """A batch answer: one dataset_version (and the ``canary`` version that answered some
    of its keys: each entry says which version answered it), then the per-key results
    in request order."""
    head: dict[str, object] = {
        "dataset": spec.name,
        "dataset_version": resolved.version,
        "model_version": resolved.model_version,
        "found": found,
        "missing": len(parts) - found,
    }
    if canary is not None:
        head["canary_version"] = canary
    return dumps(head)[:-1] + b',"results":[' + b",".join(parts) + b"]}"
