"""Live inference on a miss: the lookup's client of the fallback service.

A miss of ``reco`` goes to ``POST {fallback}/v1/predict/recommendations``; every miss of
one request in ONE call (a batchGet's misses included). The call has a deadline
(``fallback_timeout_s``, default 100 ms) and runs behind a circuit breaker (pybreaker):
after ``fallback_breaker_fails`` failures in a row the breaker opens and misses are
answered at once with 503 ``fallback_unavailable`` for ``fallback_breaker_reset_s``; then
one trial call decides whether it closes again. A slow fallback is a 504
``fallback_timeout``; a fallback down or refusing is a 503 ``fallback_unavailable``.

Each live payload (``"source": "live"``) is written back under the version the request
read, with a TTL (``PRESCORE_LIVE_TTL_S``), so the next request for it is a hit.

A user the fallback cannot score (unknown, no features) stays a 404. Image tags are never
scored on a miss (the lookup has no image bytes). A new user's features are sent with
``POST /v1/recommendations:predict`` (see ``register``).

Plain HTTP (http.client, one keep-alive connection per thread); no TensorFlow here.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

import pybreaker
import redis
from flask import Flask, Response, request

from lookup.misses import Miss
from lookup.settings import LookupSettings
from lookup.store import Resolved, StoreReader
from prescore import keys
from prescore.codec import dumps, envelope
from prescore.errors import FallbackUnavailable, InvalidInput, NotFound
from prescore.redis_client import Client, connect
from prescore.web import json_body, json_response

log = logging.getLogger(__name__)
PREDICT_PATH = "/v1/predict/recommendations"


class FallbackTimeout(FallbackUnavailable):
    code = "fallback_timeout"
    http_status = 504


class _Refused(Exception):
    """The fallback answered with an error status (counted by the breaker)."""


class FallbackClient:
    """A MissHandler calling the fallback service, with a deadline and a circuit breaker."""

    def __init__(self, settings: LookupSettings, client: Client | None = None) -> None:
        parsed = urlparse(settings.fallback_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"PRESCORE_FALLBACK_URL must be http://host:port, got {parsed}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.base = parsed.path.rstrip("/")
        self.timeout_s = settings.fallback_timeout_s
        self.k = settings.default_k
        self.ttl_s = settings.core.store.live_ttl_s
        self.redis = client if client is not None else connect(settings.core.redis)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.fallback_breaker_fails,
            reset_timeout=settings.fallback_breaker_reset_s,
            exclude=[InvalidInput],  # the caller's bad input is no sign of an outage
        )
        self._local = threading.local()

    # -- HTTP ----------------------------------------------------------------------------

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _post_once(self, body: bytes, deadline: float) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        conn = self._conn(left)
        try:
            conn.request(
                "POST", self.base + PREDICT_PATH, body, {"Content-Type": "application/json"}
            )
            reply = conn.getresponse()
            data = reply.read()
        except BaseException:
            conn.close()
            self._local.conn = None
            raise
        if 400 <= reply.status < 500 and reply.status != 429:
            raise _client_error(reply.status, data)
        if reply.status != 200:
            raise _Refused(f"fallback answered {reply.status}: {data[:200]!r}")
        return dict(json.loads(data))

    def _post(self, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        try:
            return self._post_once(body, deadline)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return self._post_once(body, deadline)  # a kept-alive connection went stale

    def predict(self, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The fallback's predictions for ``instances`` (payloads or per-instance errors)."""
        body = dumps({"instances": instances, "k": self.k})
        try:
            doc = self.breaker.call(self._post, body)
        except InvalidInput:
            raise
        except pybreaker.CircuitBreakerError as exc:
            raise FallbackUnavailable("live inference unavailable (circuit open)") from exc
        except TimeoutError as exc:
            took = f"{self.timeout_s * 1000:.0f} ms"
            raise FallbackTimeout(f"live inference took over {took}") from exc
        except (OSError, http.client.HTTPException, _Refused, ValueError) as exc:
            raise FallbackUnavailable(f"live inference unavailable: {exc}") from exc
        preds = doc.get("predictions")
        if not isinstance(preds, list) or len(preds) != len(instances):
            raise FallbackUnavailable("live inference answered an unexpected body")
        return preds

    # -- miss seam -----------------------------------------------------------------------

    def __call__(self, misses: Sequence[Miss], version: Resolved) -> list[bytes | None]:
        """Live payloads for the reco misses (others None), written back under ``version``."""
        wanted = [i for i, m in enumerate(misses) if m.dataset == "reco"]
        out: list[bytes | None] = [None] * len(misses)
        if not wanted:
            return out
        instances = [_instance(misses[i].entity_id, misses[i].context) for i in wanted]
        answers = self.answer(instances, version)
        for i, payload in zip(wanted, answers, strict=True):
            out[i] = payload
        return out

    def answer(self, instances: list[dict[str, Any]], version: Resolved) -> list[bytes | None]:
        """Payload bytes per instance (None where the fallback has none), written back."""
        found: list[bytes | None] = []
        for pred in self.predict(instances):
            ok = isinstance(pred, dict) and "items" in pred and "error" not in pred
            found.append(dumps(pred) if ok else None)
        self._write_back(instances, found, version)
        return found

    def _write_back(
        self, instances: list[dict[str, Any]], payloads: list[bytes | None], version: Resolved
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for inst, payload in zip(instances, payloads, strict=True):
            if payload is not None:
                key = keys.reco_key(inst["user_id"], inst.get("context"))
                pipe.set(keys.value_key("reco", version.version, key), payload, ex=self.ttl_s)
                count += 1
        if not count:
            return
        try:
            pipe.execute()
        except redis.RedisError as exc:  # the answer is still served; the next miss retries
            log.warning("live write-back of %d payloads failed: %s", count, exc)


def _client_error(status: int, data: bytes) -> InvalidInput:
    """The fallback refused the input (e.g. features it cannot use): the caller's 4xx."""
    try:
        doc = json.loads(data)
        code, message = str(doc["error"]), str(doc["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "invalid_input", f"live inference refused the input ({status})"
    error = InvalidInput(message, code=code)
    error.http_status = 400 if status not in (413, 415) else status
    return error


def _instance(user_id: str, context: str | None, **extra: Any) -> dict[str, Any]:
    inst: dict[str, Any] = {"user_id": user_id, **extra}
    if context:
        inst["context"] = context
    return inst


def _predict_instance(body: Any) -> tuple[dict[str, Any], int | None]:
    """The checked body of ``:predict``: the instance for the fallback, and ``k``."""
    if not isinstance(body, dict):
        raise InvalidInput("body must be a JSON object", code="invalid_body")
    allowed = {"user_id", "features", "context", "candidates", "k"}
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
    extra = {"features": features}
    if body.get("candidates") is not None:
        extra["candidates"] = body["candidates"]
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100):
        raise InvalidInput("k must be an integer from 1 to 100", code="invalid_k")
    return _instance(user_id, context, **extra), k


def register(app: Flask, settings: LookupSettings, client: FallbackClient) -> None:
    """Add ``POST /v1/recommendations:predict``: a known user is a hit; a new one is scored
    live from the features sent, written back, and served with ``"source": "live"``."""
    reader: StoreReader = app.extensions["lookup"].reader

    @app.post("/v1/recommendations:predict")
    def predict_recommendations() -> Response:
        inst, k = _predict_instance(json_body(request, settings.max_body_bytes))
        cands = [keys.reco_key(inst["user_id"], inst.get("context"))]
        resolved, values = reader.read("reco", cands)
        payload = values[0] or client.answer([inst], resolved)[0]
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
            "candidates": {"type": "array", "items": {"type": "string"}},
            "k": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    }
    return {
        "/v1/recommendations:predict": {
            "post": {
                "tags": ["recommendations"],
                "summary": "A user's recommendations: precomputed if stored, else scored live "
                "from the features sent, written back, and served with source 'live'",
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
