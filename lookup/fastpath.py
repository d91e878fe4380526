"""A WSGI fast path for the single-key GETs, in front of Flask (``app.wsgi_app``).

``GET /v1/datasets/<name>/<key>`` and each declared ``GET /v1/<route>/<key>`` are most
of the traffic and each is one Redis GET, so Flask's per-request machinery (request and
app contexts, URL map, hooks, response object) would cost more than the lookup itself.
This path answers them straight from the WSGI environ with the same service, the same
checks and the same bodies. Anything it does not fully understand (another method or
route, a key or parameter it would refuse, non-ASCII) is handed to Flask untouched, so
every error still comes from the one mapping in prescore.web.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from lookup import params
from lookup.datasets import Served, ServedDatasets
from lookup.metrics import Metrics
from lookup.service import Lookup
from lookup.settings import LookupSettings
from prescore.codec import dumps
from prescore.errors import InvalidInput, PrescoreError
from prescore.logs import request_id
from prescore.web import access, log_failure

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_STATUS = {
    200: "200 OK",
    404: "404 NOT FOUND",
    503: "503 SERVICE UNAVAILABLE",
    504: "504 GATEWAY TIMEOUT",
}


def _rule(prefix: str, spec: Served) -> str:
    """The Flask URL rule (lookup.routes) that serves the GETs under ``prefix``."""
    if prefix == f"/v1/datasets/{spec.name}/":
        return "/v1/datasets/<name>/<key>"
    return prefix + "<key>"


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
        self.metrics = metrics
        # (prefix, dataset, the route's name in metrics), longest prefix first. The name is
        # Flask's URL rule, so a request counts under one route whichever path answers it
        # (the generic rule names no dataset: prescore_lookup_keys_total says which).
        self.routes = sorted(
            ((p, s, _rule(p, s)) for p, s in datasets.routes()), key=lambda r: -len(r[0])
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") == "GET":
            path: str = environ.get("PATH_INFO", "")
            for prefix, spec, rule in self.routes:
                if path.startswith(prefix):
                    started = time.perf_counter()
                    rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
                    answer = self._answer(spec, path[len(prefix) :], environ, rid)
                    if answer is None:
                        break
                    status, body = answer
                    start_response(
                        _STATUS.get(status) or f"{status} ERROR",
                        [("Content-Type", "application/json"),
                         ("Content-Length", str(len(body))), ("X-Request-ID", rid)],
                    )  # fmt: skip
                    took = time.perf_counter() - started
                    self.metrics.observe(rule, "GET", status, took)
                    if self.settings.server.access_log:
                        access("GET", path, status, rid, took)
                    return [body]
        return self.fallthrough(environ, start_response)

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
            shape = params.shape(args, self.settings)
            context = params.context(spec, args)
        except (InvalidInput, ValueError):
            return None
        try:
            return self.service.one(spec, key, context, shape)
        except PrescoreError as exc:
            if exc.http_status >= 500:
                log_failure(
                    exc.http_status, exc.code, exc.message, rid, environ.get("PATH_INFO", "")
                )
            return exc.http_status, dumps(exc.to_dict())
