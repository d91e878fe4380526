"""The lookup served over granian's RSGI interface instead of WSGI: an experiment that
bench_lookup measures beside the lookup as it ships (``--rsgi``).

Under WSGI, granian reads a request body with no time limit (granian#728), so a client
that stalls its body holds an app thread until it goes. Under RSGI the body is awaited on
the worker's event loop, where it can be timed out (408) without any thread waiting for
it; the app itself (the same WSGI app, fast path and Flask) then runs on a pool of
``--threads`` threads, so every request costs a hop from the loop to a thread and back.
This measures that hop on the real lookup, with this module's own cost of building
each request's WSGI environ in Python (granian's WSGI side builds it in Rust).

``python -m bench.rsgi_lookup --bind HOST:PORT [--workers W] [--threads T]``
(settings from the environment, as ``python -m lookup.serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

from lookup.serve import load_app, metrics_folder
from lookup.settings import LookupSettings

BODY_TIMEOUT_S = 1.0
_TIMED_OUT = b'{"error":"body_timeout","message":"the request body did not arrive in time"}'


class RSGILookup:
    """A WSGI app behind RSGI: the body read on the loop under a timeout, the app on a pool."""

    def __init__(self, app: Any, threads: int, max_body: int, server: tuple[str, str]) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="app")
        self.max_body = max_body
        self.server = server

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        headers = scope.headers
        body = b""
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            try:
                body = await asyncio.wait_for(self._body(proto), BODY_TIMEOUT_S)
            except TimeoutError:
                json = [("content-type", "application/json"), ("connection", "close")]
                proto.response_bytes(408, json, _TIMED_OUT)
                return
        environ = self._environ(scope, body)
        loop = asyncio.get_running_loop()
        status, out_headers, out = await loop.run_in_executor(self.pool, _call, self.app, environ)
        proto.response_bytes(status, out_headers, out)

    async def _body(self, proto: Any) -> bytes:
        """The body, or its first max_body + 1 bytes (the app then refuses it, 413)."""
        got = bytearray()
        async for chunk in proto:
            got += chunk
            if len(got) > self.max_body:
                break
        return bytes(got)

    def _environ(self, scope: Any, body: bytes) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(scope.path).decode("latin-1"),
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
            else:
                environ["HTTP_" + name.upper().replace("-", "_")] = value
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


def _load(settings: LookupSettings) -> Callable[[Any, Any], Awaitable[None]]:
    host, port = settings.server.wsgi_server().address()
    app = load_app(settings)
    rsgi = RSGILookup(app, settings.server.threads, settings.max_body_bytes, (host, str(port)))
    return rsgi.__rsgi__  # an RSGI app is a coroutine function of (scope, protocol)


def main() -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    settings = LookupSettings.from_env().with_server(
        bind=args.bind, workers=args.workers, threads=args.threads
    )
    host, port = settings.server.wsgi_server().address()
    with metrics_folder(settings) as ready:
        Granian(
            target="prescore-lookup-rsgi",
            address=host,
            port=port,
            interface=Interfaces.RSGI,
            workers=args.workers,
            http=HTTPModes.http1,
            websockets=False,
            backlog=2048,
            http1_settings=HTTP1Settings(keep_alive=True),
        ).serve(target_loader=partial(_load, ready), wrap_loader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
