"""What ``GET /v1/datasets`` and ``GET /v1/datasets/{name}`` say of each served dataset:
its declaration (kind, routes, key form, whether a miss is answered live) and, from the
store, its live version (model, rows, when published, age). Read from Redis at each
request (two small reads a dataset, never cached): whoever asks wants to know now."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from lookup.datasets import Served
from lookup.store import Resolved, StoreReader
from prescore.encoding import routing
from prescore.errors import StoreUnavailable

# a dataset's state when it has no live version; a store outage is a 503 instead
NOT_LIVE = ("not_published", "dataset_lost")


def describe(
    reader: StoreReader, spec: Served, live: bool, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """One dataset, as the metadata routes answer it (``live``: the lookup has a fallback)."""
    routes = [f"/v1/datasets/{spec.name}/{{key}}"]
    if spec.route:
        routes.append(f"/v1/{spec.route}/{{key}}")
    doc: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "routes": routes,
        "key": {
            "field": spec.shape.key_field,
            "parts": spec.key_form.parts,
            "contexts": spec.contexts,
        },
        "live_inference": live and spec.live,
        "max_age_s": spec.max_age_s,
    }
    try:
        resolved = reader.resolve(spec.name, fresh=True)
    except StoreUnavailable as exc:
        if exc.code not in NOT_LIVE:
            raise
        return {**doc, "status": exc.code, "version": None}
    info = reader.entry(spec.name, resolved.version)
    published = info.published_at if info is not None else ""
    return {
        **doc,
        "status": "published",
        "version": resolved.version,
        "model": resolved.model,
        "model_version": resolved.model_version,
        "rows": info.rows if info is not None else None,
        "published_at": published or None,
        "age_s": _age(published, now()),
        "canary": _canary(resolved),
    }


def _canary(resolved: Resolved) -> dict[str, Any] | None:
    """The canary served beside the live version (prescore.store.canaries), if one runs."""
    if resolved.canary is None:
        return None
    return {
        "version": resolved.canary.version,
        "model_version": resolved.canary.model_version,
        "percent": routing.percent_of(resolved.canary_share),
    }


def _age(iso: str, now: float) -> int | None:
    try:
        at = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return max(0, int(now - at.timestamp()))


def schema() -> dict[str, Any]:
    """The JSON schema of one dataset's description (the OpenAPI document's)."""
    text, maybe_text = {"type": "string"}, {"type": ["string", "null"]}
    maybe_int = {"type": ["integer", "null"]}
    return {
        "type": "object",
        "properties": {
            "name": text,
            "kind": text,
            "routes": {"type": "array", "items": text},
            "key": {
                "type": "object",
                "properties": {
                    "field": text,
                    "parts": {"type": "integer"},
                    "contexts": {"type": "boolean"},
                },
            },
            "live_inference": {"type": "boolean"},
            "max_age_s": {"type": ["number", "null"]},
            "status": {"enum": ["published", *NOT_LIVE]},
            "version": maybe_text,
            "model": text,
            "model_version": text,
            "rows": maybe_int,
            "published_at": maybe_text,
            "age_s": maybe_int,
            "canary": {
                "type": ["object", "null"],
                "description": "The version served to a share of keys beside the live one",
                "properties": {
                    "version": text,
                    "model_version": text,
                    "percent": {"type": "number"},
                },
            },
        },
        "required": ["name", "kind", "routes", "key", "live_inference", "status", "version"],
    }
