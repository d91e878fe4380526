"""The OpenAPI 3.1 document of the fallback service, generated from the served datasets."""

from __future__ import annotations

from typing import Any

from fallback.settings import FallbackSettings
from prescore.data.datasets import Dataset
from prescore.encoding.keys import CONTEXT_SCHEMA

ERROR_CODES = [
    "invalid_id",
    "invalid_k",
    "invalid_body",
    "invalid_instances",
    "invalid_features",
    "bad_image",
    "empty_image",
    "image_too_large",
    "invalid_input",
    "malformed_json",
    "not_found",
    "unknown_dataset",
    "unknown_model_version",
    "too_large",
    "too_many_instances",
    "unsupported_media_type",
    "no_route",
    "method_not_allowed",
    "overloaded",
    "inference_timeout",
    "model_not_ready",
    "model_loading",
    "model_unavailable",
    "reloading",
    "not_ready",
    "inputs_unavailable",
    "image_store_unavailable",
    "internal",
    "unauthorized",
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    err = {"$ref": "#/components/schemas/Error"}
    return {
        "400": _json(err, "Bad input (invalid_*, bad_image, malformed_json)"),
        "401": _json(err, "With a token configured: none or a wrong one sent (unauthorized)"),
        "404": _json(
            err,
            "No such dataset here (unknown_dataset), model version (unknown_model_version) "
            "or route (no_route)",
        ),
        "405": _json(err, "Method not allowed (method_not_allowed)"),
        "413": _json(err, "Body or instances too large (too_large, too_many_instances)"),
        "415": _json(err, "Wrong Content-Type (unsupported_media_type)"),
        "503": _json(
            err,
            "Queue full (overloaded), model not loaded, loading or unloadable (model_not_ready, "
            "model_loading, model_unavailable), inputs unreadable (inputs_unavailable, "
            "image_store_unavailable)",
        ),
        "504": _json(err, "The model did not answer in time (inference_timeout)"),
    }


def _predict(dataset: Dataset, settings: FallbackSettings) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "type": "object",
        "required": ["key"],
        "additionalProperties": False,
        "properties": {
            "key": dataset.key_form.schema(),
        },
    }
    if not dataset.images:  # an images dataset takes the image itself (b64), not features
        instance["properties"]["features"] = {
            "type": "object",
            "description": "raw features (a new key)",
        }
    if dataset.has_contexts:
        instance["properties"]["context"] = dict(CONTEXT_SCHEMA)
    if dataset.images:
        instance["properties"]["b64"] = {"type": "string", "description": "the image, base64"}
    body = {
        "type": "object",
        "additionalProperties": False,
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "items": instance,
                "minItems": 1,
                "maxItems": settings.max_instances,
            },
            "model_version": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            "k": {"type": "integer", "minimum": 1, "maximum": settings.max_k},
        },
    }
    answer = {
        "type": "object",
        "properties": {
            "dataset": {"type": "string"},
            "model": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {
                "type": "array",
                "description": "One entry per instance, in order: the payload the bulk job "
                f"stores (with source 'live'), or {{{dataset.key_field}, error, message}}",
                "items": {"type": "object"},
            },
        },
    }
    content: dict[str, Any] = {"application/json": {"schema": body}}
    if dataset.images:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    return {
        "post": {
            "tags": [dataset.name],
            "summary": f"Live answers of {dataset.name} for keys the store lacks",
            "requestBody": {"required": True, "content": content},
            "responses": {"200": _json(answer, "One prediction per instance"), **_errors()},
        }
    }


def document(settings: FallbackSettings, datasets: list[Dataset]) -> dict[str, Any]:
    paths: dict[str, Any] = {
        f"/v1/datasets/{d.name}:predict": _predict(d, settings) for d in datasets
    }
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    paths.update(
        {
            "/healthz": {"get": {"responses": {"200": _json(status, "Alive")}}},
            "/readyz": {
                "get": {
                    "responses": {
                        "200": _json(status, "Every served model and its inputs loaded"),
                        "503": _json({"$ref": "#/components/schemas/Error"}, "Not ready"),
                    }
                }
            },
            "/metrics": {
                "get": {
                    "responses": {
                        "200": {"description": "Prometheus text"},
                        "404": _json(
                            {"$ref": "#/components/schemas/Error"},
                            "Served on FALLBACK_METRICS_BIND instead",
                        ),
                    }
                }
            },
            "/openapi.json": {"get": {"responses": {"200": _json({"type": "object"}, "This")}}},
        }
    )
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "prescore live inference", "version": "2.0.0"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {"type": "string", "enum": ERROR_CODES},
                        "message": {"type": "string"},
                    },
                    "required": ["error", "message"],
                }
            }
        },
    }
    if settings.token:  # PRESCORE_FALLBACK_TOKEN: every :predict needs it
        doc["components"]["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
        for path in paths:
            if path.endswith(":predict"):
                paths[path]["post"]["security"] = [{"token": []}]
    return doc
