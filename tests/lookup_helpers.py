"""Publishing test data for the lookup tests straight through the core (no Spark)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from prescore.encoding import codec
from prescore.encoding.codec import PayloadShape
from prescore.settings import Settings
from prescore.store.redis_client import Client
from prescore.store.versions import Versions, write_payloads
from tests.helpers import demo_catalog

SCORED_AT = "2026-11-24T10:00:00Z"
RECO = PayloadShape("user_id", "items", "hotel_id")  # the demo's shapes (prescore.toml)
TAGS = PayloadShape("image_id", "tags", "tag")
MODELS = {"reco": "reco", "tags": "tagger"}  # the demo's dataset -> model name


def demo_settings(settings: Settings, var: Path) -> Settings:
    """``settings`` serving the demo's declarations (reco and tags), paths under ``var``."""
    return dataclasses.replace(settings, catalog=demo_catalog(var))


def reco_payload(
    user_id: str,
    n: int,
    model_version: str,
    context: str | None = None,
    source: str | None = None,
) -> bytes:
    """A user's ``n`` hotels h0, h1, ... scored 1.0, 0.99, ... (best first)."""
    items = [(f"h{j}", round(1.0 - j / 100, 4)) for j in range(n)]
    return codec.encode_payload(
        RECO,
        user_id,
        items,
        model="reco",
        model_version=model_version,
        scored_at=SCORED_AT,
        context=context,
        source=source,
    )


def tags_payload(image_id: str, tags: list[tuple[str, float]], model_version: str) -> bytes:
    return codec.encode_payload(
        TAGS, image_id, tags, model="tagger", model_version=model_version, scored_at=SCORED_AT
    )


def publish(
    client: Client,
    settings: Settings,
    dataset: str,
    rows: Iterable[tuple[str, bytes]],
    model_version: str,
    model: str | None = None,
) -> str:
    """Write ``rows`` as a new version of ``dataset`` and publish it; returns the version."""
    versions = Versions(client, dataset, settings.store)
    info = versions.begin(model or MODELS.get(dataset, dataset), model_version)
    written = write_payloads(client, dataset, info.version, list(rows))
    versions.publish(info.version, written)
    return info.version


def publish_users(
    client: Client, settings: Settings, users: int, model_version: str = "m1", n: int = 10
) -> str:
    rows = [(f"u{i}", reco_payload(f"u{i}", n, model_version)) for i in range(users)]
    return publish(client, settings, "reco", rows, model_version)
