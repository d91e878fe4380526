"""granian as a library: both services run under it, configured from their settings.

granian's HTTP/1 server is written in Rust: it accepts connections, parses requests and
writes answers on its own runtime thread, and hands each request to one of a few Python
threads per worker process that run only the WSGI app. Per request that costs a small
fraction of what a Python server spends on HTTP (bench_lookup measures it), which is
most of a lookup's time. Workers are forks of the calling process; each calls ``load``
once to build its app, so settings reach the app as the frozen object the caller built.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WSGILoader = Callable[[], Any]


@dataclass(frozen=True)
class WSGIServer:
    """How one service is served: where, how many processes, how many app threads each."""

    bind: str  # host:port
    workers: int
    threads: int  # Python threads a worker runs the app on (granian's blocking threads)
    name: str  # what granian calls the target in its log
    backlog: int = 1024
    kill_timeout_s: int = 10  # a worker that has not stopped this long after SIGTERM is killed
    # a connection whose next request line and headers have not all arrived this long
    # after it opened or its last answer was sent is closed (granian's own timer, before
    # any app thread is used): it is the kept-alive connections' idle timeout too
    header_timeout_s: float = 30.0
    # 0: bodies read under WSGI, untimed; else served over RSGI with each body read within
    # this (prescore.service.timed_bodies), read no further than max_body_bytes
    body_timeout_s: float = 0.0
    max_body_bytes: int = 0

    def address(self) -> tuple[str, int]:
        """("host", port) from ``bind``; a bracketed IPv6 host loses its brackets."""
        host, sep, port = self.bind.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()):
            raise ValueError(f"bind must be host:port, got {self.bind!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

    def serve(self, load: WSGILoader) -> None:
        """Serve until SIGTERM or SIGINT; ``load()`` runs once in each worker."""
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings

        host, port = self.address()
        timed = self.body_timeout_s > 0
        server = Granian(
            target=self.name,  # only a label: the app comes from ``load``
            address=host,
            port=port,
            interface=Interfaces.RSGI if timed else Interfaces.WSGI,
            workers=self.workers,
            blocking_threads=1 if timed else self.threads,
            http=HTTPModes.http1,
            websockets=False,
            backlog=self.backlog,
            http1_settings=HTTP1Settings(
                keep_alive=True, header_read_timeout=round(self.header_timeout_s * 1000)
            ),
            workers_kill_timeout=self.kill_timeout_s,
        )
        server.serve(target_loader=self._timed(load) if timed else load, wrap_loader=False)

    def _timed(self, load: WSGILoader) -> WSGILoader:
        """``load`` with its WSGI app behind timed_bodies' RSGI adapter."""
        from prescore.service.timed_bodies import TimedBodies

        def loaded() -> Any:
            host, port = self.address()
            server = (host, str(port))
            app = TimedBodies(
                load(), self.threads, self.body_timeout_s, self.max_body_bytes, server
            )
            return app.__rsgi__  # an RSGI app is a coroutine function of (scope, protocol)

        return loaded


def metrics_dir(configured: str, service: str) -> str:
    """The prometheus multiprocess folder, ready before prometheus_client is imported: the
    configured one (created if it does not exist yet, as on a fresh Kubernetes emptyDir),
    else a fresh temporary one; files a previous run left are removed. Exported as
    PROMETHEUS_MULTIPROC_DIR for the workers."""
    path = configured or tempfile.mkdtemp(prefix=f"{service}-metrics-")
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def serve_metrics(bind: str, collectors: list[Any] | None = None) -> None:
    """Serve /metrics on ``bind`` from this (the main) process, in a daemon thread: every
    worker's values from the multiprocess folder, and ``collectors`` read at scrape time.
    Lets /metrics listen where only Prometheus may reach it (its own NetworkPolicy)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    for collector in collectors or []:
        registry.register(collector)
    host, _, port = bind.rpartition(":")
    start_http_server(int(port), addr=host, registry=registry)


def worker_metrics_exit() -> None:
    """At a worker's exit, drop its live gauges (``live*`` modes) from the multiprocess folder."""
    import atexit

    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        pid = os.getpid()
        atexit.register(multiprocess.mark_process_dead, pid)
