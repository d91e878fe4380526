"""A GCS-protocol server on 127.0.0.1 for testing gs:// roots: gcp-storage-emulator, a
real HTTP server speaking Cloud Storage's JSON API, run as its own process, in memory."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from prescore.store.embedded_redis import free_port
from tests.s3_server import tool_bin

EMULATOR_VERSION = "2026.7.19"  # requirements/tools/gcs-emulator.txt pins it (compile.sh)


class GcsServer:
    """The emulator on a free port; ``env`` points a GCS client at it (Google's clients'
    own variable: no credentials are then asked for)."""

    scheme = "gs"

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.url}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def admin(self) -> Any:
        """A filesystem on the server that may create buckets (in a project, as GCS has)."""
        from pyarrow import fs

        host = self.url[len("http://") :]
        return fs.GcsFileSystem(
            anonymous=True, endpoint_override=host, scheme="http", project_id="test"
        )

    def unreachable(self, port: int) -> dict[str, str]:
        """The environment of a client pointed at ``port``, where nothing answers."""
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}

    def __enter__(self) -> GcsServer:
        out = self.log.open("ab")
        emulator = tool_bin("gcs-emulator", f"gcp-storage-emulator=={EMULATOR_VERSION}")
        cmd = [f"{emulator}/gcp-storage-emulator", "start", "--host=127.0.0.1"]
        cmd += [f"--port={self.port}", "--in-memory"]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(300):
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                requests.get(f"{self.url}/storage/v1/b", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"the GCS emulator did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
