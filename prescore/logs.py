"""Structured logs: one JSON object a line, for the services and the jobs.

``{"ts": "...", "level": "warning", "service": "lookup", "event": "...", ...fields}``:
a log line's ``extra`` fields (request_id, status, dataset, error code, ...) become keys,
so a log pipeline can filter on them without parsing messages. Hand-written rather than
python-json-logger: the whole of it is the one ``format`` below, and the services need no
more. Messages never carry secrets: URLs are logged through masked_url.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlparse

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

# The request this thread answers now: its id and its W3C traceparent (or ""), set where a
# request starts (the lookup's fast path, prescore.service.web), so that a call it makes to another
# service carries them (trace_headers) and both sides log the same id.
TRACE: ContextVar[tuple[str, str]] = ContextVar("prescore_trace", default=("", ""))


class JSONFormatter(logging.Formatter):
    """A log record as one line of JSON."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure(service: str, level: str = "info") -> None:
    """Send every log record of this process to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def traceparent(given: str | None) -> str:
    """The caller's W3C ``traceparent`` header when it is well formed, else ""."""
    return given if given and _TRACEPARENT.fullmatch(given) else ""


def trace_headers() -> dict[str, str]:
    """The headers that carry the request answered now to a service it calls."""
    rid, parent = TRACE.get()
    headers = {"X-Request-ID": rid} if rid else {}
    if parent:
        headers["traceparent"] = parent
    return headers


def request_id(given: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)  # uuid4's 32 hex digits, without building a UUID


def masked_url(raw: str) -> str:
    """``raw`` with its password, if any, shown as ``***`` (for messages and logs): in
    its user part, or a ``password=`` query parameter (redis-py takes either)."""
    try:
        password = urlparse(raw).password
    except ValueError:
        return "(a URL that cannot be parsed)"
    shown = raw if not password else raw.replace(f":{password}@", ":***@")
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", shown)
