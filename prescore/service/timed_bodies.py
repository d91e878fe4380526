"""A WSGI app served over granian's RSGI interface, so that request bodies are timed.

Under WSGI, granian reads a request body with no time limit (granian#728, closed as
wontfix), so a client that stalls its body holds an app thread until it goes. Under RSGI
the body is awaited on the worker's event loop, where it is timed out (408, the
connection closed) without any thread waiting for it; the WSGI app then runs on a pool of
app threads with the whole body in memory. Every request pays a hop from the loop to a
thread and back, and its WSGI environ is built here in Python (granian's WSGI side
builds it in Rust): docs/benchmarks.md measures that cost, which is why it is a choice
(``LOOKUP_BODY_TIMEOUT_S``), not the default.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_TIMED_OUT = b'{"error":"body_timeout","message":"the request body did not arrive in time"}'


class TimedBodies:
    """A WSGI app behind RSGI: a request's body read on the loop within ``timeout_s``
    (408 and the connection closed past it), then the app run on a pool of ``threads``."""

    def __init__(
        self, app: Any, threads: int, timeout_s: float, max_body: int, server: tuple[str, str]
    ) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="app")
        self.timeout_s = timeout_s
        self.max_body = max_body
        self.server = server

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        headers = scope.headers
        body = b""
        declared = headers.get("content-length", "0")
        if declared != "0" or "transfer-encoding" in headers:
            try:
                body = await asyncio.wait_for(self._body(proto), self.timeout_s)
            except TimeoutError:
                json = [("content-type", "application/json"), ("connection", "close")]
                proto.response_bytes(408, json, _TIMED_OUT)
                return
            if (
                declared.isascii()
                and declared.isdigit()
                and len(body) < min(int(declared), self.max_body or 1 << 62)
            ):
                return  # the client went before its whole body arrived: nothing to answer
        environ = self._environ(scope, body)
        loop = asyncio.get_running_loop()
        status, out_headers, out = await loop.run_in_executor(self.pool, _call, self.app, environ)
        proto.response_bytes(status, out_headers, out)

    async def _body(self, proto: Any) -> bytes:
        """The body, or its first max_body + 1 bytes (the app then refuses it, 413; 0: no
        bound here)."""
        got = bytearray()
        async for chunk in proto:
            got += chunk
            if self.max_body and len(got) > self.max_body:
                break
        return bytes(got)

    def _environ(self, scope: Any, body: bytes) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            # granian gives the path percent-decoded already; WSGI wants its bytes as latin-1
            "PATH_INFO": scope.path.encode("utf-8", "surrogateescape").decode("latin-1"),
            "QUERY_STRING": scope.query_string,
            "SERVER_NAME": self.server[0],
            "SERVER_PORT": self.server[1],
            "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
            "REMOTE_ADDR": scope.client.rpartition(":")[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in scope.headers.items():
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
            elif name == "content-length":
                environ["CONTENT_LENGTH"] = str(len(body))
            else:  # a repeated header's values joined, as WSGI servers give them
                key = "HTTP_" + name.upper().replace("-", "_")
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[int, Any, bytes]:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started[:] = [status, headers]

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return int(started[0][:3]), started[1], body
