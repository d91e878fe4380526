"""Publishing test data for the lookup tests straight through the core (no Spark)."""

from __future__ import annotations

from collections.abc import Iterable

from prescore import codec
from prescore.redis_client import Client
from prescore.settings import Settings
from prescore.versions import Versions, write_payloads

SCORED_AT = "2026-11-24T10:00:00Z"


def reco_payload(user_id: str, n: int, model_version: str, context: str | None = None) -> bytes:
    items = [(f"h{j}", round(1.0 - j / 100, 4)) for j in range(n)]
    return codec.encode_recommendations(
        user_id, items, model="reco", model_version=model_version, scored_at=SCORED_AT,
        context=context,
    )  # fmt: skip


def tags_payload(image_id: str, tags: list[tuple[str, float]], model_version: str) -> bytes:
    return codec.encode_tags(
        image_id, tags, model="tagger", model_version=model_version, scored_at=SCORED_AT
    )


def publish(
    client: Client, settings: Settings, dataset: str, rows: Iterable[tuple[str, bytes]],
    model_version: str,
) -> str:  # fmt: skip
    """Write ``rows`` as a new version of ``dataset`` and publish it; returns the version."""
    versions = Versions(client, dataset, settings.store)
    info = versions.begin("reco" if dataset == "reco" else "tagger", model_version)
    written = write_payloads(client, dataset, info.version, list(rows))
    versions.publish(info.version, written)
    return info.version


def publish_users(
    client: Client, settings: Settings, users: int, model_version: str = "m1", n: int = 10
) -> str:
    rows = [(f"u{i}", reco_payload(f"u{i}", n, model_version)) for i in range(users)]
    return publish(client, settings, "reco", rows, model_version)
