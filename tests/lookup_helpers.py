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
from tests.helpers import served_catalog

SCORED_AT = "2026-11-24T10:00:00Z"
SHOP = PayloadShape("customer_id", "items", "product_id")  # the shapes tests/served.toml declares
COLOURS = PayloadShape("image_id", "colours", "colour")
MODELS = {"shop": "shop", "colours": "colour-tagger"}  # dataset -> its declared model


def served_settings(settings: Settings, var: Path) -> Settings:
    """``settings`` serving tests/served.toml (shop and colours), paths under ``var``."""
    return dataclasses.replace(settings, catalog=served_catalog(var))


def shop_payload(
    customer_id: str,
    n: int,
    model_version: str,
    context: str | None = None,
    source: str | None = None,
) -> bytes:
    """A customer's ``n`` products p0, p1, ... scored 1.0, 0.99, ... (best first)."""
    items = [(f"p{j}", round(1.0 - j / 100, 4)) for j in range(n)]
    return codec.encode_payload(
        SHOP,
        customer_id,
        items,
        model="shop",
        model_version=model_version,
        scored_at=SCORED_AT,
        context=context,
        source=source,
    )


def colours_payload(image_id: str, colours: list[tuple[str, float]], model_version: str) -> bytes:
    return codec.encode_payload(
        COLOURS,
        image_id,
        colours,
        model="colour-tagger",
        model_version=model_version,
        scored_at=SCORED_AT,
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


def publish_customers(
    client: Client, settings: Settings, customers: int, model_version: str = "m1", n: int = 10
) -> str:
    rows = [(f"c{i}", shop_payload(f"c{i}", n, model_version)) for i in range(customers)]
    return publish(client, settings, "shop", rows, model_version)
