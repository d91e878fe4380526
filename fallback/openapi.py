"""The OpenAPI 3 document of the fallback service, errors included."""

from __future__ import annotations

from typing import Any

from fallback.settings import FallbackSettings
from prescore.image_features import PHOTO_EXTENSIONS
from prescore.keys import MAX_ID_LENGTH

ERROR_CODES = [
    "invalid_id", "invalid_k", "invalid_body", "invalid_instances", "invalid_features",
    "bad_image", "empty_image", "image_too_large", "invalid_input", "candidates_required",
    "malformed_json", "not_found",
    "too_large", "too_many_instances", "unsupported_media_type", "no_route",
    "method_not_allowed", "overloaded", "inference_timeout", "model_not_ready", "reloading",
    "not_ready", "photo_store_unavailable", "internal",
]  # fmt: skip
ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    err = {"$ref": "#/components/schemas/Error"}
    return {
        "400": _json(err, "Bad input (invalid_*, candidates_required, malformed_json)"),
        "413": _json(err, "Body or instances too large (too_large, too_many_instances)"),
        "415": _json(err, "Wrong Content-Type (unsupported_media_type)"),
        "503": _json(
            err,
            "Queue full (overloaded), model not loaded (model_not_ready) or "
            "photo store unreadable (photo_store_unavailable)",
        ),
        "504": _json(err, "The model did not answer in time (inference_timeout)"),
    }


def document(settings: FallbackSettings) -> dict[str, Any]:
    reco_instance = {
        "type": "object",
        "required": ["user_id"],
        "properties": {
            "user_id": ID,
            "features": {"type": "object", "description": "user features (new users)"},
            "context": ID,
            "candidates": {"type": "array", "items": ID, "maxItems": settings.max_candidates},
        },
    }
    predictions = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {
                "type": "array",
                "description": "One entry per instance, in order: the payload the bulk job "
                "stores (with source 'live'), or {id, error, message} for that instance",
                "items": {"type": "object"},
            },
        },
    }
    image_instance = {
        "type": "object",
        "required": ["image_id"],
        "properties": {
            "image_id": ID,
            "b64": {
                "type": "string",
                "description": "the image, base64; without it the photo <image_id>.<ext> "
                f"(ext: {', '.join(PHOTO_EXTENSIONS)}) is read from the photo store "
                "(FALLBACK_PHOTOS); a photo it lacks is a per-image not_found",
            },
        },
    }
    tags_payload = {
        "type": "object",
        "required": ["image_id", "tags", "model_version", "scored_at", "source"],
        "properties": {
            "image_id": ID,
            "tags": {"type": "array", "items": {"type": "object", "properties": {
                "tag": {"type": "string"}, "score": {"type": "number"}}}},
            "model": {"type": "string"},
            "model_version": {"type": "string"},
            "scored_at": {"type": "string", "format": "date-time"},
            "source": {"const": "live"},
        },
    }  # fmt: skip
    return {
        "openapi": "3.0.3",
        "info": {"title": "prescore live inference fallback", "version": "1"},
        "paths": {
            "/v1/predict/recommendations": {
                "post": {
                    "summary": "Top-K hotels for users scored live (payloads as precomputed)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["instances"], "properties": {
                            "instances": {"type": "array", "items": reco_instance,
                                          "maxItems": settings.max_instances},
                            "k": {"type": "integer", "minimum": 1, "maximum": settings.max_k},
                        }}}}},
                    "responses": {"200": _json(predictions, "One payload per instance"),
                                  **_errors()},
                }
            },
            "/v1/predict/image-tags": {
                "post": {
                    "summary": "Tags of images: raw bytes (?image_id=), or JSON instances "
                               "each with base64 bytes or only an id read from the photo store",
                    "parameters": [{"name": "image_id", "in": "query", "schema": ID}],
                    "requestBody": {"required": True, "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {
                            "type": "object", "required": ["instances"], "properties": {
                            "instances": {"type": "array", "maxItems": settings.max_instances,
                                          "items": image_instance}}}},
                    }},
                    "responses": {"200": _json({"oneOf": [tags_payload, predictions]},
                                               "One tags payload (raw image), or one payload "
                                               "or per-image error per instance (JSON)"),
                                  **_errors()},
                }
            },
            "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"responses": {"200": {"description": "models loaded"},
                                              "503": {"description": "not_ready"}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
        },
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error", "message"],
            "properties": {"error": {"type": "string", "enum": ERROR_CODES},
                           "message": {"type": "string"}}}}},
    }  # fmt: skip
