"""Run the fallback under granian: ``python -m fallback.serve [--bind] [--threads]``.

One process with many threads by default: concurrent requests of that process merge in
its micro-batchers, and TensorFlow spreads one batch over every core. The models are
loaded in the worker (after the fork), never in the master.
Each request holds one of the threads while it waits for its batch, so the thread count
bounds how many requests can merge into one model call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial
from typing import Any

from fallback.settings import FallbackSettings
from prescore import logs
from prescore.errors import ConfigError, PrescoreError
from prescore.service.serving import WSGIServer, metrics_dir, serve_metrics, worker_metrics_exit
from prescore.store.redis_client import check_policy, connect

log = logging.getLogger("fallback")


def load_app(settings: FallbackSettings) -> Any:
    from fallback.app import create_app  # TensorFlow loads in the worker

    logs.configure("fallback", settings.log_level)
    worker_metrics_exit()
    return create_app(settings)


def main(argv: list[str] | None = None) -> int:
    """Serve the live inference fallback (settings from env; flags override)."""
    parser = argparse.ArgumentParser(prog="python -m fallback.serve", description=main.__doc__)
    parser.add_argument("--bind", help="host:port (env FALLBACK_BIND, default 127.0.0.1:8081)")
    parser.add_argument("--workers", type=int, help="processes (env FALLBACK_WORKERS, default 1)")
    parser.add_argument("--threads", type=int, help="threads (env FALLBACK_THREADS)")
    args = parser.parse_args(argv)
    try:
        settings = FallbackSettings.from_env().with_changes(
            bind=args.bind, workers=args.workers, threads=args.threads
        )
        settings.check()
        settings.check_exposure()
        if not settings.served():
            raise ConfigError(
                "PRESCORE_CONFIG: no dataset to answer live (declare one with a model, or "
                "name them in FALLBACK_DATASETS)"
            )
        check_policy(connect(settings.core.redis))  # it writes answers back
    except PrescoreError as exc:
        print(f"fallback: {exc.message}", file=sys.stderr)
        return 2
    # before prometheus_client is imported, which reads it; made if it does not exist
    settings = settings.with_changes(metrics_dir=metrics_dir(settings.metrics_dir, "fallback"))
    logs.configure("fallback", settings.log_level)
    log.info(
        f"fallback: serving on http://{settings.bind} ({settings.workers} x {settings.threads} "
        f"threads); datasets {','.join(settings.served())} from {settings.core.models.root}",
        extra={"bind": settings.bind, "datasets": settings.served()},
    )
    if settings.metrics_bind:
        serve_metrics(settings.metrics_bind)
        log.info(f"fallback: metrics on http://{settings.metrics_bind}/metrics")
    server = WSGIServer(
        bind=settings.bind,
        workers=settings.workers,
        threads=settings.threads,
        name="prescore-fallback",
        kill_timeout_s=settings.graceful_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_body_bytes=settings.max_body_bytes,
    )
    server.serve(partial(load_app, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
