"""A Spark standalone cluster on this machine: one master and N one-core workers.

    python -m jobs.standalone [--workers 2] [--cores 1] [--memory 1g]   # until Ctrl-C
    python -m jobs.submit score --master spark://127.0.0.1:PORT --exec -- --dataset reco

The master and workers are the pyspark wheel's own (``spark-class``, SPARK_HOME the
package folder), bound to 127.0.0.1 on free ports, each with its work, scratch and log
folders under one root. It runs the unchanged job files on separate executor processes,
as a real cluster does: the tests kill an executor mid-job with it, and
bench/bench_cluster.py sets it beside local mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from jobs.submit import utf8_locale
from prescore.ports import free_port

HOST = "127.0.0.1"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


class StandaloneError(RuntimeError):
    """The cluster could not be started (no Java, no spark-class, a process exited)."""


def spark_home() -> Path:
    """The pyspark package folder: its bin/ and jars/ are a Spark distribution's."""
    import pyspark

    return Path(pyspark.__file__).parent


def _java() -> str:
    """The java that spark-class will run (JAVA_HOME's, else PATH's); raises if none."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not os.access(found, os.X_OK):
        raise StandaloneError("no java (JAVA_HOME or PATH): a Spark cluster needs Java 17+")
    return found


def _spark_class() -> Path:
    path = spark_home() / "bin" / "spark-class"
    if not path.exists():
        raise StandaloneError(f"no spark-class at {path}: install prescore[jobs] (pyspark)")
    return path


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (per thread: a JVM forks from any)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc)."""
    out, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += _children(child)
    return out


def _sockets(pid: int) -> set[str]:
    """Inodes of the sockets ``pid`` holds open."""
    out = set()
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _connected_to(port: int) -> set[str]:
    """Inodes of this machine's TCP connections to ``port`` (/proc/net/tcp, tcp6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    out.add(fields[9])
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores and ``memory`` each."""

    def __init__(
        self, root: Path | None = None, workers: int = 2, cores: int = 1, memory: str = "1g"
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="prescore-standalone-"))
        self.workers, self.cores, self.memory = workers, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # master, worker0, ...

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of the master, the workers and a driver: SPARK_HOME of the
        wheel, every address on loopback, executors' Python on this interpreter."""
        out = dict(os.environ if base is None else base)
        out["SPARK_HOME"] = str(spark_home())
        out["SPARK_LOCAL_IP"] = HOST  # the driver too: executors connect back to it
        out.setdefault("PYSPARK_PYTHON", sys.executable)
        out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return utf8_locale(out)

    def start(self, timeout_s: float = 120.0) -> StandaloneCluster:
        """Start the master and workers; return once every worker is registered."""
        _java()
        try:
            self._spawn(
                "master",
                "org.apache.spark.deploy.master.Master",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            )
            for i in range(self.workers):
                work = self.root / f"worker{i}"
                self._spawn(
                    f"worker{i}",
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    HOST,
                    "--webui-port",
                    str(free_port()),
                    "--cores",
                    str(self.cores),
                    "--memory",
                    self.memory,
                    "--work-dir",
                    str(work / "work"),
                    self.master_url,
                    local_dir=work / "local",
                )
            self._wait_for_workers(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cls: str, *args: str, local_dir: Path | None = None) -> None:
        env = self.env()
        if local_dir is not None:  # shuffle files and the executors' scratch space
            local_dir.mkdir(parents=True, exist_ok=True)
            env["SPARK_LOCAL_DIRS"] = str(local_dir)
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        # a session of its own: stop() ends the process group, executors and Python included
        proc = subprocess.Popen(
            [str(_spark_class()), cls, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,
        )
        log.close()
        self.procs[name] = proc

    def state(self) -> dict[str, Any]:
        """The master's own view (its web UI's JSON): workers, apps, cores."""
        url = f"http://{HOST}:{self.ui_port}/json/"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return dict(json.load(resp))

    def _wait_for_workers(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        alive = 0
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StandaloneError(
                        f"the {name} exited with {proc.returncode}; see {self.root / 'logs'}"
                    )
            try:
                workers = self.state().get("workers", [])
                alive = sum(1 for w in workers if w.get("state") == "ALIVE")
            except (OSError, ValueError):  # the UI not up yet, or (seen once, on a loaded
                alive = 0  # machine, as the master started) an HTML page for /json/
            if alive >= self.workers:
                return
            time.sleep(0.3)
        raise StandaloneError(
            f"{alive} of {self.workers} workers registered within {timeout_s:.0f}s; "
            f"see {self.root / 'logs'}"
        )

    def executors(self, connected_to: int | None = None) -> list[int]:
        """Process ids of the executor JVMs the workers run now; with ``connected_to``,
        only those of which a process (the JVM, a Python worker) holds a TCP connection
        to that port (of Redis: the executors that have written)."""
        found = [
            pid
            for name, worker in self.procs.items()
            if name != "master"
            for pid in _children(worker.pid)
            if EXECUTOR_CLASS in _cmdline(pid)
        ]
        if connected_to is None:
            return found
        remote = _connected_to(connected_to)
        return [pid for pid in found if any(_sockets(p) & remote for p in [pid, *descendants(pid)])]

    def stop(self) -> None:
        """End every process of the cluster (workers' executors included)."""
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # whatever of its group outlived it (an executor, a Python worker)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs = {}

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a cluster in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="per worker")
    parser.add_argument("--memory", default="1g", help="per worker, for its executors")
    parser.add_argument("--root", type=Path, help="work and log folders (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        cluster = StandaloneCluster(args.root, args.workers, args.cores, args.memory).start()
    except StandaloneError as exc:
        print(f"standalone: {exc}", file=sys.stderr)
        return 1
    print(f"master {cluster.master_url}, web UI http://{HOST}:{cluster.ui_port}/", flush=True)
    print(f"logs under {cluster.root / 'logs'}; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped like Ctrl-C
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
