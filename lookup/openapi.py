"""The OpenAPI 3 document of the lookup API, errors included."""

from __future__ import annotations

from typing import Any

from lookup.settings import LookupSettings
from prescore.keys import MAX_ID_LENGTH

ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.\\-]*$",
}
ERROR_CODES = [
    "invalid_id",
    "invalid_k",
    "invalid_limit",
    "invalid_min_score",
    "invalid_body",
    "invalid_ids",
    "malformed_json",
    "bad_request",
    "not_found",
    "no_version",
    "no_route",
    "method_not_allowed",
    "too_large",
    "too_many_ids",
    "unsupported_media_type",
    "store_unavailable",
    "fallback_unavailable",
    "fallback_timeout",
    "invalid_features",
    "not_ready",
    "internal",
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad input (invalid_id, invalid_k, invalid_limit, invalid_min_score, invalid_body, "
        "invalid_ids, malformed_json)",
        404: "Not found (not_found, no_version) or no such route (no_route)",
        405: "Method not allowed (method_not_allowed)",
        413: "Body or batch too large (too_large, too_many_ids)",
        415: "Content-Type is not application/json (unsupported_media_type)",
        503: "The store is unreachable or slow (store_unavailable); on a miss, live inference "
        "is down or its circuit open (fallback_unavailable); retry later",
        504: "On a miss, live inference did not answer within its deadline (fallback_timeout)",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _entries(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "object", "properties": item}}


def _payload(id_field: str, list_field: str, entry: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "source": {"type": "string", "enum": ["precomputed", "live"]},
        "dataset_version": {"type": "string"},
        id_field: ID_SCHEMA,
        list_field: _entries(entry),
        "model": {"type": "string"},
        "model_version": {"type": "string"},
        "scored_at": {"type": "string", "format": "date-time"},
    }
    if id_field == "user_id":
        props["context"] = ID_SCHEMA
    required = ["source", "dataset_version", id_field, list_field, "model_version", "scored_at"]
    return {"type": "object", "properties": props, "required": required}


def _batch_answer(payload: str, id_field: str) -> dict[str, Any]:
    missing = {
        "type": "object",
        "description": "An id with no answer: not_found (no entry, and live inference has "
        "none), or fallback_unavailable / fallback_timeout (a miss while live inference was "
        "down or too slow; the batch still answers its hits)",
        "properties": {
            id_field: ID_SCHEMA,
            "error": {"enum": ["not_found", "fallback_unavailable", "fallback_timeout"]},
            "message": {"type": "string"},
        },
        "required": [id_field, "error"],
    }
    return {
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "dataset_version": {"type": "string"},
            "model_version": {"type": "string"},
            "found": {"type": "integer", "description": "ids answered (stored or live)"},
            "missing": {"type": "integer", "description": "ids with an error entry"},
            "results": {
                "type": "array",
                "description": "One entry per requested id, in request order; a duplicate "
                "id is answered at each of its positions",
                "items": {"oneOf": [_ref(payload), missing]},
            },
        },
        "required": ["dataset_version", "model_version", "results"],
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _single(tag: str, id_name: str, payload: str, query: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "tags": [tag],
            "summary": f"The {tag} of one id: precomputed, from the published version; on a "
            "miss, live inference (when configured) answers and the answer is written back",
            "parameters": [
                {"name": id_name, "in": "path", "required": True, "schema": ID_SCHEMA},
                *query,
            ],
            "responses": {
                "200": _json(_ref(payload), "The payload"),
                "404": _json(
                    _ref("NotFound"),
                    "No entry for this id (not_found) or no published version (no_version)",
                ),
                **_errors(400, 405, 503, 504),
            },
        }
    }


def _batch(tag: str, request: str, answer: str) -> dict[str, Any]:
    return {
        "post": {
            "tags": [tag],
            "summary": f"The {tag} of many ids, all read from one dataset version",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request)}},
            },
            "responses": {
                "200": _json(_ref(answer), "Per-id results in request order"),
                **_errors(400, 404, 405, 413, 415, 503),
            },
        }
    }


def _batch_request(ids_field: str, extra: dict[str, Any], max_ids: int) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [ids_field],
        "properties": {
            ids_field: {"type": "array", "items": ID_SCHEMA, "minItems": 1, "maxItems": max_ids},
            **extra,
        },
    }


def document(settings: LookupSettings) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, with this deployment's bounds filled in."""
    k = {"type": "integer", "minimum": 1, "maximum": settings.max_k, "default": settings.default_k}
    limit = {"type": "integer", "minimum": 1, "maximum": settings.max_tag_limit}
    min_score = {"type": "number"}
    reco_q = [
        _query("k", k, "How many hotels, best first"),
        _query(
            "context",
            ID_SCHEMA,
            "A context (e.g. weekday-season); falls back to the context-free entry",
        ),
    ]
    tags_q = [
        _query("min_score", min_score, "Only tags scoring at least this"),
        _query("limit", limit, "At most this many tags, best first"),
    ]
    health = {"type": "object", "properties": {"status": {"type": "string"}}}
    ready = {
        "type": "object",
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "datasets": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        },
    }
    hotel = {"hotel_id": {"type": "string"}, "score": {"type": "number"}}
    tag = {"tag": {"type": "string"}, "score": {"type": "number"}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "prescore lookup API",
            "version": "1.0.0",
            "description": "Precomputed hotel recommendations and image tags, served from "
            "the published version in Redis. Every error is JSON with a stable `error` code.",
        },
        "paths": {
            "/v1/recommendations/{user_id}": _single(
                "recommendations", "user_id", "Recommendations", reco_q
            ),
            "/v1/recommendations:batchGet": _batch(
                "recommendations", "RecommendationsBatchRequest", "RecommendationsBatch"
            ),
            "/v1/image-tags/{image_id}": _single("image-tags", "image_id", "ImageTags", tags_q),
            "/v1/image-tags:batchGet": _batch(
                "image-tags", "ImageTagsBatchRequest", "ImageTagsBatch"
            ),
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": _json(health, "Alive")},
                }
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
                "get": {
                    "summary": "Prometheus metrics (all workers)",
                    "responses": {
                        "200": {
                            "description": "Text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                    },
                    "required": ["error", "message"],
                },
                "NotFound": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "dataset": {"type": "string"},
                        "dataset_version": {"type": "string"},
                        "model_version": {"type": "string"},
                    },
                    "required": ["error", "message"],
                },
                "Recommendations": _payload("user_id", "items", hotel),
                "ImageTags": _payload("image_id", "tags", tag),
                "RecommendationsBatchRequest": _batch_request(
                    "user_ids", {"k": k, "context": ID_SCHEMA}, settings.max_batch_ids
                ),
                "ImageTagsBatchRequest": _batch_request(
                    "image_ids", {"min_score": min_score, "limit": limit}, settings.max_batch_ids
                ),
                "RecommendationsBatch": _batch_answer("Recommendations", "user_id"),
                "ImageTagsBatch": _batch_answer("ImageTags", "image_id"),
            }
        },
    }
    if settings.fallback_url:  # live inference on a miss, and for new users
        from lookup.new_users import openapi_paths

        doc["paths"].update(openapi_paths(_ref, _json))
    return doc
