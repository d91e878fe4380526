"""gunicorn's threaded worker, with connections spread over the workers by load.

Keep-alive pins a client's connection to the worker process that accepted it. When many
connections open at once, one worker can accept most of them and serve them alone while
another idles, for as long as they live. Closing a connection after it has served
``keepalive_requests`` requests (what nginx calls keepalive_requests) makes the client
reconnect; the least busy worker is the first back in accept() and tends to win it, so
the load evens out within a second. With the default of 100, one request in a hundred
pays for a new TCP connection.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.gthread import ThreadWorker

DEFAULT_KEEPALIVE_REQUESTS = 100


class BalancingThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        settings = getattr(self.app, "settings", None)  # LookupServer passes LookupSettings
        server = getattr(settings, "server", None)
        self.keepalive_requests = int(
            getattr(server, "keepalive_requests", DEFAULT_KEEPALIVE_REQUESTS)
        )
        super().init_process()

    def handle_request(self, req: Any, conn: Any) -> bool:
        served = getattr(conn, "served", 0) + 1
        conn.served = served
        if self.keepalive_requests and served >= self.keepalive_requests:
            req.must_close = True  # answered with "Connection: close", then closed
        return bool(super().handle_request(req, conn))
