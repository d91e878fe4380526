"""The store contract on a real Redis Cluster: no cross-slot commands anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prescore.settings import RedisSettings, StoreSettings
from prescore.store import bucket_encodings, values
from prescore.store.redis_client import connect
from prescore.store.versions import Versions, read_current, write_payloads
from tests.redis_cluster import RedisCluster3


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = RedisCluster3(tmp_path_factory.mktemp("cluster")).start()
    yield cluster.url
    cluster.stop()


def test_publish_read_rollback_on_a_cluster(cluster_url: str) -> None:
    client = connect(RedisSettings(url=cluster_url, cluster=True, socket_timeout_s=2.0))
    v = Versions(client, "reco", StoreSettings(keep_versions=2))
    published = []
    for tag in ("a", "b", "c"):
        info = v.begin("reco", tag)
        rows = [(f"u{i}", f'{{"v":"{tag}{i}"}}'.encode()) for i in range(300)]
        write_payloads(client, "reco", info.version, rows, batch=64)
        v.publish(info.version, 300)  # HLEN of its buckets, wherever they live
        published.append(info.version)
    # the keys really are spread over the nodes
    per_node = [client.get_redis_connection(node).dbsize() for node in client.get_primaries()]
    assert len(per_node) == 3 and all(size > 0 for size in per_node)
    version, values = read_current(client, "reco", ["u0", "u150", "u299", "ghost"])
    assert version == published[-1]
    assert values == [b'{"v":"c0"}', b'{"v":"c150"}', b'{"v":"c299"}', None]
    assert v.get(published[0]).status == "retired"  # beyond the two kept
    assert v.count_keys(published[0]) == 0
    assert v.rollback().version == published[-2]  # pointer + registry in one MULTI
    assert v.current() == published[-2]


def test_write_backs_and_retirement_on_a_cluster(cluster_url: str) -> None:
    client = connect(RedisSettings(url=cluster_url, cluster=True, socket_timeout_s=2.0))
    v = Versions(client, "shop", StoreSettings(keep_versions=1))
    info = v.begin("shop", "1", expected_keys=500)
    write_payloads(client, "shop", info.version, [(f"c{i}", b'{"v":1}') for i in range(500)])
    v.publish(info.version, 500)
    where = v.placed(info.version)
    assert len({client.keyslot(n) for n in where.bucket_names()}) > 1  # spread over slots
    pipe = client.pipeline(transaction=False)
    names = [where.write_back(f"new{i}") for i in range(20)]
    ttl = v.settings.live_ttl_s
    for name in names:
        pipe.set(name, b'{"v":"live"}', ex=ttl)
    values.record_write_backs(pipe, where, names, ttl)
    pipe.execute()
    assert values.read(client, where, ["c7", "new3", "ghost"]) == [
        b'{"v":1}',
        b'{"v":"live"}',
        None,
    ]
    nxt = v.begin("shop", "2", expected_keys=500)
    write_payloads(client, "shop", nxt.version, [(f"c{i}", b'{"v":2}') for i in range(500)])
    v.publish(nxt.version, 500)  # retires the first, buckets and write-backs, node by node
    assert v.get(info.version).status == "retired"
    assert sum(int(client.exists(n)) for n in [*where.bucket_names(), *names]) == 0


def test_a_fenced_writers_keys_and_units_are_its_progress_on_a_cluster(cluster_url: str) -> None:
    """A task's keys and the pairs its model scored, reported with each batch (the
    progress script runs on the lease's node, the buckets' scripts on theirs): its retry
    replaces both, and the units are never counted as keys."""
    client = connect(RedisSettings(url=cluster_url, cluster=True, socket_timeout_s=2.0))
    v = Versions(client, "units", StoreSettings())
    info = v.begin("units", "1", expected_keys=200)
    where, fence = v.placed(info.version), v.fence(info.version)
    rows = [(f"u{i}", b'{"v":1}') for i in range(200)]
    lost = values.Tally("p0", units=3_000)
    values.write(client, where, rows[:60], tally=lost, fence=fence, batch=25)
    assert values.progress(client, where) == (60, 3_000)
    retry = values.Tally("p0", units=10_000)
    values.write(client, where, rows[:100], tally=retry, fence=fence, batch=25)
    other = values.Tally("p1")
    values.write(client, where, rows[100:], tally=other, fence=fence)  # units not counted
    assert values.progress(client, where) == (200, 10_000)
    assert v.all()[0].rows == 200  # the registry's rows while writing: keys only
    assert v.publish(info.version, 200).status == "published"
    found = bucket_encodings.sample(client, where)  # each bucket asked on its own node
    assert (found.sampled, found.hashtables) == (where.buckets, 0)


def test_a_canary_is_read_beside_the_live_version_on_a_cluster(cluster_url: str) -> None:
    """The canary key shares the pointer's hash tag; a batch split between the two
    versions is read from buckets all over the nodes in one pipeline."""
    from lookup.store import StoreReader
    from prescore.encoding import routing

    client = connect(RedisSettings(url=cluster_url, cluster=True, socket_timeout_s=2.0))
    v = Versions(client, "canaried", StoreSettings(keep_versions=2))
    made = []
    for tag, stage in (("live", False), ("new", True)):
        info = v.begin("m", tag)
        rows = [(f"u{i}", f'{{"v":"{tag}"}}'.encode()) for i in range(300)]
        write_payloads(client, "canaried", info.version, rows, batch=64)
        made.append(v.publish(info.version, 300, stage=stage).version)
    live, staged = made
    v.canary(staged, 50)
    reader = StoreReader(client, pointer_cache_s=0)
    resolved = reader.resolve("canaried")
    assert resolved.canary is not None and resolved.canary.version == staged
    users = [f"u{i}" for i in range(300)]
    to = routing.canary_keys(users, staged, resolved.canary_share)
    groups = [
        ([u for u in users if u not in to], lambda r: r.served("", canary=False)),
        (sorted(to), lambda r: r.served("", canary=True)),
    ]
    _, ((was, old), (now, new)) = reader.read_many("canaried", groups)
    assert (was.version, now.version) == (live, staged)
    assert set(old) == {b'{"v":"live"}'} and set(new) == {b'{"v":"new"}'}
    assert v.promote(staged).version == staged and v.current() == staged
    assert reader.resolve("canaried").canary is None
