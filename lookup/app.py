"""The lookup API: a thin, read-only Flask app over the published versions in Redis."""

from __future__ import annotations

from functools import partial

from flask import Flask

from lookup import routes
from lookup.datasets import ServedDatasets
from lookup.exporter import RegistryCollector
from lookup.fastpath import FastPath
from lookup.live import predict
from lookup.live.client import FallbackClient
from lookup.live.freshness import Refresher
from lookup.live.misses import MissHandler, not_found
from lookup.live.shadow import ShadowChecker
from lookup.live.singleflight import SingleFlight
from lookup.metrics import Metrics
from lookup.service import Extras, Lookup
from lookup.settings import LookupSettings
from lookup.store import StoreReader
from prescore.service.web import install_error_handlers, install_request_log
from prescore.store.misslog import MissLog
from prescore.store.redis_client import connect


def create_app(settings: LookupSettings, on_miss: MissHandler | None = None) -> Flask:
    """Build the app. ``on_miss`` answers keys the store lacks (default: per settings,
    the fallback at PRESCORE_FALLBACK_URL; without one a miss is 404 not_found)."""
    app = Flask("lookup", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, JSON_SORT_KEYS=False)
    client = connect(settings.core.redis, retry_timeouts=False)  # one timeout a read
    metrics = Metrics(settings.server.metrics_dir)
    metrics.collectors.append(RegistryCollector.of(client, settings))
    reader = StoreReader(
        client,
        settings.pointer_cache_s,
        stall_s=settings.core.redis.socket_timeout_s,
        on_error=partial(metrics.count, metrics.store_errors),
    )
    if on_miss is None and settings.fallback_url:
        on_miss = FallbackClient(settings, client, metrics)  # one Redis pool a worker
    handler = on_miss or not_found
    fallback = handler if isinstance(handler, FallbackClient) else None
    extras = Extras(misslog=MissLog(client) if settings.miss_log else None)
    if fallback is not None:
        if settings.single_flight:
            handler = SingleFlight(
                fallback, client, settings.fallback_timeout_s, settings.negative_ttl_s, metrics
            )
        extras.refresher = Refresher(handler)
        if settings.shadow_rate > 0:
            extras.shadow = ShadowChecker(
                partial(fallback.answer, write_back=False), metrics
            ).start()
            extras.shadow_rate = settings.shadow_rate
    service = Lookup(reader, handler, metrics, extras)
    datasets = ServedDatasets.of(settings.core.catalog)
    install_error_handlers(app)
    install_request_log(app, settings.server.access_log)
    routes.register(app, settings, service, reader, metrics, datasets)
    app.extensions["lookup"] = service
    if fallback is not None:  # new entities scored from their features
        app.extensions["fallback_client"] = fallback
        predict.register(app, settings, fallback, reader, datasets)
    fast = FastPath(app.wsgi_app, service, settings, metrics, datasets)
    app.wsgi_app = fast  # type: ignore[method-assign]
    return app
