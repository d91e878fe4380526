"""``POST /v1/recommendations:predict``: a new user scored live from the features sent.

A known user is a hit, read from the published version; a user the store lacks is sent
with its features to the fallback through the lookup's FallbackClient (same deadline and
circuit breaker as a miss) and served with ``"source": "live"``. The answer is made from
inputs the caller chose, so it is never written back: what one client sends can never
change what another client reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from lookup.fallback_client import FallbackClient, reco_instance
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore import keys
from prescore.codec import dumps, envelope
from prescore.errors import FallbackUnavailable, InvalidInput, NotFound
from prescore.web import json_body, json_response


def _predict_instance(body: Any) -> tuple[dict[str, Any], int | None]:
    """The checked body of ``:predict``: the instance for the fallback, and ``k``."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    allowed = {"user_id", "features", "context", "k"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}", code="invalid_body")
    user_id = body.get("user_id")
    if not isinstance(user_id, str):
        raise InvalidInput("user_id must be a string", code="invalid_id")
    keys.check_id(user_id, what="user_id")
    context = body.get("context")
    if context is not None and not isinstance(context, str):
        raise InvalidInput("context must be a string", code="invalid_id")
    if context is not None:
        keys.check_id(context, what="context")
    features = body.get("features")
    if not isinstance(features, dict) or not features:
        raise InvalidInput("features must be a non-empty object", code="invalid_features")
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100):
        raise InvalidInput("k must be an integer from 1 to 100", code="invalid_k")
    return reco_instance(user_id, context, features=features), k


def register(app: Flask, settings: LookupSettings, client: FallbackClient) -> None:
    """Add ``POST /v1/recommendations:predict``: a known user is a hit; a new one is scored
    live from the features sent (never written back) and served with ``"source": "live"``."""
    reader: StoreReader = app.extensions["lookup"].reader

    @app.post("/v1/recommendations:predict")
    def predict_recommendations() -> Response:
        inst, k = _predict_instance(json_body(request, settings.max_body_bytes))
        cands = [keys.reco_key(inst["user_id"], inst.get("context"))]
        resolved, values = reader.read("reco", cands)
        payload = values[0] or client.answer("reco", [inst], resolved, write_back=False)[0]
        if isinstance(payload, FallbackUnavailable):  # one instance: one call, which raises
            raise payload
        if payload is None:
            raise NotFound(f"no recommendations for user_id {inst['user_id']!r}")
        doc = json.loads(envelope(payload, dataset_version=resolved.version))
        if k is not None:
            doc["items"] = doc["items"][:k]
        return json_response(dumps(doc))


def openapi_paths(ref: Callable[[str], Any], body: Callable[..., Any]) -> dict[str, Any]:
    """The OpenAPI entry of ``POST /v1/recommendations:predict``."""
    request_schema = {
        "type": "object",
        "required": ["user_id", "features"],
        "properties": {
            "user_id": {"type": "string"},
            "features": {
                "type": "object",
                "description": "country, language, device, regions (list of region ids)",
            },
            "context": {"type": "string"},
            "k": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    }
    return {
        "/v1/recommendations:predict": {
            "post": {
                "tags": ["recommendations"],
                "summary": "A user's recommendations: precomputed if stored, else scored live "
                "from the features sent and served with source 'live' (never stored)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request_schema}},
                },
                "responses": {
                    "200": body(ref("Recommendations"), "The recommendations"),
                    "400": body(ref("Error"), "Bad input (invalid_id, invalid_features, ...)"),
                    "404": body(ref("Error"), "The model cannot score this user (not_found)"),
                    "503": body(ref("Error"), "Live inference down (fallback_unavailable)"),
                    "504": body(ref("Error"), "Live inference too slow (fallback_timeout)"),
                },
            }
        }
    }
