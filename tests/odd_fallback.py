"""A fallback that misbehaves on purpose, in a process of its own: the peer the lookup's
miss path must survive (tests/test_lookup_degraded.py). Real HTTP on a real socket.

    python -m tests.odd_fallback --bind 127.0.0.1:PORT     (ODD_FALLBACK_MODE below)

``refuse``: every ``:predict`` is a 400 with the fallback's own error code
(``invalid_context``), as it answers input it cannot use; ``list``: a 200 whose body is a
JSON list, not the object the protocol says; ``deep``: JSON nested past any parser's
stack; ``short``: fewer predictions than instances. The rest answer each instance with a
payload that is wrong in one way: ``nan`` (a score JSON cannot carry), ``foreign`` (another
model version's, carrying the lookup's own fields), ``shapeless`` (its list is a string),
``huge`` (past the bound of a live payload); ``echo`` answers each as it should, but a
key starting ``huge`` as ``huge`` does. ``/readyz`` answers 200 in all, over connections
kept alive.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.webhdfs_server import send_json


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections kept alive, as granian serves the fallback

    def do_GET(self) -> None:
        send_json(self, 200, {"status": "ready"})

    def do_POST(self) -> None:
        asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        mode = os.environ.get("ODD_FALLBACK_MODE")
        if mode == "refuse":
            send_json(self, 400, {"error": "invalid_context", "message": "no such context here"})
        elif mode == "list":
            send_json(self, 200, [1, 2, 3])
        elif mode == "deep":
            send_json(self, 200, None, raw=b'{"predictions":' + DEEP + b"}")
        elif mode == "short":
            send_json(self, 200, {"predictions": []})
        else:
            preds = [_payload(mode, i, asked.get("model_version", "")) for i in asked["instances"]]
            send_json(self, 200, {"predictions": preds})

    def log_message(self, *_: object) -> None:
        pass


DEEP = b"[" * 100_000 + b"]" * 100_000


def _payload(mode: str | None, instance: dict[str, Any], model_version: str) -> dict[str, Any]:
    """A payload for ``instance`` of the tests' shop dataset, wrong as ``mode`` says."""
    items: Any = [{"product_id": "p1", "score": math.nan if mode == "nan" else 0.5}]
    if mode == "shapeless":
        items = "p1"
    if mode == "huge" or instance["key"].startswith("huge"):
        items = [{"product_id": f"p{i:07d}", "score": 0.5} for i in range(40_000)]
    doc = {"customer_id": instance["key"], "items": items, "model": "shop"}
    doc["model_version"] = "999" if mode == "foreign" else model_version
    if mode == "foreign":
        doc |= {"dataset_version": "FAKE", "age_s": -5}
    return doc | {"scored_at": "2026-01-01T00:00:00Z", "source": "live"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    host, _, port = parser.parse_args().bind.rpartition(":")
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
