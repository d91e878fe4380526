"""An image's HEALTHCHECK: ``python -m prescore.service.healthcheck LOOKUP_BIND``.

Asks ``/healthz`` of the service on the port its own setting names (the environment
variable given, ``host:port``), so a container started on another port reports its health
as truly as one on the image's default. A wildcard host (``0.0.0.0``, ``::``) is asked on
loopback. Exit 0 when it answers 2xx, else 1 with one line saying why. Only the standard
library: it runs every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT_S = 2.0
WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def url_of(bind: str) -> str:
    """``http://HOST:PORT/healthz`` for a ``host:port`` the service listens on."""
    host, sep, port = bind.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"not host:port: {bind!r}")
    if host in WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m prescore.service.healthcheck BIND_VARIABLE", file=sys.stderr)
        return 2
    name = args[0]
    bind = os.environ.get(name, "")
    try:
        url = url_of(bind)
        # urlopen raises HTTPError (an OSError) for an answer outside 2xx
        with urllib.request.urlopen(url, timeout=TIMEOUT_S):
            pass
    except ValueError as exc:
        print(f"healthcheck: {name}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # URLError and HTTPError included
        print(f"healthcheck: {name}={bind}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
