"""The store contract on a real Redis Cluster: no cross-slot commands anywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from prescore.redis_client import connect
from prescore.settings import RedisSettings, StoreSettings
from prescore.versions import Versions, read_current, write_payloads
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
        v.publish(info.version, 300)  # SCAN over every node counts all 300
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
