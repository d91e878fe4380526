"""What the lookup knows about each dataset's payload shape (see prescore.codec)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """One served dataset: its names in URLs and bodies and the list its payloads hold."""

    name: str  # dataset in the store: "reco" | "tags"
    noun: str  # what a miss message calls the answer
    id_field: str  # "user_id" | "image_id" (in payloads and per-id errors)
    ids_field: str  # "user_ids" | "image_ids" (batch request bodies)
    list_field: str  # "items" | "tags"
    # Every list entry of a codec payload holds this exact byte string once, and a JSON
    # string value cannot (its quotes would be escaped), so counting it counts entries
    # without decoding the payload.
    entry_marker: bytes


RECO = DatasetSpec(
    name="reco",
    noun="recommendations",
    id_field="user_id",
    ids_field="user_ids",
    list_field="items",
    entry_marker=b'"hotel_id":',
)
TAGS = DatasetSpec(
    name="tags",
    noun="tags",
    id_field="image_id",
    ids_field="image_ids",
    list_field="tags",
    entry_marker=b'"tag":',
)
