"""The version protocol raced by real processes on a real Redis and a real Redis Cluster:
one process stops itself (SIGSTOP) at a step, another acts, the first resumes. Every
interleaving ends with the pointer on a complete, published version and nothing of the
loser left behind (tests/race_child.py is the paused process); so does a delta of the live
version paused at its attach. And the same store under memory pressure: an evicting
policy refused, a version that does not fit cleaned up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from prescore.data.datasets import Dataset
from prescore.encoding import keys
from prescore.encoding.registry_entry import VersionInfo
from prescore.errors import ConfigError, PublishError
from prescore.publishing.lifecycle import Written, publish_new
from prescore.settings import RedisSettings, StoreSettings
from prescore.store import canaries, deltas, values
from prescore.store.redis_client import Client, connect
from prescore.store.versions import Versions
from tests.helpers import ROOT
from tests.redis_cluster import RedisCluster3

TRIALS = 3  # each race is run this many times, alternating nothing but the timing
# a delta's races stop each process at the one step raced, so their order is fixed: once
DELTA_TRIALS = 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nodes = RedisCluster3(tmp_path_factory.mktemp("cluster")).start()
    yield nodes.url
    nodes.stop()


@pytest.fixture(params=["single", pytest.param("cluster", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """(url, cluster): each race on a single Redis and on the 3-node cluster."""
    if request.param == "single":
        return request.getfixturevalue("redis_url"), False
    url = request.getfixturevalue("cluster")
    client = connect(RedisSettings(url=url, cluster=True, socket_timeout_s=5.0))
    client.flushall()  # type: ignore[call-arg]
    return url, True


class Child:
    """A tests.race_child process doing ``action`` on ``store`` (url, cluster) with
    ``args``; ``paused()`` waits until it has stopped itself."""

    def __init__(self, action: str, store: tuple[str, bool], *args: str) -> None:
        where = [store[0], "1" if store[1] else "0"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.race_child", action, *where, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def paused(self, timeout_s: float = 60.0) -> None:
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + timeout_s
        while stat.read_text().split(") ", 1)[1][0] != "T":
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the child never reached its pause"
            time.sleep(0.01)

    def resume(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGCONT)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


def _client(store: tuple[str, bool]) -> Client:
    return connect(RedisSettings(url=store[0], cluster=store[1], socket_timeout_s=5.0))


def _publish(v: Versions, n: int) -> str:
    info = v.begin("m", "1")
    rows = ((f"k{i}", f'{{"v":{i}}}'.encode()) for i in range(n))
    written = values.write(v.client, v.placed(info.version), rows, fence=v.fence(info.version))
    return v.publish(info.version, written).version


def test_an_older_publish_paused_before_its_switch_never_moves_the_pointer_back(
    store: tuple[str, bool],
) -> None:
    client = _client(store)
    for trial in range(TRIALS):
        dataset = f"race{trial}"
        older = Child("publish", store, dataset, "30", "switch")
        older.paused()  # checked forward-only against no live version, then stopped
        version = older.proc.stdout.readline().strip()  # type: ignore[union-attr]
        v = Versions(client, dataset, StoreSettings(keep_versions=3))
        newer = _publish(v, 20)
        assert newer > version
        code, _, err = older.resume()
        assert code == 1 and err.startswith("stale_publish:"), err
        assert v.current() == newer
        assert v.get(version).status == "failed" and v.count_keys(version) == 0
        assert "forced" not in v.get(newer).note


def test_a_rollback_paused_while_its_target_is_retired_is_refused(
    store: tuple[str, bool],
) -> None:
    client = _client(store)
    for trial in range(TRIALS):
        dataset = f"back{trial}"
        v = Versions(client, dataset, StoreSettings(keep_versions=2))
        first, second = _publish(v, 10), _publish(v, 10)
        back = Child("rollback", store, dataset, "2", "switch")
        back.paused()  # decided: back to `first`; stopped before switching
        third = _publish(v, 10)  # keeps the newest 2: `first` is retired meanwhile
        assert v.get(first).status == "retired" and v.count_keys(first) == 0
        code, _, err = back.resume()
        assert code == 1 and err.startswith("conflict:"), err
        assert v.current() == third and v.get(third).status == "published"
        assert v.get(second).status == "published" and v.count_keys(second) == 10


@pytest.mark.parametrize("pause", ["write:3", "send:3"])
def test_a_writer_paused_past_its_lease_is_reaped_and_lands_nothing_when_it_wakes(
    store: tuple[str, bool], pause: str
) -> None:
    """Paused before its batch, or inside the fence as the batch goes (where a check
    made before the write would already have passed)."""
    client = _client(store)
    for trial in range(TRIALS):
        dataset = f"lapse{trial}{pause[0]}"
        # a 1 s lease; stopped at its 3rd batch of 50, 100 keys written
        writer = Child("publish", store, dataset, "400", pause, "1")
        writer.paused()
        version = writer.proc.stdout.readline().strip()  # type: ignore[union-attr]
        v = Versions(client, dataset, StoreSettings(writer_lease_s=1.0))
        while {i.version: i.status for i in v.all()}[version] != "dead":
            time.sleep(0.05)  # the lease's deadline passes on the Redis server's clock
        nxt = _publish(v, 5)  # the next job reaps the dead writer
        assert v.get(version).status == "failed" and v.count_keys(version) == 0
        code, _, err = writer.resume()
        assert code == 1 and err.splitlines()[-1].startswith("lease_lost:"), err
        assert v.count_keys(version) == 0  # its third batch was refused
        assert v.current() == nxt
        assert client.exists(keys.lease_key(dataset, version)) == 0
        assert client.exists(keys.written_key(dataset, version)) == 0


def test_a_publish_whose_live_version_changed_after_its_gates_is_gated_again(
    store: tuple[str, bool],
) -> None:
    """Paused between its gates and its switch while a rollback changes the live
    version: it is gated again, against the version that is live now, then switched."""
    client = _client(store)
    for trial in range(TRIALS):
        dataset = f"regate{trial}"
        v = Versions(client, dataset, StoreSettings(keep_versions=3))
        first, second = _publish(v, 50), _publish(v, 50)
        job = Child("gated", store, dataset, "50", "switch")
        job.paused()  # gated against `second`, stopped before its switch
        line = job.proc.stdout.readline()  # type: ignore[union-attr]
        version = line.split("writing version ", 1)[1].split()[0]
        assert v.rollback().version == first
        code, out, err = job.resume()
        assert code == 0, err
        assert f"the live version changed to {first} after the gates; gating again" in out
        assert v.current() == version and v.count_keys(version) == 50
        assert v.get(version).extra["gates"]["against"] == first
        assert v.get(second).status == "published"  # left by the rollback, kept


def test_a_fenced_batch_far_larger_than_a_script_can_unpack_lands_whole(
    store: tuple[str, bool],
) -> None:
    """One bucket taking a whole batch (a version sized for a few keys, given many): the
    scripts write it in parts, as Lua's stack bounds one call's arguments."""
    v = Versions(_client(store), "wide", StoreSettings())
    info = v.begin("m", "1", expected_keys=1)
    assert info.buckets == 1
    rows = ((f"k{i}", b"1") for i in range(12_000))
    where, fence = v.placed(info.version), v.fence(info.version)
    assert values.write(v.client, where, rows, batch=12_000, fence=fence) == 12_000
    assert v.publish(info.version, 12_000).rows == 12_000


def test_a_straggling_writer_lands_nothing_once_its_version_is_published(
    store: tuple[str, bool],
) -> None:
    """A task attempt that lingers past its job's switch (speculative, or cut off and
    back) holds the job's token still: its batch is refused, on a cluster by the sealed
    bucket fences, and the live version keeps exactly what was counted."""
    v = Versions(_client(store), "late", StoreSettings())
    info = v.begin("m", "1")
    where, fence = v.placed(info.version), v.fence(info.version)
    rows = [(f"k{i}", b'{"v":1}') for i in range(10)]
    assert values.write(v.client, where, rows, fence=fence) == 10
    v.publish(info.version, 10)
    with pytest.raises(PublishError) as late:
        values.write(v.client, where, [("k99", b'{"v":2}'), ("k1", b'{"v":2}')], fence=fence)
    assert late.value.code == "lease_lost"
    assert v.count_keys(info.version) == 10
    assert values.read_raw(v.client, where, ["k99", "k1"]) == [None, b'{"v":1}']


def _nodes(store: tuple[str, bool]) -> list[redis.Redis]:
    client = _client(store)
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_primaries()]
    return [client]  # type: ignore[list-item]


def test_an_evicting_policy_and_a_full_redis_are_clean_refusals(
    store: tuple[str, bool],
) -> None:
    """allkeys-* refused before anything is written; a version that does not fit fails
    with store_full, its keys removed although Redis is full, and the next one fits."""
    client, nodes = _client(store), _nodes(store)
    v = Versions(client, "mem", StoreSettings())
    dataset = Dataset(name="mem", kind="external")
    payload = b'{"v":"' + b"x" * 300 + b'"}'

    def write(versions: Versions, info: VersionInfo) -> Written:
        rows = ((f"k{i}", payload) for i in range(20_000))  # about 7 MB
        where, fence = versions.placed(info.version), versions.fence(info.version)
        return Written(values.write(client, where, rows, fence=fence), [])

    try:
        for node in nodes:
            node.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigError, match="maxmemory-policy allkeys-lru"):
            v.begin("m", "1")
        assert v.all() == []  # nothing was written
        for node in nodes:
            node.config_set("maxmemory-policy", "noeviction")
        live = _publish(v, 10)
        for node in nodes:  # room for about a fifth of the version on each node
            node.config_set("maxmemory", int(node.info("memory")["used_memory"]) + 1_500_000)
        with pytest.raises(PublishError) as full:
            publish_new(v, dataset, ("m", "1"), write, say=lambda _: None)
        assert full.value.code == "store_full" and "Redis is full" in full.value.message
        assert v.current() == live
        (failed,) = [i for i in v.all() if i.status == "failed"]
        assert v.count_keys(failed.version) == 0
        v.retire_old()  # gc runs on a Redis that was full
        for node in nodes:
            node.config_set("maxmemory", 0)
        assert v.current() == live and _publish(v, 10) > live
    finally:
        for node in nodes:
            node.config_set("maxmemory", 0)
            node.config_set("maxmemory-policy", "volatile-lru")


def test_a_delta_paused_before_its_attach_while_its_base_is_replaced_lands_nothing(
    store: tuple[str, bool],
) -> None:
    client = _client(store)
    for trial in range(DELTA_TRIALS):
        dataset = f"dbase{trial}"
        assert Child("gated", store, dataset, "20", "none").resume()[0] == 0
        v = Versions(client, dataset, StoreSettings())
        base = v.current()
        late = Child("delta", store, dataset, "5", "switch", "late")
        late.paused()  # written, counted and gated; stopped before its attach
        assert Child("gated", store, dataset, "20", "none").resume()[0] == 0
        code, out, err = late.resume()
        assert code == 1 and "base_replaced" in err, err
        version = out.split("writing delta ", 1)[1].split()[0]
        assert v.get(version).status == "failed" and v.count_keys(version) == 0
        assert v.current() != base and deltas.read(client, dataset)[1] == ()


def test_a_late_delta_never_hides_a_newer_ones_answer(store: tuple[str, bool]) -> None:
    """The older delta (begun first) attaches last: it ranks below the newer one, and
    a rollback of the newer one in between is not lost by either attach."""
    client = _client(store)
    for trial in range(DELTA_TRIALS):
        dataset = f"dorder{trial}"
        assert Child("gated", store, dataset, "20", "none").resume()[0] == 0
        older = Child("delta", store, dataset, "5", "switch", "older")
        older.paused()
        newer = Child("delta", store, dataset, "3", "none", "newer")
        assert newer.resume()[0] == 0
        code, _, err = older.resume()
        assert code == 0, err
        live, ids, _ = deltas.read(client, dataset)
        assert len(ids) == 2 and ids[0] > ids[1]  # the newer first, though attached first
        v = Versions(client, dataset, StoreSettings())
        where = v.placed(live or "")
        found = values.read(
            client, where, ["k0", "k4", "k9"], deltas=[values.Layer(v.placed(i)) for i in ids]
        )
        items = [json.loads(raw or "{}").get("items", [{}])[0].get("id") for raw in found]
        assert items == ["newer", "older", "a"]


def test_a_delta_rolled_back_and_gc_run_while_another_attaches_lose_neither(
    store: tuple[str, bool],
) -> None:
    """A delta paused before its attach while gc runs and another delta is attached and
    rolled back: gc leaves the writing one, and its attach keeps the rollback (each
    decides again on the deltas as they are)."""
    client = _client(store)
    for trial in range(DELTA_TRIALS):
        dataset = f"drace{trial}"
        assert Child("gated", store, dataset, "20", "none").resume()[0] == 0
        paused = Child("delta", store, dataset, "4", "switch", "paused")
        paused.paused()
        assert Child("delta", store, dataset, "2", "none", "other").resume()[0] == 0
        v = Versions(client, dataset, StoreSettings())
        other = deltas.read(client, dataset)[1][0]
        assert v.retire_old() == []
        v.drop_delta(other)
        code, _, err = paused.resume()
        assert code == 0, err
        live, ids, _ = deltas.read(client, dataset)
        assert len(ids) == 1 and ids[0] != other and v.get(ids[0]).rows == 4
        found = values.read(
            client, v.placed(live or ""), ["k0", "k3"], deltas=[values.Layer(v.placed(ids[0]))]
        )
        assert [json.loads(raw or "{}")["items"][0]["id"] for raw in found] == ["paused"] * 2
        assert v.get(other).status == "retired" and v.count_keys(other) == 0


def _stage(v: Versions, n: int) -> str:
    info = v.begin("m", "1")
    rows = ((f"k{i}", f'{{"v":{i}}}'.encode()) for i in range(n))
    written = values.write(v.client, v.placed(info.version), rows, fence=v.fence(info.version))
    return v.publish(info.version, written, stage=True).version


def test_a_canary_paused_while_gc_retires_its_version_is_refused(
    store: tuple[str, bool],
) -> None:
    """A canary decided on a staged version, stopped before its compare-and-set; a newer
    staged version makes gc retire the older one meanwhile: the canary decides again and
    is refused, and no canary names a version without keys."""
    client = _client(store)
    v = Versions(client, "canary0", StoreSettings(keep_versions=2))
    _publish(v, 10)
    older = _stage(v, 10)
    start = Child("canary", store, "canary0", older, "switch")
    start.paused()
    _stage(v, 10)  # the newest staged stays; the older is retired and its keys go
    assert v.get(older).status == "retired" and v.count_keys(older) == 0
    code, _, err = start.resume()
    assert code == 1 and err.startswith("not_a_candidate:"), err
    assert canaries.read(client, "canary0")[1] is None


def test_gc_paused_before_retiring_a_version_a_canary_then_serves_keeps_it(
    store: tuple[str, bool],
) -> None:
    """gc decided to retire an older staged version and stopped before recording it; a
    canary starts on that version meanwhile: gc decides again and keeps it, keys and all."""
    client = _client(store)
    v = Versions(client, "canary1", StoreSettings(keep_versions=2))
    _publish(v, 10)
    older = _stage(v, 10)
    info = v.begin("m", "1")  # a newer staged version, published without gc running
    rows = ((f"k{i}", b'{"v":1}') for i in range(10))
    written = values.write(client, v.placed(info.version), rows, fence=v.fence(info.version))
    v.publish(info.version, written, stage=True, retire=False)
    gc = Child("gc", store, "canary1", "2", "switch")
    gc.paused()
    v.canary(older, 5)
    code, out, err = gc.resume()
    assert code == 0 and older not in out, (out, err)
    assert v.get(older).status == "staged" and v.count_keys(older) == 10
    assert canaries.read(client, "canary1")[1] is not None


def test_a_promotion_paused_while_another_version_is_published_is_refused(
    store: tuple[str, bool],
) -> None:
    """A promotion decided, stopped before its switch; a full publish meanwhile ends the
    canary in its own switch: the promotion decides again and finds no canary, and the
    newly published version stays live."""
    client = _client(store)
    v = Versions(client, "canary2", StoreSettings(keep_versions=3))
    _publish(v, 10)
    staged = _stage(v, 10)
    v.canary(staged, 5)
    promote = Child("promote", store, "canary2", staged, "switch")
    promote.paused()
    newer = _publish(v, 10)
    code, _, err = promote.resume()
    assert code == 1 and err.startswith("no_canary:"), err
    assert v.current() == newer  # and the staged version, older than it, is retired
    assert v.get(staged).status == "retired" and v.count_keys(staged) == 0
