"""What many tests do: declare datasets, register a model, settings over a catalog."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

from prescore.data.datasets import Catalog, load
from prescore.models.registration import Registered, register
from prescore.models.store import ModelStore
from prescore.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "examples" / "hotels" / "prescore.toml"
# the lookup tests' own declarations: the shop and colours domains (tests/domains.py)
SERVED_CONFIG = ROOT / "tests" / "served.toml"
# What a spark-submit started by a test keeps of the test's environment (conftest.py sets
# PRESCORE_SPARK_SCRATCH to a folder of the run's own).
JOB_ENV_KEYS = (
    "PATH",
    "HOME",
    "JAVA_HOME",
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
    "PRESCORE_SPARK_SCRATCH",
)


# A dataset of scores made elsewhere, published with `prescore publish`: a list per key.
SIMILAR_CONFIG = """
[datasets.similar]
kind = "external"
key_field = "sku"
list_field = "similar"
entry_field = "sku"
route = "similar"
"""


def job_env() -> dict[str, str]:
    """The part of this process's environment a test's spark-submit runs with."""
    return {k: os.environ[k] for k in JOB_ENV_KEYS if k in os.environ}


def demo_catalog(var: Path) -> Catalog:
    """The demo's own declarations, its paths under ``var``."""
    return load(DEMO_CONFIG, {"PRESCORE_VAR": str(var)})


def served_catalog(var: Path) -> Catalog:
    """The lookup tests' declarations (tests/served.toml), their paths under ``var``."""
    return load(SERVED_CONFIG, {"PRESCORE_VAR": str(var)})


def with_catalog(settings: Settings, config: Path | Catalog) -> Settings:
    catalog = config if isinstance(config, Catalog) else load(config, {})
    return dataclasses.replace(settings, catalog=catalog)


def registered(
    settings: Settings,
    name: str,
    folder: Path,
    *,
    promote: bool = True,
    int8: bool = False,
    dataset: str | None = None,
) -> Registered:
    """``prescore models register NAME FOLDER [--promote]``, quietly."""
    return register(
        ModelStore(settings.models),
        settings.catalog,
        name,
        str(folder),
        dataset=dataset,
        promote=promote,
        int8=int8,
        say=lambda _line: None,
    )


def stored_payload(client: Any, dataset: str, version: str, key: str) -> bytes | None:
    """The payload a version holds for ``key`` as served (JSON), or None."""
    from prescore.settings import StoreSettings
    from prescore.store import values
    from prescore.store.versions import Versions

    where = Versions(client, dataset, StoreSettings()).placed(version)
    return values.read(client, where, [key])[0]


def on_terminal(cli: list[str], env: dict[str, str], stdout_too: bool) -> tuple[int, str, str]:
    """(exit code, what reached the terminal, stdout when it was a pipe) of ``cli`` run
    with its stderr, and with ``stdout_too`` its stdout, on a pseudo-terminal."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    stdout = secondary if stdout_too else subprocess.PIPE
    proc = subprocess.Popen(cli, env=env, cwd=ROOT, stdout=stdout, stderr=secondary)
    os.close(secondary)
    drawn = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([primary], [], [], 1.0)[0]:
            continue
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(primary)
    return proc.returncode, drawn.decode(), (out or b"").decode()


def unanswered(conn: socket.socket) -> bool:
    """Whether a server has sent nothing on ``conn`` yet and not closed it."""
    readable, _, _ = select.select([conn], [], [], 0)
    return not readable


def read_until_closed(conn: socket.socket) -> bytes:
    """What a server sent on ``conn`` until it closed it."""
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    return got


def installed(name: str, installer: list[str]) -> str:
    """The last line ``installer`` prints (where it installed tool ``name``); it runs
    under this interpreter's Python, and a failure raises with its output."""
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    out = subprocess.run(
        installer, capture_output=True, text=True, env=env, check=False, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"installing {name} failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def publish_similar(
    settings: Settings, rclient: Any, tmp: Path, skus: list[str], tag: str, **options: Any
) -> Any:
    """Publish ``skus`` to the dataset ``similar`` (SIMILAR_CONFIG), each answered with
    the one item ``tag``, through `prescore publish` (parquet, a JSON column): its report."""
    import json

    import pandas as pd

    from prescore.publishing.parquet import publish_file
    from tests.frames import write_frame

    rows = [
        {"sku": k, "payload": json.dumps({"similar": [{"sku": tag, "score": 0.5}]})} for k in skus
    ]
    path = tmp / f"{tag}.parquet"
    write_frame(pd.DataFrame(rows), path, index=False)
    return publish_file(
        rclient,
        settings.store,
        settings.catalog.get("similar"),
        str(path),
        json_column="payload",
        **{"say": lambda line: None, **options},
    )
