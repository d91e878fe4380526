"""A WSGI fast path for the lookups, in front of Flask (``app.wsgi_app``).

``GET /v1/datasets/<name>/<key>``, each declared ``GET /v1/<route>/<key>`` and their
``:batchGet`` are most of the traffic and each is one Redis round trip, so Flask's
per-request machinery (request and app contexts, URL map, hooks, request and response
objects, its body stream) would cost more than the lookup itself. This path answers them
straight from the WSGI environ with the same service, the same checks and the same
bodies. Anything it does not fully understand (another method or route, a key, parameter
or body it would refuse, non-ASCII) is handed to Flask (a batch body it read, replaced
by a copy), so every error still comes from the one mapping in prescore.service.web.

A request with a body holds one of the worker's app threads while its body arrives, and
granian's WSGI side reads it with no time limit (granian#728). So at most all but one of
a worker's threads wait for bodies at once (``body slots``, held only while the body is
read into memory, up to the largest allowed); a request with a body beyond them is
answered 503 ``too_busy`` (after a wait of 50 ms for a slot), before its body is read,
and a client that stalls its bodies cannot take the thread the GETs are answered on (with
two threads or more).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from lookup import params
from lookup.caching import validated
from lookup.datasets import Served, ServedDatasets
from lookup.metrics import Metrics
from lookup.routes import KEY_RULE
from lookup.service import Lookup
from lookup.settings import LookupSettings
from prescore.encoding.codec import dumps
from prescore.errors import InvalidInput, PrescoreError
from prescore.logs import TRACE, request_id, traceparent
from prescore.service.web import access, log_failure

log = logging.getLogger("prescore.service.web")  # the unhandled errors Flask's handler logs, alike

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_BUSY = (
    503,
    dumps(
        {
            "error": "too_busy",
            "message": "too many requests are sending their bodies to this server; retry shortly",
        }
    ),
)
_SLOT_WAIT_S = 0.05
_STATUS = {
    200: "200 OK",
    304: "304 NOT MODIFIED",
    404: "404 NOT FOUND",
    503: "503 SERVICE UNAVAILABLE",
    504: "504 GATEWAY TIMEOUT",
}


_CANARY_HEADER = "HTTP_" + params.CANARY_HEADER.upper().replace("-", "_")  # WSGI's name


def _rule(prefix: str, spec: Served) -> str:
    """The Flask URL rule (lookup.routes) that serves the GETs under ``prefix``."""
    if prefix == f"/v1/datasets/{spec.name}/":
        return f"/v1/datasets/<name>/{KEY_RULE}"
    return prefix + KEY_RULE


class FastPath:
    """Serve the single-key GETs directly; hand everything else to ``fallthrough``."""

    def __init__(
        self,
        fallthrough: WSGIApp,
        service: Lookup,
        settings: LookupSettings,
        metrics: Metrics,
        datasets: ServedDatasets,
    ) -> None:
        self.fallthrough = fallthrough
        self.service = service
        self.settings = settings
        self.limits = params.Limits.of(settings)
        self.metrics = metrics
        # (prefix, dataset, the route's name in metrics), longest prefix first. The name is
        # Flask's URL rule, so a request counts under one route whichever path answers it
        # (the generic rule names no dataset: prescore_lookup_keys_total says which).
        self.routes = sorted(
            ((p, s, _rule(p, s)) for p, s in datasets.routes()), key=lambda r: -len(r[0])
        )
        # all but one app thread may wait for a body (granian reads it without a timeout)
        self.body_slots = threading.BoundedSemaphore(max(1, settings.server.threads - 1))
        self.batches: dict[str, tuple[Served, str]] = {}  # path -> (dataset, Flask's rule)
        for spec in datasets.by_name.values():
            self.batches[f"/v1/datasets/{spec.name}:batchGet"] = (
                spec,
                "/v1/datasets/<name>:batchGet",
            )
            if spec.route:
                path = f"/v1/{spec.route}:batchGet"
                self.batches[path] = (spec, path)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not _has_body(environ):
            return self._route(environ, start_response)
        # a slot is held for as long as a body takes to arrive: microseconds for a client
        # that sends it at once, so a short wait tells those apart from stalled ones
        if not self.body_slots.acquire(timeout=_SLOT_WAIT_S):  # refused before its body
            rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
            return self._reply(environ, start_response, _BUSY, "body", rid, time.perf_counter())
        try:  # a slot is held only while the body arrives
            _buffer_body(environ, self.settings.max_body_bytes)
        finally:
            self.body_slots.release()
        return self._route(environ, start_response)

    def _route(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD")
        path: str = environ.get("PATH_INFO", "")
        started = time.perf_counter()
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        parent = traceparent(environ.get("HTTP_TRACEPARENT"))
        TRACE.set((rid, parent))  # carried to the fallback on a miss
        if method == "GET" or method == "HEAD":  # (Flask answers a HEAD, but for this)
            for prefix, spec, rule in self.routes:
                if path.startswith(prefix):
                    key = _text(path[len(prefix) :])
                    if key is None:  # refused here: werkzeug would read it as another key
                        return self._reply(environ, start_response, _NOT_UTF8, rule, rid, started)
                    if method == "HEAD":
                        break
                    answer = self._answer(spec, key, environ, rid)
                    if answer is not None:
                        status, body, headers = validated(
                            *answer,
                            environ.get("HTTP_IF_NONE_MATCH"),
                            self.settings.cache_max_age_s,
                        )
                        return self._reply(
                            environ, start_response, (status, body), rule, rid, started, headers
                        )
                    break
        elif method == "POST" and path in self.batches:
            spec, rule = self.batches[path]
            answer = self._batch(spec, environ, rid)
            if answer is not None:
                return self._reply(environ, start_response, answer, rule, rid, started)
        return self.fallthrough(environ, start_response)

    def _reply(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        answer: tuple[int, bytes],
        rule: str,
        rid: str,
        started: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> list[bytes]:
        status, body = answer
        # a 304 has no body, and says nothing of the 200's (RFC 9110 15.4.5)
        framing = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response(
            _STATUS.get(status) or f"{status} ERROR",
            [*(framing if status != 304 else ()), ("X-Request-ID", rid), *(headers or ())],
        )
        took = time.perf_counter() - started
        method = environ["REQUEST_METHOD"]
        self.metrics.observe(rule, method, status, took)
        if self.settings.server.access_log:
            access(method, environ.get("PATH_INFO", ""), status, rid, took, TRACE.get()[1])
        return [body]

    def _batch(self, spec: Served, environ: dict[str, Any], rid: str) -> tuple[int, bytes] | None:
        """(status, body) of a batchGet, or None to let Flask answer (and refuse) it."""
        kind = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        length = environ.get("CONTENT_LENGTH", "")
        if kind != "application/json" or not (length.isascii() and length.isdigit()):
            return None
        if not 0 < int(length) <= self.settings.max_body_bytes:
            return None
        body = environ["wsgi.input"]  # in memory (_buffer_body)
        raw = body.read(int(length))
        body.seek(0)  # Flask reads it again if it answers
        try:
            req = params.batch_body(json.loads(raw), spec, self.limits)
            query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            version = next((v for name, v in query if name == "version"), None)
            pick = params.pick(version, environ.get(_CANARY_HEADER), self.settings.version_pick)
        except (InvalidInput, ValueError, RecursionError):
            return None
        req = replace(req, pick=pick)
        return self._serve(lambda: (200, self.service.many(spec, req)), environ, rid)

    def _answer(
        self, spec: Served, key: str, environ: dict[str, Any], rid: str
    ) -> tuple[int, bytes] | None:
        """(status, body), or None to let Flask answer (and refuse) the request."""
        try:
            params.check_key(spec, key)
            query = environ.get("QUERY_STRING", "")
            args: dict[str, str] = {}
            if query:
                for name, value in parse_qsl(query, keep_blank_values=True):
                    args.setdefault(name, value)
            shape = params.shape(args, self.limits.max_k)
            context = params.context(spec, args)
            allowed = self.settings.version_pick
            pick = params.pick(args.get("version"), environ.get(_CANARY_HEADER), allowed)
        except (InvalidInput, ValueError):
            return None
        return self._serve(lambda: self.service.one(spec, key, context, shape, pick), environ, rid)

    @staticmethod
    def _serve(
        answer: Callable[[], tuple[int, bytes]], environ: dict[str, Any], rid: str
    ) -> tuple[int, bytes]:
        """``answer()``, or the error body of the PrescoreError it raised (logged if 5xx)."""
        try:
            return answer()
        except PrescoreError as exc:
            if exc.http_status >= 500:
                path = environ.get("PATH_INFO", "")
                log_failure(exc.http_status, exc.code, exc.message, rid, path, exc.cause)
            return exc.http_status, dumps(exc.to_dict())
        except Exception:  # as prescore.service.web's handler: logged with its cause, a plain 500
            log.exception(
                "unhandled error", extra={"request_id": rid, "path": environ.get("PATH_INFO")}
            )
            return 500, dumps({"error": "internal", "message": "internal error"})


DRAIN_BYTES = 16 << 20  # a body declared past the bound is read and dropped up to this


def _drain(body: Any, length: int) -> None:
    while length > 0 and (chunk := body.read(min(length, 1 << 16))):
        length -= len(chunk)


def _text(raw: str) -> str | None:
    """A PATH_INFO piece as text: WSGI hands the URL's decoded bytes over as latin-1;
    they are UTF-8. None when not: werkzeug would replace what is not, so that keys of
    different bytes (and lone surrogates) would all read as the same U+FFFD. A key that
    holds U+FFFD is refused too: granian's RSGI (prescore.service.timed_bodies) hands
    over the path with such bytes already replaced by it."""
    if raw.isascii():
        return raw
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\ufffd" in text else text


_NOT_UTF8 = (
    400,
    dumps(InvalidInput("the key in the URL is not UTF-8 text", code="invalid_id").to_dict()),
)


def _has_body(environ: dict[str, Any]) -> bool:
    length = environ.get("CONTENT_LENGTH", "")
    return (
        bool(length and length != "0")
        or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    )


def _buffer_body(environ: dict[str, Any], limit: int) -> None:
    """Read the body into memory (so the app reads it from there). One that declares more
    than ``limit`` is read and dropped, up to DRAIN_BYTES, for Flask's 413: a body left
    unread in a kept-alive connection makes the server drop it, and the client's next
    request on it fails. One without a length (chunked) is read up to one byte past
    ``limit``; past it, it is dropped the same way and declared that long, for the same
    413 (werkzeug would cut it at the bound and take what it read)."""
    length = environ.get("CONTENT_LENGTH", "")
    if length.isascii() and length.isdigit():
        if int(length) > limit:
            if int(length) <= DRAIN_BYTES:
                _drain(environ["wsgi.input"], int(length))
                environ["wsgi.input"] = io.BytesIO()
            return
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(int(length)))
    else:  # chunked: what was read is all there is (werkzeug reads to the end of it)
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:  # too large: dropped, and declared so, for Flask's 413
            _drain(environ["wsgi.input"], DRAIN_BYTES)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["CONTENT_LENGTH"], body = str(len(body)), b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["wsgi.input_terminated"] = True
