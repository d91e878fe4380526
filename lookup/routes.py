"""The HTTP routes of the lookup API: every declared dataset under /v1/datasets/{name},
and under its own route when it declares one (the demo's /v1/recommendations)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request

from lookup import params
from lookup.datasets import Served, ServedDatasets
from lookup.metrics import Metrics
from lookup.openapi import document
from lookup.service import Lookup
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore.codec import dumps
from prescore.errors import NotFound
from prescore.web import install_openapi, install_timing, json_response


def register(
    app: Flask,
    settings: LookupSettings,
    service: Lookup,
    reader: StoreReader,
    metrics: Metrics,
    datasets: ServedDatasets,
) -> None:
    """Add every route, and the request metrics hooks, to ``app``."""

    def single(spec: Served, key: str) -> Response:
        params.check_key(spec, key)
        args = request.args
        shape = params.shape(args, settings)
        status, body = service.one(spec, key, params.context(spec, args), shape)
        return json_response(body, status)

    def batch(spec: Served) -> Response:
        return json_response(service.many(spec, params.batch_request(request, spec, settings)))

    @app.get("/v1/datasets/<name>/<key>")
    def get_key(name: str, key: str) -> Response:
        return single(datasets.get(name), key)

    @app.post("/v1/datasets/<name>:batchGet")
    def batch_get(name: str) -> Response:
        return batch(datasets.get(name))

    for spec in datasets.by_name.values():
        if spec.route:
            app.add_url_rule(
                f"/v1/{spec.route}/<key>", f"get_{spec.name}", _bound(single, spec), methods=["GET"]
            )
            app.add_url_rule(
                f"/v1/{spec.route}:batchGet", f"batch_{spec.name}", _bound_batch(batch, spec),
                methods=["POST"],
            )  # fmt: skip

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    @app.get("/readyz")
    def readyz() -> Response:
        reader.ping()
        versions: dict[str, str | None] = {}
        for name in sorted(datasets.by_name):
            try:
                versions[name] = reader.resolve(name, fresh=True).version
            except NotFound:
                versions[name] = None
        ready = any(versions.values())
        body = {"status": "ready" if ready else "not_ready", "datasets": versions}
        if not ready:
            body.update(error="not_ready", message="no dataset has a published version")
        return json_response(dumps(body), 200 if ready else 503)

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(metrics.render(), mimetype=None, content_type=metrics.content_type)

    install_openapi(app, document(settings, datasets))
    install_timing(app, metrics.observe)


def _bound(view: Callable[[Served, str], Response], spec: Served) -> Callable[..., Response]:
    return lambda key: view(spec, key)


def _bound_batch(view: Callable[[Served], Response], spec: Served) -> Callable[..., Response]:
    return lambda: view(spec)
