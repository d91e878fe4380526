"""The images' HEALTHCHECK (python -m prescore.service.healthcheck VAR) asks the port the service
was given through its bind setting, on loopback for a wildcard host, against a real server."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prescore.service.healthcheck import url_of


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _check(bind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prescore.service.healthcheck", "SOME_BIND"],
        env={"SOME_BIND": bind},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_urls_of_bind_addresses() -> None:
    assert url_of("0.0.0.0:8080") == "http://127.0.0.1:8080/healthz"
    assert url_of("[::]:81") == "http://127.0.0.1:81/healthz"
    assert url_of("10.1.2.3:8081") == "http://10.1.2.3:8081/healthz"
    assert url_of("::1:9000") == "http://[::1]:9000/healthz"
    with pytest.raises(ValueError):
        url_of("8080")


def test_healthy_on_the_port_its_setting_names(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    assert _check(f"0.0.0.0:{port}").returncode == 0


def test_unhealthy_answers_and_missing_settings_exit_1_with_one_line(
    server: ThreadingHTTPServer,
) -> None:
    port = server.server_address[1]
    _Health.status = 503
    try:
        out = _check(f"127.0.0.1:{port}")
    finally:
        _Health.status = 200
    assert out.returncode == 1 and "503" in out.stderr
    server.shutdown()
    server.server_close()
    out = _check(f"127.0.0.1:{port}")  # nothing listens there now
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    out = _check("")
    assert out.returncode == 1 and "SOME_BIND" in out.stderr
