"""Object-store servers on 127.0.0.1 for testing s3:// and gs:// roots, each a real HTTP
server speaking its cloud's protocol, run as its own process from a virtualenv of its
own (requirements/tools/install.sh): moto's server mode for the S3 REST API, and
gcp-storage-emulator for Cloud Storage's JSON API (in memory)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from prescore.store.embedded_redis import free_port
from tests.helpers import installed

ROOT = Path(__file__).resolve().parent.parent
MOTO_VERSION = "5.2.6"  # requirements/tools/moto.txt pins it (requirements/compile.sh)
EMULATOR_VERSION = "2026.7.19"  # requirements/tools/gcs-emulator.txt pins it

# what an S3 client of any kind reads: the endpoint, a region and keys (the server takes any)
S3_CLIENT_ENV = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe for credentials
}


class ObjectServer:
    """A server on a free port, started by ``with``; ``env`` points a client at it
    through its cloud's standard variables (``client_env``: at any port)."""

    scheme = ""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = self.client_env(self.port)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def client_env(self, port: int) -> dict[str, str]:
        raise NotImplementedError

    def admin(self) -> Any:
        """A filesystem on the server that may create buckets (as an operator's tool)."""
        raise NotImplementedError

    def __enter__(self) -> ObjectServer:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        for _ in range(300):
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                requests.get(self.url, timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.scheme} server did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)


class S3Server(ObjectServer):
    """``moto_server``."""

    scheme = "s3"

    def command(self) -> list[str]:
        moto = tool_bin("moto", f"moto=={MOTO_VERSION}")
        return [f"{moto}/moto_server", "-H", "127.0.0.1", "-p", str(self.port)]

    def client_env(self, port: int) -> dict[str, str]:
        return {**S3_CLIENT_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}

    def admin(self) -> Any:
        from pyarrow import fs

        host = self.url[len("http://") :]
        return fs.S3FileSystem(endpoint_override=host, scheme="http", allow_bucket_creation=True)


class GcsServer(ObjectServer):
    """gcp-storage-emulator; Google's clients' own variable points at it, and asks for no
    credentials."""

    scheme = "gs"

    def command(self) -> list[str]:
        emulator = tool_bin("gcs-emulator", f"gcp-storage-emulator=={EMULATOR_VERSION}")
        start = [f"{emulator}/gcp-storage-emulator", "start", "--host=127.0.0.1"]
        return [*start, f"--port={self.port}", "--in-memory"]

    def client_env(self, port: int) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}

    def admin(self) -> Any:
        from pyarrow import fs

        host = self.url[len("http://") :]  # buckets are made in a project, as GCS has them
        return fs.GcsFileSystem(
            anonymous=True, endpoint_override=host, scheme="http", project_id="test"
        )


def tool_bin(name: str, pin: str) -> str:
    """The bin folder of tool ``name``'s virtualenv (requirements/tools/install.sh),
    installed from its lock, which must pin ``pin``, on first use. moto pins
    python-dateutil below the version the project's locks hold, hence apart."""
    return installed(name, [str(ROOT / "requirements" / "tools" / "install.sh"), name, pin])
