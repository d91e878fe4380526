"""Helpers of the lookup-on-a-miss tests: starting a fallback (small real models, a real
photo folder) and a lookup pointed at it, publishing what the bulk jobs would have, and
reading outcomes. The fixtures are in tests.fallback_lookup_fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
import requests

from prescore import keys
from prescore.settings import Settings
from tests.fallback_procs import Server, metric_value
from tests.lookup_helpers import publish, publish_users, tags_payload

# The deadline in these tests is above the 100 ms default: the test machine is shared and
# small, and a test must not fail on a slow moment. The bench measures real latencies.
DEADLINE_S = "0.5"


PHOTOS = {"p-pool": {"pool"}, "p-sea-bed": {"sea_view", "bed"}}


def fallback_server(store_root: str, photos: Path, log: Path) -> Server:
    env = {
        "PRESCORE_MODEL_STORE": store_root,
        "FALLBACK_RECO_RUNTIME": "tf",
        "FALLBACK_TAGGER_RUNTIME": "tf",
        "FALLBACK_MODELS": "reco,tagger",
        "FALLBACK_PHOTOS": photos.as_uri(),
    }
    return Server("fallback.serve", env, log)


def lookup_server(redis_url: str, fallback_url: str, log: Path, **extra: str) -> Server:
    env = {
        "REDIS_URL": redis_url,
        "PRESCORE_FALLBACK_URL": fallback_url,
        "PRESCORE_FALLBACK_TIMEOUT_S": DEADLINE_S,
        "LOOKUP_WORKERS": "1",
        "LOOKUP_THREADS": "4",
        "LOOKUP_POINTER_CACHE_S": "0",
        **extra,
    }
    return Server("lookup.serve", env, log).start()


def publish_data(rclient: redis.Redis, settings: Settings) -> None:
    """Users u0..u2 and the tags of photo img-hit, as the bulk jobs would publish them."""
    publish_users(rclient, settings, 3)
    rows = [("img-hit", tags_payload("img-hit", [("pool", 0.9)], "t1"))]
    publish(rclient, settings, "tags", rows, "t1")


def current(rclient: redis.Redis, dataset: str = "reco") -> str:
    return rclient.get(keys.pointer_key(dataset)).decode()  # type: ignore[union-attr]


def hits(lookup: Server, dataset: str) -> float:
    text = requests.get(lookup.url + "/metrics", timeout=5).text
    return metric_value(text, "lookup_keys_total", dataset=dataset, result="hit")


def fallback_calls(fallback: Server, route: str) -> float:
    text = requests.get(fallback.url + "/metrics", timeout=5).text
    return metric_value(text, "fallback_requests_total", route=route)


def outcomes(doc: dict[str, Any]) -> list[str]:
    return [r.get("source", r.get("error")) for r in doc["results"]]
