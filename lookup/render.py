"""Response bodies as bytes. A hit that needs no cutting is spliced, never decoded."""

from __future__ import annotations

import json
from typing import Any

from lookup.datasets import DatasetSpec
from lookup.params import Shape
from lookup.store import Resolved
from prescore.codec import dumps, envelope


def cut(payload: bytes, spec: DatasetSpec, shape: Shape) -> bytes:
    """The payload with its list cut to ``shape``; decodes only when something is cut."""
    if shape.min_score is None and (
        shape.limit is None or payload.count(spec.entry_marker) <= shape.limit
    ):
        return payload
    doc = json.loads(payload)
    entries = doc.get(spec.list_field)
    if not isinstance(entries, list):
        return payload
    if shape.min_score is not None:
        floor = shape.min_score
        entries = [e for e in entries if _score(e) >= floor]
    if shape.limit is not None:
        entries = entries[: shape.limit]
    doc[spec.list_field] = entries
    return dumps(doc)


def _score(entry: Any) -> float:
    score = entry.get("score") if isinstance(entry, dict) else None
    return float(score) if isinstance(score, int | float) else float("-inf")


def hit(payload: bytes, spec: DatasetSpec, shape: Shape, resolved: Resolved) -> bytes:
    """One served payload: source and dataset_version spliced in front of the stored bytes."""
    return envelope(cut(payload, spec, shape), dataset_version=resolved.version)


def _miss_message(spec: DatasetSpec, entity_id: str, context: str | None) -> str:
    where = f" in context {context!r}" if context else ""
    return f"no {spec.noun} for {spec.id_field} {entity_id!r}{where}"


def miss(spec: DatasetSpec, entity_id: str, context: str | None, resolved: Resolved) -> bytes:
    """The 404 body of a single lookup that missed."""
    return dumps(
        {
            "error": "not_found",
            "message": _miss_message(spec, entity_id, context),
            "dataset": spec.name,
            spec.id_field: entity_id,
            "dataset_version": resolved.version,
            "model_version": resolved.model_version,
        }
    )


def miss_item(spec: DatasetSpec, entity_id: str, context: str | None) -> bytes:
    """One not-found entry of a batch answer."""
    return dumps(
        {
            spec.id_field: entity_id,
            "error": "not_found",
            "message": _miss_message(spec, entity_id, context),
        }
    )


def error_item(spec: DatasetSpec, entity_id: str, code: str, message: str) -> bytes:
    """One entry of a batch answer for an id that could not be answered (e.g. live
    inference unavailable): the id and a stable error code."""
    return dumps({spec.id_field: entity_id, "error": code, "message": message})


def batch(spec: DatasetSpec, resolved: Resolved, parts: list[bytes], found: int) -> bytes:
    """A batch answer: one dataset_version, then the per-id results in request order."""
    head = dumps(
        {
            "dataset": spec.name,
            "dataset_version": resolved.version,
            "model_version": resolved.model_version,
            "found": found,
            "missing": len(parts) - found,
        }
    )
    return head[:-1] + b',"results":[' + b",".join(parts) + b"]}"
