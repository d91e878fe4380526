"""A fallback that misbehaves on purpose, in a process of its own: the peer the lookup's
miss path must survive (tests/test_lookup_degraded.py). Real HTTP on a real socket.

    python -m tests.odd_fallback --bind 127.0.0.1:PORT     (ODD_FALLBACK_MODE below)

``refuse``: every ``:predict`` is a 400 with the fallback's own error code
(``invalid_context``), as it answers input it cannot use; ``list``: a 200 whose body is a
JSON list, not the object the protocol says. ``/readyz`` answers 200 in both.
"""

from __future__ import annotations

import argparse
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.webhdfs_server import send_json


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        send_json(self, 200, {"status": "ready"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if os.environ.get("ODD_FALLBACK_MODE") == "refuse":
            send_json(self, 400, {"error": "invalid_context", "message": "no such context here"})
        else:
            send_json(self, 200, [1, 2, 3])

    def log_message(self, *_: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    host, _, port = parser.parse_args().bind.rpartition(":")
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
