"""The OpenAPI 3 document of the fallback service, errors included."""

from __future__ import annotations

from typing import Any

from fallback.settings import FallbackSettings
from prescore.keys import MAX_ID_LENGTH

ERROR_CODES = [
    "invalid_id", "invalid_k", "invalid_body", "invalid_instances", "invalid_features",
    "bad_image", "empty_image", "image_too_large", "invalid_input", "candidates_required",
    "malformed_json", "not_found",
    "too_large", "too_many_instances", "unsupported_media_type", "no_route",
    "method_not_allowed", "overloaded", "inference_timeout", "model_not_ready", "reloading",
    "not_ready", "internal",
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
        "503": _json(err, "Queue full (overloaded) or model not loaded (model_not_ready)"),
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
            "predictions": {"type": "array", "items": {"type": "object"}},
        },
    }
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
                    "summary": "Tags of images: raw bytes (?image_id=) or base64 JSON instances",
                    "parameters": [{"name": "image_id", "in": "query", "schema": ID}],
                    "requestBody": {"required": True, "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {"type": "object", "properties": {
                            "instances": {"type": "array", "items": {
                                "type": "object", "required": ["image_id", "b64"],
                                "properties": {"image_id": ID, "b64": {"type": "string"}}}}}}},
                    }},
                    "responses": {"200": _json({"type": "object"}, "Tags payload(s)"),
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
