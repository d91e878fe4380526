"""An S3-protocol server on 127.0.0.1 for testing s3:// roots: moto's server mode, a real
HTTP server speaking the S3 REST API, run as its own process (``moto_server``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from prescore.store.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent
MOTO_VERSION = "5.2.6"  # requirements/tools/moto.txt pins it (requirements/compile.sh)

# what an S3 client of any kind reads: the endpoint, a region and keys (the server takes any)
CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe for credentials
}


class S3Server:
    """``moto_server`` on a free port; ``env`` points an S3 client at it."""

    scheme = "s3"

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**CLIENT_ENV, "AWS_ENDPOINT_URL": self.url}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def admin(self) -> Any:
        """A filesystem on the server that may create buckets (as an operator's tool)."""
        from pyarrow import fs

        host = self.url[len("http://") :]
        return fs.S3FileSystem(endpoint_override=host, scheme="http", allow_bucket_creation=True)

    def unreachable(self, port: int) -> dict[str, str]:
        """The environment of a client pointed at ``port``, where nothing answers."""
        return {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}

    def __enter__(self) -> S3Server:
        out = self.log.open("ab")
        cmd = [moto_server(), "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(300):
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                requests.get(self.url, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)


def moto_server() -> str:
    """moto's server in a virtualenv of its own (it pins python-dateutil below the
    version the project's locks hold), installed from its lock on first use."""
    return f"{tool_bin('moto', f'moto=={MOTO_VERSION}')}/moto_server"


def tool_bin(name: str, pin: str) -> str:
    """The bin folder of tool ``name``'s virtualenv (requirements/tools/install.sh),
    installed from its lock, which must pin ``pin``, on first use."""
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    out = subprocess.run(
        [str(ROOT / "requirements" / "tools" / "install.sh"), name, pin],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"installing {name} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]
