"""A writer, publisher or rollback in a process of its own that stops itself (SIGSTOP) at a
chosen step, for tests that race real processes (tests/test_version_races.py).

    python -m tests.race_child publish URL CLUSTER DATASET ROWS PAUSE [LEASE_S]
    python -m tests.race_child rollback URL CLUSTER DATASET KEEP PAUSE
    python -m tests.race_child gated URL CLUSTER DATASET ROWS PAUSE
    python -m tests.race_child delta URL CLUSTER DATASET ROWS PAUSE TAG
    python -m tests.race_child canary URL CLUSTER DATASET VERSION PAUSE
    python -m tests.race_child promote URL CLUSTER DATASET VERSION PAUSE
    python -m tests.race_child gc URL CLUSTER DATASET KEEP PAUSE

``gated`` publishes through the one lifecycle (prescore.publishing.lifecycle), its data gates on;
``delta`` publishes keys k0..k(ROWS-1) through it as a delta of the live version, each
key's one item named TAG. ``canary`` serves VERSION to 5% of keys, ``promote`` switches
to the canary's version (VERSION), ``gc`` retires what is past keeping (KEEP versions kept).

PAUSE: ``switch`` (before its first compare-and-set), ``write:N`` (before its Nth batch),
``send:N`` (inside the fence, as its Nth batch is sent) or ``none``. It prints the
version it begins (publish), then exits 0 when done, or 1 with ``code: message`` on
stderr when prescore refused it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from prescore.data.datasets import parse
from prescore.errors import PrescoreError
from prescore.publishing.lifecycle import Written, publish_new
from prescore.settings import RedisSettings, StoreSettings
from prescore.store import transitions, values
from prescore.store.redis_client import connect
from prescore.store.versions import Versions


def _stop_before(owner: Any, name: str, nth: int) -> None:
    """Stop this process before the ``nth`` call of ``owner.name``, once."""
    real: Callable[..., Any] = getattr(owner, name)
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(*args, **kwargs)

    setattr(owner, name, wrapped)


def _publish_gated(client: Any, name: str, rows: int, tag: str = "a", delta: bool = False) -> None:
    declared = {"kind": "external", "key_field": "k", "list_field": "items", "entry_field": "id"}
    doc = {"datasets": {name: declared}}
    dataset = parse(doc, {}).get(name)

    def write(versions: Versions, info: Any) -> Written:
        body = f'"items":[{{"id":"{tag}","score":0.5}}]'
        payloads = ((f"k{i}", f'{{"k":"k{i}",{body}}}'.encode()) for i in range(rows))
        n = values.write(
            client, versions.placed(info.version), payloads, fence=versions.fence(info.version)
        )
        return Written(n, [f"k{i}" for i in range(min(rows, 50))])

    publish_new(
        Versions(client, dataset.name, StoreSettings()),
        dataset,
        ("m", "1"),
        write,
        incremental=delta,
        expected_keys=rows,
        say=lambda line: print(line, flush=True),
    )


def main(argv: list[str]) -> int:
    action, url, cluster, dataset, arg, pause = argv[:6]
    client = connect(RedisSettings(url=url, cluster=cluster == "1", socket_timeout_s=5.0))
    if pause == "switch":
        _stop_before(transitions.Registry, "apply", 1)
    elif pause.startswith("write:"):
        _stop_before(values, "_write_chunk", int(pause.split(":")[1]))
    elif pause.startswith("send:"):  # inside the fence, as its batch is about to go
        _stop_before(transitions.Registry, "write", int(pause.split(":")[1]))
    try:
        if action == "publish":
            rows, lease_s = argv[4], float(argv[6]) if len(argv) > 6 else 30.0
            v = Versions(client, dataset, StoreSettings(writer_lease_s=lease_s))
            info = v.begin("m", "1")
            print(info.version, flush=True)
            with v.lease(info.version):
                n = int(rows)
                payloads = ((f"k{i}", f'{{"v":{i}}}'.encode()) for i in range(n))
                written = values.write(
                    client, v.placed(info.version), payloads, batch=50, fence=v.fence(info.version)
                )
            v.publish(info.version, written)
        elif action == "gated":
            _publish_gated(client, dataset, int(arg))
        elif action == "delta":
            _publish_gated(client, dataset, int(arg), tag=argv[6], delta=True)
        elif action == "rollback":
            v = Versions(client, dataset, StoreSettings(keep_versions=int(arg)))
            print(v.rollback().version, flush=True)
        elif action == "canary":
            Versions(client, dataset, StoreSettings()).canary(arg, 5)
        elif action == "promote":
            print(Versions(client, dataset, StoreSettings()).promote(arg).version, flush=True)
        elif action == "gc":
            v = Versions(client, dataset, StoreSettings(keep_versions=int(arg)))
            print(" ".join(v.retire_old()), flush=True)
    except PrescoreError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
