"""Run the lookup API under gunicorn: ``python -m lookup.serve [--bind] [--workers] [--threads]``.

Lookups are I/O-bound (one Redis round trip each), so the default worker is gunicorn's
threaded one (lookup.worker.BalancingThreadWorker): a few processes, several threads
each, HTTP keep-alive, connections recycled so that load spreads over the processes.
Metrics of every worker are collected through a prometheus multiprocess directory
(PROMETHEUS_MULTIPROC_DIR, or a fresh temporary one), set before prometheus_client is
first imported.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lookup.settings import LookupSettings
from prescore.serving import GunicornApp


def prepare_metrics_dir(settings: LookupSettings) -> LookupSettings:
    """Point PROMETHEUS_MULTIPROC_DIR at an empty directory (stale worker files removed)."""
    path = settings.server.metrics_dir or tempfile.mkdtemp(prefix="lookup-metrics-")
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return settings.with_server(metrics_dir=path)


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _post_worker_init(worker: Any) -> None:
    server = worker.app.settings.server
    sys.setswitchinterval(server.switch_interval_s)
    if server.gc_freeze:
        gc.collect()
        gc.freeze()
    worker.log.info("lookup worker %s ready", worker.pid)


def gunicorn_options(settings: LookupSettings) -> dict[str, Any]:
    s = settings.server
    return {
        "bind": s.bind,
        "workers": s.workers,
        "threads": s.threads,
        "worker_class": s.worker_class,
        "keepalive": s.keepalive_s,
        "backlog": s.backlog,
        "timeout": s.timeout_s,
        "graceful_timeout": s.graceful_timeout_s,
        "max_requests": s.max_requests,
        "max_requests_jitter": s.max_requests // 10 if s.max_requests else 0,
        "accesslog": None,  # per-request logging costs throughput; metrics cover it
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "prescore-lookup",
        "child_exit": _child_exit,
        "post_worker_init": _post_worker_init,
        "control_socket_disable": True,  # an admin socket at one shared path per user: unused
    }


def _create_app(settings: Any) -> Any:
    from lookup.app import create_app  # after the metrics dir is set

    return create_app(settings)


def main(argv: list[str] | None = None) -> int:
    """Serve the lookup API (settings from env; flags override)."""
    parser = argparse.ArgumentParser(prog="python -m lookup.serve", description=main.__doc__)
    parser.add_argument("--bind", help="host:port (env LOOKUP_BIND, default 127.0.0.1:8080)")
    parser.add_argument("--workers", type=int, help="processes (env LOOKUP_WORKERS)")
    parser.add_argument("--threads", type=int, help="threads per process (env LOOKUP_THREADS)")
    parser.add_argument(
        "--worker-class", help="gunicorn worker class (default lookup.worker.BalancingThreadWorker)"
    )
    args = parser.parse_args(argv)
    settings = LookupSettings.from_env().with_server(
        bind=args.bind, workers=args.workers, threads=args.threads, worker_class=args.worker_class
    )
    owned = not settings.server.metrics_dir
    settings = prepare_metrics_dir(settings)
    print(
        f"lookup: serving on http://{settings.server.bind} with {settings.server.workers} "
        f"{settings.server.worker_class} workers x {settings.server.threads} threads; "
        f"redis {settings.core.redis.url}",
        flush=True,
    )
    master = os.getpid()
    try:
        GunicornApp(settings, gunicorn_options(settings), _create_app).run()
    finally:
        # workers are forks that leave through this frame too: only the master cleans up
        if owned and os.getpid() == master:
            shutil.rmtree(settings.server.metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
