"""The HTTP routes of the lookup API."""

from __future__ import annotations

from flask import Flask, Response, request

from lookup import params
from lookup.datasets import RECO, TAGS, DatasetSpec
from lookup.metrics import Metrics
from lookup.openapi import document
from lookup.service import Lookup
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore import keys
from prescore.codec import dumps
from prescore.errors import NotFound
from prescore.web import install_openapi, install_timing, json_response


def register(
    app: Flask, settings: LookupSettings, service: Lookup, reader: StoreReader, metrics: Metrics
) -> None:
    """Add every route, and the request metrics hooks, to ``app``."""

    def single(spec: DatasetSpec, entity_id: str) -> Response:
        keys.check_id(entity_id, what=spec.id_field)
        args = request.args
        shape = params.shape_for(spec, args, settings)
        status, body = service.one(spec, entity_id, params.context_param(spec, args), shape)
        return json_response(body, status)

    def batch(spec: DatasetSpec) -> Response:
        return json_response(service.many(spec, params.batch_request(request, spec, settings)))

    @app.get("/v1/recommendations/<user_id>")
    def get_recommendations(user_id: str) -> Response:
        return single(RECO, user_id)

    @app.post("/v1/recommendations:batchGet")
    def batch_recommendations() -> Response:
        return batch(RECO)

    @app.get("/v1/image-tags/<image_id>")
    def get_image_tags(image_id: str) -> Response:
        return single(TAGS, image_id)

    @app.post("/v1/image-tags:batchGet")
    def batch_image_tags() -> Response:
        return batch(TAGS)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response(b'{"status":"ok"}')

    @app.get("/readyz")
    def readyz() -> Response:
        reader.ping()
        versions: dict[str, str | None] = {}
        for dataset in keys.DATASETS:
            try:
                versions[dataset] = reader.resolve(dataset, fresh=True).version
            except NotFound:
                versions[dataset] = None
        ready = any(versions.values())
        body = {"status": "ready" if ready else "not_ready", "datasets": versions}
        if not ready:
            body.update(error="not_ready", message="no dataset has a published version")
        return json_response(dumps(body), 200 if ready else 503)

    @app.get("/metrics")
    def metrics_page() -> Response:
        return Response(metrics.render(), mimetype=None, content_type=metrics.content_type)

    install_openapi(app, document(settings))
    install_timing(app, metrics.observe)
