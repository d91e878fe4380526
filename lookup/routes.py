"""The HTTP routes of the lookup API: every declared dataset under /v1/datasets/{name},
and under its own route when it declares one (the demo's /v1/recommendations); what each
is and which version it serves at /v1/datasets and /v1/datasets/{name}."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flask import Flask, Response, request
from werkzeug.routing import BaseConverter, PathConverter

from lookup import params
from lookup.caching import validated
from lookup.datasets import Served, ServedDatasets
from lookup.metadata import describe
from lookup.metrics import Metrics
from lookup.openapi import document
from lookup.service import Lookup
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore.encoding.codec import dumps
from prescore.errors import NotFound, StoreUnavailable
from prescore.service.web import install_openapi, install_timing, json_response


class KeyText(PathConverter):
    """A key's text in a URL: any characters, ``/`` and control characters too, so that
    the lookup itself checks the key and names what is wrong with it (werkzeug's ``path``
    stops at a newline)."""

    regex = r"[\s\S]+"
    part_isolating = False  # it spans '/' (werkzeug guesses from a '/' in the regex)


class DatasetName(BaseConverter):
    """A dataset's name in a URL: no ``:``, so that ``GET /v1/datasets/x:batchGet`` is
    still the 405 of a POST-only route rather than an unknown dataset."""

    regex = r"[^/:]+"


KEY_RULE = "<text:key>"


def register(
    app: Flask,
    settings: LookupSettings,
    service: Lookup,
    reader: StoreReader,
    metrics: Metrics,
    datasets: ServedDatasets,
) -> None:
    """Add every route, and the request metrics hooks, to ``app``."""
    app.url_map.converters["text"] = KeyText
    app.url_map.converters["dataset"] = DatasetName

    limits = params.Limits.of(settings)

    def _pick(args: Any) -> params.Pick:
        header = request.headers.get(params.CANARY_HEADER)
        return params.pick(args.get("version"), header, settings.version_pick)

    def single(spec: Served, key: str) -> Response:
        params.check_key(spec, key)
        args = request.args
        shape = params.shape(args, limits.max_k)
        pick = _pick(args)
        status, body = service.one(spec, key, params.context(spec, args), shape, pick)
        status, body, headers = validated(
            status, body, request.headers.get("If-None-Match"), settings.cache_max_age_s
        )
        return json_response(body, status, dict(headers))

    def batch(spec: Served) -> Response:
        req = params.batch_request(request, spec, limits)
        pick = _pick(request.args)
        return json_response(service.many(spec, replace(req, pick=pick)))

    @app.get(f"/v1/datasets/<name>/{KEY_RULE}")
    def get_key(name: str, key: str) -> Response:
        return single(datasets.get(name), key)

    @app.post("/v1/datasets/<name>:batchGet")
    def batch_get(name: str) -> Response:
        return batch(datasets.get(name))

    live = bool(settings.fallback_url)

    @app.get("/v1/datasets")
    def list_datasets() -> Response:
        found = [describe(reader, datasets.by_name[n], live) for n in sorted(datasets.by_name)]
        return json_response(dumps({"datasets": found}))

    @app.get("/v1/datasets/<dataset:name>")
    def show_dataset(name: str) -> Response:
        return json_response(dumps(describe(reader, datasets.get(name), live)))

    for spec in datasets.by_name.values():
        if spec.route:
            app.add_url_rule(
                f"/v1/{spec.route}/{KEY_RULE}",
                f"get_{spec.name}",
                _bound(single, spec),
                methods=["GET"],
            )
            app.add_url_rule(
                f"/v1/{spec.route}:batchGet",
                f"batch_{spec.name}",
                _bound_batch(batch, spec),
                methods=["POST"],
            )

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    readiness = Readiness(reader, sorted(datasets.by_name), settings.ready_grace_s)

    @app.get("/readyz")
    def readyz() -> Response:
        status, body = readiness.check()
        return json_response(dumps(body), status)

    @app.get("/metrics")
    def metrics_page() -> Response:
        if settings.server.metrics_bind:
            raise NotFound(f"metrics are served on {settings.server.metrics_bind}")
        return Response(metrics.render(), mimetype=None, content_type=metrics.content_type)

    install_openapi(app, document(settings, datasets))
    install_timing(app, metrics.observe)


class Readiness:
    """``/readyz``: ready once the store answers and a dataset is published.

    Once ready, a store outage or a lost dataset keeps the pod ready (``degraded``, with
    why) for ``grace_s``: during a short Redis blip clients get the API's JSON 503s rather
    than connection errors from a Service with no ready pods. After that, not ready."""

    def __init__(
        self,
        reader: StoreReader,
        names: list[str],
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader, self.names, self.grace_s, self.clock = reader, names, grace_s, clock
        self.ready_at: float | None = None

    def check(self) -> tuple[int, dict[str, Any]]:
        problems: dict[str, str] = {}
        versions: dict[str, str | None] = {}
        try:
            self.reader.ping()
        except StoreUnavailable:
            problems["store"] = "store_unavailable"
        for name in self.names:
            try:
                versions[name] = self.reader.resolve(name, fresh=True).version
            except StoreUnavailable as exc:
                versions[name] = None
                if exc.code != "not_published":  # one not published yet is no problem
                    problems.setdefault(name, exc.code)
        now = self.clock()
        if not problems and any(versions.values()):
            self.ready_at = now
            return 200, {"status": "ready", "datasets": versions}
        body: dict[str, Any] = {"datasets": versions, "problems": problems}
        if self.ready_at is not None and now - self.ready_at <= self.grace_s:
            return 200, {"status": "degraded", **body}
        why = "; ".join(f"{k}: {v}" for k, v in problems.items()) or "no dataset is published"
        return 503, {"status": "not_ready", "error": "not_ready", "message": why, **body}


def _bound(view: Callable[[Served, str], Response], spec: Served) -> Callable[..., Response]:
    return lambda key: view(spec, key)


def _bound_batch(view: Callable[[Served], Response], spec: Served) -> Callable[..., Response]:
    return lambda: view(spec)
