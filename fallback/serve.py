"""Run the fallback under gunicorn: ``python -m fallback.serve [--bind] [--threads]``.

One process with many threads by default: concurrent requests of that process merge in
its micro-batchers, and TensorFlow spreads one batch over every core. The models are
loaded in the worker (after the fork), never in the master.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fallback.settings import FallbackSettings
from prescore.serving import GunicornApp


def gunicorn_options(settings: FallbackSettings) -> dict[str, Any]:
    return {
        "bind": settings.bind,
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": "gthread",
        "timeout": settings.timeout_s,
        "graceful_timeout": 10,
        "keepalive": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "prescore-fallback",
        "control_socket_disable": True,
    }


def _create_app(settings: Any) -> Any:
    from fallback.app import create_app  # TensorFlow loads in the worker

    return create_app(settings)


def main(argv: list[str] | None = None) -> int:
    """Serve the live inference fallback (settings from env; flags override)."""
    parser = argparse.ArgumentParser(prog="python -m fallback.serve", description=main.__doc__)
    parser.add_argument("--bind", help="host:port (env FALLBACK_BIND, default 127.0.0.1:8081)")
    parser.add_argument("--workers", type=int, help="processes (env FALLBACK_WORKERS, default 1)")
    parser.add_argument("--threads", type=int, help="threads (env FALLBACK_THREADS)")
    args = parser.parse_args(argv)
    settings = FallbackSettings.from_env().with_changes(
        bind=args.bind, workers=args.workers, threads=args.threads
    )
    print(
        f"fallback: serving on http://{settings.bind} ({settings.workers} x {settings.threads} "
        f"threads); models {','.join(settings.models)} from {settings.core.models.root}",
        flush=True,
    )
    GunicornApp(settings, gunicorn_options(settings), _create_app).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
