"""Helpers of the lookup-on-a-miss tests: starting a fallback (the shop and colours
models, tests.fallback_domains) and a lookup pointed at it, both over one dataset file,
publishing what the bulk jobs would have, and reading outcomes. The fixtures are in
tests.fallback_lookup_fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
import requests

from prescore.encoding import keys
from prescore.settings import Settings
from tests import fallback_domains as fd
from tests.fallback_procs import Server, metric_value
from tests.helpers import stored_payload
from tests.lookup_helpers import publish

# The deadline in these tests is above the 100 ms default: the test machine is shared and
# small, and a test must not fail on a slow moment. The bench measures real latencies.
DEADLINE_S = "0.5"
PREDICT_ROUTE = "/v1/datasets/<name>:predict"  # the fallback's route label in its metrics
PUBLISHED = ["c0", "c1", "c2"]  # customers the bulk job scored; c3... are in the table only


def fallback_server(world: dict[str, Any], log: Path, **extra: str) -> Server:
    env = fd.process_env(world["settings"], world["config"], FALLBACK_RUNTIME="tf", **extra)
    return Server("fallback.serve", env, log)


def lookup_env(world: dict[str, Any], redis_url: str, fallback_url: str, **extra: str) -> dict:
    return {
        **fd.process_env(world["settings"], world["config"]),
        "REDIS_URL": redis_url,
        "PRESCORE_FALLBACK_URL": fallback_url,
        "PRESCORE_FALLBACK_TIMEOUT_S": DEADLINE_S,
        "LOOKUP_WORKERS": "1",
        "LOOKUP_THREADS": "4",
        "LOOKUP_POINTER_CACHE_S": "0",
        **extra,
    }


def lookup_server(
    world: dict[str, Any], redis_url: str, fallback_url: str, log: Path, **extra: str
) -> Server:
    env = lookup_env(world, redis_url, fallback_url, **extra)
    return Server("lookup.serve", env, log).start()


def publish_data(rclient: redis.Redis, settings: Settings, model_version: str = "1") -> None:
    """Customers c0..c2 and the colours of image img-hit, as the bulk jobs would publish
    them with model version ``model_version`` (the one the fallback is asked for)."""
    rows = [(c, fd.shop_payload(c, 5, model_version)) for c in PUBLISHED]
    publish(rclient, settings, "shop", rows, model_version, model="shop-model")
    tags = [("img-hit", fd.colours_payload("img-hit", [("red", 0.9)], model_version))]
    publish(rclient, settings, "colours", tags, model_version, model="colour-tagger")


def current(rclient: redis.Redis, dataset: str = "shop") -> str:
    return rclient.get(keys.pointer_key(dataset)).decode()  # type: ignore[union-attr]


def stored(rclient: redis.Redis, dataset: str, key: str) -> bytes | None:
    """What the live version holds for ``key`` (precomputed or written back)."""
    return stored_payload(rclient, dataset, current(rclient, dataset), key)


def hits(lookup: Server, dataset: str, result: str = "hit") -> float:
    """Keys answered from Redis: ``hit`` precomputed, ``written_back`` earlier live answers."""
    text = requests.get(lookup.url + "/metrics", timeout=5).text
    return metric_value(text, "prescore_lookup_keys_total", dataset=dataset, result=result)


def fallback_calls(fallback: Server, route: str = PREDICT_ROUTE) -> float:
    text = requests.get(fallback.url + "/metrics", timeout=5).text
    return metric_value(text, "prescore_fallback_requests_total", route=route)


def outcomes(doc: dict[str, Any]) -> list[str]:
    return [r.get("source", r.get("error")) for r in doc["results"]]
