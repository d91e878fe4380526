"""Run the lookup API under granian: ``python -m lookup.serve [--bind] [--workers] [--threads]``.

A few worker processes, each with a few Python threads that run the app while granian's
Rust side does the HTTP (see prescore.service.serving). Metrics of every worker are collected
through a prometheus multiprocess directory (PROMETHEUS_MULTIPROC_DIR, or a fresh
temporary one), set before prometheus_client is first imported.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from lookup.settings import LookupSettings
from prescore import logs
from prescore.errors import ConfigError, PrescoreError
from prescore.logs import masked_url
from prescore.service.serving import metrics_dir, serve_metrics, worker_metrics_exit

log = logging.getLogger("lookup")


@contextmanager
def metrics_folder(settings: LookupSettings) -> Iterator[LookupSettings]:
    """``settings`` with PROMETHEUS_MULTIPROC_DIR at an empty folder (stale worker files
    removed); a temporary one made here, none being configured, is removed on leaving."""
    owned = not settings.server.metrics_dir
    ready = settings.with_server(metrics_dir=metrics_dir(settings.server.metrics_dir, "lookup"))
    try:
        yield ready
    finally:
        if owned:
            shutil.rmtree(ready.server.metrics_dir, ignore_errors=True)


def load_app(settings: LookupSettings) -> Any:
    """Build the app in a worker process (after the metrics dir is set) and tune it."""
    from lookup.app import create_app

    logs.configure("lookup", settings.server.log_level)
    worker_metrics_exit()
    app = create_app(settings)
    sys.setswitchinterval(settings.server.switch_interval_s)
    if settings.server.gc_freeze:
        gc.collect()
        gc.freeze()
    log.info(f"lookup worker {os.getpid()} ready", extra={"pid": os.getpid()})
    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the lookup API (settings from env; flags override)."""
    parser = argparse.ArgumentParser(prog="python -m lookup.serve", description=main.__doc__)
    parser.add_argument("--bind", help="host:port (env LOOKUP_BIND, default 127.0.0.1:8080)")
    parser.add_argument("--workers", type=int, help="processes (env LOOKUP_WORKERS)")
    parser.add_argument("--threads", type=int, help="app threads per process (env LOOKUP_THREADS)")
    args = parser.parse_args(argv)
    try:
        settings = LookupSettings.from_env().with_server(
            bind=args.bind, workers=args.workers, threads=args.threads
        )
        if not settings.core.catalog.datasets:
            raise ConfigError(
                "PRESCORE_CONFIG: no datasets declared; name the dataset file "
                "(docs/reference.md: Dataset declarations)"
            )
        settings.server.wsgi_server().address()  # a bad --bind, before anything starts
    except (PrescoreError, ValueError) as exc:
        print(f"lookup: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    with metrics_folder(settings) as ready:
        return _serve(ready)


def _serve(settings: LookupSettings) -> int:
    try:  # what cannot work is refused here, not by a worker that then dies
        from lookup.app import create_app
        from prescore.store.redis_client import check_policy, connect

        check_policy(connect(settings.core.redis))
        create_app(settings)
    except PrescoreError as exc:
        print(f"lookup: {exc.message}", file=sys.stderr)
        return 2
    logs.configure("lookup", settings.server.log_level)
    s = settings.server
    log.info(
        f"lookup: serving on http://{s.bind} with {s.workers} workers x {s.threads} threads; "
        f"redis {masked_url(settings.core.redis.url)}",
        extra={
            "bind": s.bind,
            "workers": s.workers,
            "threads": s.threads,
            "datasets": settings.core.catalog.names(),
        },
    )
    if s.metrics_bind:
        from lookup.exporter import RegistryCollector
        from prescore.store.redis_client import connect

        exporter = RegistryCollector.of(connect(settings.core.redis), settings)
        serve_metrics(s.metrics_bind, [exporter])
        log.info(f"lookup: metrics on http://{s.metrics_bind}/metrics")
    settings.server.wsgi_server(settings.max_body_bytes).serve(partial(load_app, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
