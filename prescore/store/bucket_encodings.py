"""Whether a version's buckets stayed compact. Redis keeps a small hash as a listpack, a
fraction of a hashtable's memory a field, only while it holds at most
``hash-max-listpack-entries`` fields and none longer than ``hash-max-listpack-value``
bytes: one payload over the value bound turns its whole bucket into a hashtable, and
Redis says nothing. So a publish samples the buckets it wrote and says it
(prescore.publishing.lifecycle), with the bounds in force where Redis tells them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from prescore.store.redis_client import Client, as_text
from prescore.store.values import Placed, execute

SAMPLE = 32  # buckets looked at, spread over the version
LIMITS = ("hash-max-listpack-entries", "hash-max-listpack-value")


@dataclass(frozen=True)
class BucketEncodings:
    sampled: int
    hashtables: int
    limits: dict[str, int]  # LIMITS as configured; empty where CONFIG GET is refused

    def line(self) -> str | None:
        """What a publish says when buckets left the compact encoding, else None."""
        if not self.hashtables:
            return None
        entries = self.limits.get(LIMITS[0], "hash-max-listpack-entries")
        value = self.limits.get(LIMITS[1], "hash-max-listpack-value")
        return (
            f"  buckets: {self.hashtables} of {self.sampled} sampled are hashtables, not "
            f"listpacks (a payload over {value} bytes, or over {entries} keys in a "
            "bucket), so each key costs more memory; hash-max-listpack-value above the "
            "payloads' size keeps them compact, each lookup then scanning its bucket"
        )

    def to_json(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "hashtables": self.hashtables, **self.limits}


def sample(client: Client, where: Placed, most: int = SAMPLE) -> BucketEncodings:
    """The encodings of up to ``most`` of the version's buckets, spread over them."""
    names = where.bucket_names()
    chosen = names[:: max(1, len(names) // most)][:most]
    replies = execute(client, [("OBJECT", "ENCODING", name) for name in chosen])  # one trip
    found = [as_text(reply or b"") for reply in replies]
    present = [e for e in found if e]  # a bucket gone meanwhile (gc of a failed run)
    return BucketEncodings(len(present), present.count("hashtable"), _limits(client))


def _limits(client: Client) -> dict[str, int]:
    """LIMITS as the server (a cluster: one of its nodes) has them, under the names of
    Redis before 7 too (ziplist); none where CONFIG is refused, as managed services often
    do."""
    try:
        raw = client.config_get("hash-max-*")
        got = {str(k): str(v) for k, v in raw.items()}
    except redis.ResponseError:
        return {}
    out = {}
    for name in LIMITS:
        value = got.get(name, got.get(name.replace("listpack", "ziplist"), ""))
        if value.isdigit():
            out[name] = int(value)
    return out
