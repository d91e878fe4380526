"""What the two Flask services share: JSON errors mapped in one place, body parsing,
the OpenAPI route and request timing."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import HTTPException

from prescore.encoding.codec import dumps, loads
from prescore.errors import (
    InvalidInput,
    PayloadTooLarge,
    PrescoreError,
    Unauthorized,
    UnsupportedMediaType,
)
from prescore.logs import TRACE, request_id, traceparent

log = logging.getLogger(__name__)

# Werkzeug's own HTTP errors (unknown route, wrong method, ...) get stable codes too.
_HTTP_CODES = {
    400: "bad_request",
    404: "no_route",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status=status, mimetype="application/json", headers=headers)


def error_response(code: str, message: str, status: int) -> Response:
    return json_response(dumps({"error": code, "message": message}), status)


def log_failure(
    status: int, code: str, message: str, request_id: str, path: str, cause: str = ""
) -> None:
    """The one log line of an answer with a 5xx status: what failed and why (``cause``:
    what the caller's message leaves out)."""
    extra = {"status": status, "error": code, "reason": message, "request_id": request_id}
    log.error(
        "request failed", extra={**extra, "path": path, **({"cause": cause} if cause else {})}
    )


def install_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON with a stable ``error`` code; never a stack trace. Every
    5xx is logged with its cause and request id."""

    @app.errorhandler(PrescoreError)
    def _prescore(exc: PrescoreError) -> Response:
        if exc.http_status >= 500:
            rid = g.get("request_id", "")
            log_failure(exc.http_status, exc.code, exc.message, rid, request.path, exc.cause)
        response = error_response(exc.code, exc.message, exc.http_status)
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        method, path = request.method[:20], request.path[:200]  # werkzeug's text names neither
        message = {404: f"no route {method} {path}", 405: f"{method} is not allowed on {path}"}
        said = message.get(status, exc.description or "")
        return error_response(_HTTP_CODES.get(status, "http_error"), said, status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception(
            "unhandled error", extra={"request_id": g.get("request_id", ""), "path": request.path}
        )
        return error_response("internal", "internal error", 500)


def require_token(app: Flask, token: str, prefix: str = "/v1/") -> None:
    """With a ``token``, every route under ``prefix`` needs ``Authorization: Bearer
    <token>`` (compared in constant time); others (health, metrics) stay open."""
    if not token:
        return
    expected = f"Bearer {token}".encode()

    @app.before_request
    def _authorized() -> None:
        if not request.path.startswith(prefix):
            return
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("this route needs the Authorization: Bearer token it was given")


def install_request_log(app: Flask, access_log: bool) -> None:
    """A request id for every request (the caller's X-Request-ID, else a new one), echoed
    in the answer's X-Request-ID; with ``access_log``, one line per request."""

    @app.before_request
    def _request_id() -> None:
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        g.traceparent = traceparent(request.headers.get("traceparent"))
        TRACE.set((g.request_id, g.traceparent))
        g.log_started = time.perf_counter()

    @app.after_request
    def _echo(response: Response) -> Response:
        rid = g.get("request_id") or request_id(None)
        response.headers["X-Request-ID"] = rid
        if access_log:
            access(
                request.method,
                request.path,
                response.status_code,
                rid,
                time.perf_counter() - g.get("log_started", time.perf_counter()),
                g.get("traceparent", ""),
            )
        return response


def access(method: str, path: str, status: int, rid: str, seconds: float, parent: str = "") -> None:
    """One access log line (with the caller's traceparent, when it sent one)."""
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "request_id": rid,
        "ms": round(seconds * 1000, 3),
    }
    if parent:
        fields["traceparent"] = parent
    log.info("request", extra=fields)


def json_body(request: Request, max_bytes: int) -> Any:
    """The request's JSON body, or InvalidInput with a precise code."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"body is larger than {max_bytes} bytes")
    raw = request.get_data(cache=False)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"body is larger than {max_bytes} bytes")
    if not raw:
        raise InvalidInput("body is empty", code="malformed_json")
    return loads(raw)


def install_openapi(app: Flask, document: Any) -> None:
    """Serve ``document`` (encoded once) at /openapi.json."""
    body = dumps(document)

    def openapi() -> Response:
        return json_response(body)

    app.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])


def install_timing(app: Flask, observe: Callable[[str, str, int, float], None]) -> None:
    """Call ``observe(route, method, status, seconds)`` after every request Flask answers."""

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.get("started")
        if started is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else "unmatched"
            observe(route, request.method, response.status_code, time.perf_counter() - started)
        return response
