"""The lookup API: a thin, read-only Flask app over the published versions in Redis."""

from __future__ import annotations

from flask import Flask

from lookup import live, routes
from lookup.datasets import ServedDatasets
from lookup.fallback_client import FallbackClient
from lookup.fastpath import FastPath
from lookup.metrics import Metrics
from lookup.misses import MissHandler, for_settings
from lookup.service import Lookup
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore.redis_client import connect
from prescore.web import install_error_handlers, install_request_log


def create_app(settings: LookupSettings, on_miss: MissHandler | None = None) -> Flask:
    """Build the app. ``on_miss`` answers ids the store lacks (default: per settings,
    see lookup.misses.for_settings; without a fallback URL a miss is 404 not_found)."""
    app = Flask("lookup", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    client = connect(settings.core.redis)
    reader = StoreReader(client, settings.pointer_cache_s)
    metrics = Metrics(settings.server.metrics_dir)
    service = Lookup(reader, on_miss or for_settings(settings), metrics)
    datasets = ServedDatasets.of(settings.core.catalog)
    install_error_handlers(app)
    install_request_log(app, settings.server.access_log)
    routes.register(app, settings, service, reader, metrics, datasets)
    app.extensions["lookup"] = service
    if isinstance(service.on_miss, FallbackClient):  # new entities scored from their features
        live.register(app, settings, service.on_miss, datasets)
    fast = FastPath(app.wsgi_app, service, settings, metrics, datasets)
    app.wsgi_app = fast  # type: ignore[method-assign]
    return app
