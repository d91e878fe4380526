"""The OpenAPI 3.1 document of the lookup API, generated from the declared datasets.

Each dataset gets its own paths (``/v1/datasets/{name}/{key}``, its ``:batchGet``, its
declared route, ``:predict`` with live inference) and payload schema with its own field
names, so a client generated from the document knows each answer's shape. The bounds the
server enforces (k, min_score, batch size, key syntax) are in the schemas.
"""

from __future__ import annotations

from typing import Any

from lookup import metadata
from lookup.datasets import Served, ServedDatasets
from lookup.params import CANARY_HEADER, MAX_ABS_SCORE
from lookup.settings import LookupSettings
from prescore.encoding.keys import CONTEXT_SCHEMA, VERSION_PATTERN

ERROR_CODES = [
    "invalid_id",
    "invalid_k",
    "invalid_limit",
    "invalid_min_score",
    "invalid_version",
    "invalid_header",
    "version_not_served",
    "invalid_body",
    "invalid_ids",
    "invalid_features",
    "malformed_json",
    "bad_request",
    "not_found",
    "not_published",
    "dataset_lost",
    "no_route",
    "unknown_dataset",
    "method_not_allowed",
    "too_large",
    "too_many_ids",
    "unsupported_media_type",
    "store_unavailable",
    "fallback_unavailable",
    "fallback_timeout",
    "unscorable_input",
    "not_ready",
    "too_busy",
    "internal",
]
_STATUS_TEXT = {
    400: "Bad input (invalid_id, invalid_k, invalid_limit, invalid_min_score, invalid_body, "
    "invalid_ids, invalid_features, malformed_json, invalid_version, invalid_header)",
    404: "Not found (not_found), no such route (no_route, unknown_dataset), or the version "
    "asked for is neither the live one nor its canary's (version_not_served)",
    405: "Method not allowed (method_not_allowed)",
    413: "Body or batch too large (too_large, too_many_ids)",
    415: "Content-Type is not application/json (unsupported_media_type)",
    503: "The store is unreachable or slow (store_unavailable), lost a dataset it had "
    "published (dataset_lost: republish it), or the dataset is not published yet "
    "(not_published), too many requests are sending their bodies (too_busy); on a miss, "
    "live inference "
    "is down or its circuit open (fallback_unavailable); retry later",
    422: "On a miss, live inference found the key's input but cannot use it, e.g. a corrupt "
    "image (unscorable_input): the dataset's data needs fixing",
    504: "On a miss, live inference did not answer within its deadline (fallback_timeout)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# what a single lookup's answer carries for caches (lookup.caching)
_VALIDATORS = {
    "ETag": {"schema": {"type": "string"}, "description": "Weak; the same while the answer is"},
    "Cache-Control": {"schema": {"type": "string"}, "description": "no-cache, or max-age=N"},
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": "The ETag of an earlier answer: 304 while the answer is the same",
}


# which version answers while a canary runs (lookup.params.pick; prescore.store.canaries)
_PICK = [
    {
        "name": "version",
        "in": "query",
        "schema": {"type": "string", "pattern": VERSION_PATTERN},
        "description": "Answer from this version: the live one or its canary's (to debug)",
    },
    {
        "name": CANARY_HEADER,
        "in": "header",
        "schema": {"enum": ["1", "0", "true", "false"]},
        "description": "While a canary runs: 1 answers every key from it, 0 from the live "
        "version; without it, a stable share of keys (by a hash of the key) gets the canary",
    },
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("Error"), _STATUS_TEXT[s]) for s in statuses}


def key_schema(spec: Served) -> dict[str, Any]:
    return spec.key_form.schema()


def url_key_schema(spec: Served) -> dict[str, Any]:
    """A key in the URL: no U+FFFD either, what bytes that are not UTF-8 arrive as
    (lookup.fastpath refuses it: its bytes cannot be told apart)."""
    return spec.key_form.schema("\\ufffd")


def _context() -> dict[str, Any]:
    return dict(CONTEXT_SCHEMA)


def _bounds(settings: LookupSettings) -> dict[str, dict[str, Any]]:
    k = {"type": "integer", "minimum": 1, "maximum": settings.max_k}
    score = {"type": "number", "minimum": -MAX_ABS_SCORE, "maximum": MAX_ABS_SCORE}
    return {"k": k, "limit": k, "min_score": score}


def _payload(spec: Served) -> dict[str, Any]:
    s = spec.shape
    entry = {"type": "object", "properties": {"score": {"type": "number"}}}
    if s.entry_field:
        entry["properties"][s.entry_field] = {"type": "string"}  # type: ignore[index]
    props: dict[str, Any] = {
        "source": {"type": "string", "enum": ["precomputed", "live", "written_back"]},
        "dataset_version": {"type": "string"},
        s.key_field: {"type": "string"},
        s.list_field: {"type": "array", "items": entry},
        "model": {"type": "string"},
        "model_version": {"type": "string"},
        "scored_at": {"type": "string", "format": "date-time"},
    }
    if spec.contexts:
        props["context"] = {"type": "string"}
        props["context_fallback"] = {
            "type": "boolean",
            "description": "true: the context asked for was not scored; this is the plain entry",
        }
    return {
        "type": "object",
        "properties": props,
        "required": ["source", "dataset_version", s.key_field],
    }


def _not_found() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {"type": "string"},
            "message": {"type": "string"},
            "dataset": {"type": "string"},
            "dataset_version": {"type": "string"},
            "model_version": {"type": "string"},
        },
        "required": ["error", "message"],
    }


def _query(spec: Served, settings: LookupSettings) -> list[dict[str, Any]]:
    bounds = _bounds(settings)
    out = [
        {
            "name": "k",
            "in": "query",
            "schema": bounds["k"],
            "description": "At most this many entries, best first",
        },
        {
            "name": "limit",
            "in": "query",
            "schema": bounds["limit"],
            "description": "The same as k (with both, the smaller bounds the answer)",
        },
        {
            "name": "min_score",
            "in": "query",
            "schema": bounds["min_score"],
            "description": "Only entries scoring at least this",
        },
    ]
    if spec.contexts:
        out.append(
            {
                "name": "context",
                "in": "query",
                "schema": _context(),
                "description": "A context; the plain entry answers if it was never scored",
            }
        )
    return out


def _single(spec: Served, settings: LookupSettings) -> dict[str, Any]:
    return {
        "get": {
            "tags": [spec.name],
            "summary": f"One key of {spec.name}: precomputed, from the published version; on a "
            "miss, live inference (when configured) answers and the answer is written back",
            "parameters": [
                {"name": "key", "in": "path", "required": True, "schema": url_key_schema(spec)},
                *_query(spec, settings),
                *_PICK,
                _IF_NONE_MATCH,
            ],
            "responses": {
                "200": {
                    **_json(_ref(f"{spec.name}.Payload"), "The payload"),
                    "headers": _VALIDATORS,
                },
                "304": {"description": "Unchanged since that ETag", "headers": _VALIDATORS},
                "404": _json(
                    _ref("NotFound"),
                    "No entry for this key (not_found)",
                ),
                **_errors(400, 405, 422, 503, 504),
            },
        }
    }


def _batch_request(spec: Served, settings: LookupSettings) -> dict[str, Any]:
    keys = {
        "type": "array",
        "items": key_schema(spec),
        "minItems": 1,
        "maxItems": settings.max_batch_ids,
    }
    props: dict[str, Any] = {"keys": keys, **_bounds(settings)}
    names = ["keys"]
    if spec.batch_field != "keys":
        props[spec.batch_field] = keys
        names.append(spec.batch_field)
    if spec.contexts:
        props["context"] = _context()
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "oneOf": [{"required": [n]} for n in names],
        "description": f"The keys as {' or '.join(names)}; with both k and limit, the smaller",
    }


def _batch_answer(spec: Served) -> dict[str, Any]:
    missing = {
        "type": "object",
        "description": "A key with no answer: not_found (no entry, and live inference has "
        "none), fallback_unavailable / fallback_timeout (a miss while live inference was "
        "down or too slow; the batch still answers its hits), or unscorable_input (its input "
        "cannot be used)",
        "properties": {
            spec.shape.key_field: {"type": "string"},
            "error": {
                "enum": [
                    "not_found",
                    "fallback_unavailable",
                    "fallback_timeout",
                    "unscorable_input",
                ]
            },
            "message": {"type": "string"},
        },
        "required": [spec.shape.key_field, "error"],
    }
    return {
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "dataset_version": {"type": "string"},
            "canary_version": {
                "type": "string",
                "description": "The canary that answered some keys (each entry says which "
                "version answered it)",
            },
            "model_version": {"type": "string"},
            "found": {"type": "integer", "description": "keys answered (stored or live)"},
            "missing": {"type": "integer", "description": "keys with an error entry"},
            "results": {
                "type": "array",
                "description": "One entry per requested key, in request order; a duplicate "
                "key is answered at each of its positions",
                "items": {"oneOf": [_ref(f"{spec.name}.Payload"), missing]},
            },
        },
        "required": ["dataset_version", "model_version", "results"],
    }


def _post(
    spec: Served,
    summary: str,
    request: str,
    answer: dict[str, Any],
    codes: tuple[int, ...],
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "post": {
            "tags": [spec.name],
            "summary": summary,
            **({"parameters": parameters} if parameters else {}),
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {"200": answer, **_errors(*codes)},
        }
    }


def _predict_request(spec: Served, settings: LookupSettings) -> dict[str, Any]:
    sent = "b64" if spec.images else "features"
    props: dict[str, Any] = {
        "key": key_schema(spec),
        spec.shape.key_field: key_schema(spec),
        sent: _IMAGE if spec.images else _FEATURES,
        **_bounds(settings),
    }
    if spec.contexts:
        props["context"] = _context()
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "required": [sent],
    }


_FEATURES = {
    "type": "object",
    "minProperties": 1,
    "description": "The entity's raw features, by column name",
}
_IMAGE = {
    "type": "string",
    "minLength": 1,
    "contentEncoding": "base64",
    "description": "The image file's bytes, base64 (within LOOKUP_MAX_BODY_BYTES)",
}


def _dataset_paths(spec: Served, settings: LookupSettings, live: bool) -> dict[str, Any]:
    batch = _post(
        spec,
        f"Many keys of {spec.name}, all read from one dataset version (while a canary runs, "
        "its keys from the canary's)",
        f"{spec.name}.BatchRequest",
        _json(_ref(f"{spec.name}.Batch"), "Per-key results in request order"),
        (400, 404, 405, 413, 415, 503),
        _PICK,
    )
    predict = _post(
        spec,
        f"A new {spec.shape.key_field} of {spec.name} scored live from the features sent "
        "(never stored); a key the store holds is answered from it",
        f"{spec.name}.PredictRequest",
        _json(_ref(f"{spec.name}.Payload"), "The payload"),
        (400, 404, 405, 413, 415, 503, 504),
    )
    bases = [f"/v1/datasets/{spec.name}"] + ([f"/v1/{spec.route}"] if spec.route else [])
    out: dict[str, Any] = {}
    for base in bases:
        out[f"{base}/{{key}}"] = _single(spec, settings)
        out[f"{base}:batchGet"] = batch
        if live and spec.live:
            out[f"{base}:predict"] = predict
    return out


def _metadata_paths() -> dict[str, Any]:
    listed = {
        "type": "object",
        "properties": {"datasets": {"type": "array", "items": _ref("Dataset")}},
    }
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/v1/datasets": {
            "get": {
                "summary": "Every served dataset: what it is, and the version it serves now",
                "responses": {"200": _json(listed, "The datasets, by name"), **_errors(503)},
            }
        },
        "/v1/datasets/{name}": {
            "get": {
                "summary": "One dataset: what it is, and the version it serves now",
                "parameters": [name],
                "responses": {"200": _json(_ref("Dataset"), "The dataset"), **_errors(404, 503)},
            }
        },
    }


def _service_paths() -> dict[str, Any]:
    ready = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "datasets": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        },
    }
    text = {
        "description": "Text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {"summary": "The process is alive", "responses": {"200": _json(health, "Alive")}}
        },
        "/readyz": {
            "get": {
                "summary": "Redis answers and a version is published",
                "responses": {
                    "200": _json(ready, "Ready"),
                    "503": _json(_ref("Error"), "Not ready (not_ready, store_unavailable)"),
                },
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics (all workers)", "responses": {"200": text}}
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }


def document(settings: LookupSettings, datasets: ServedDatasets) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, with this deployment's datasets and bounds."""
    live = bool(settings.fallback_url)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string", "enum": ERROR_CODES},
                "message": {"type": "string"},
            },
            "required": ["error", "message"],
        },
        "NotFound": _not_found(),
        "Dataset": metadata.schema(),
    }
    for name in sorted(datasets.by_name):
        spec = datasets.by_name[name]
        paths.update(_dataset_paths(spec, settings, live))
        schemas[f"{name}.Payload"] = _payload(spec)
        schemas[f"{name}.BatchRequest"] = _batch_request(spec, settings)
        schemas[f"{name}.Batch"] = _batch_answer(spec)
        if live and spec.live:
            schemas[f"{name}.PredictRequest"] = _predict_request(spec, settings)
    paths.update(_metadata_paths())
    paths.update(_service_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prescore lookup API",
            "version": "2.0.0",
            "description": "Precomputed answers of the declared datasets ("
            + ", ".join(sorted(datasets.by_name))
            + "), served from the published version in Redis. Every error is JSON with a "
            "stable `error` code.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
