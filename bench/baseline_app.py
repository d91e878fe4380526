"""The baseline of bench_lookup: a minimal Flask app doing one Redis GET per request.

Run as gunicorn defaults would (``gunicorn -w N bench.baseline_app:app``). The value key's
prefix comes from BASELINE_PREFIX (e.g. ``ps:reco:<version>:``), resolved once by the
bench, so each request is exactly one GET.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, cast

import redis
from flask import Flask, Response

app = Flask(__name__)
client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=1.0)
prefix = os.environ["BASELINE_PREFIX"]


@app.get("/v1/recommendations/<user_id>")
def recommendations(user_id: str) -> Response:
    value = client.get(prefix + user_id)
    if value is None:
        return Response(b'{"error":"not_found"}', status=404, mimetype="application/json")
    return Response(value, mimetype="application/json")


def floor(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """No framework at all: the cost of the server plus one GET, a floor for any app."""
    value = cast(bytes, client.get(prefix + environ["PATH_INFO"].rsplit("/", 1)[-1])) or b"{}"
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(value)))]
    )
    return [value]


CONSTANT = b'{"user_id":"u0","items":[]}'


def constant(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """No framework and no Redis: the server alone answering a constant."""
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(CONSTANT)))]
    )
    return [CONSTANT]
