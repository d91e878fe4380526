"""A dataset's version registry entry (``ps:{dataset}:versions``, prescore.encoding.keys):
its fields and its bytes; no I/O. The registry's transitions are prescore.store.transitions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from prescore.encoding.codec import dumps


def utcnow_iso() -> str:
    """Now, as a registry entry's timestamps read (UTC, to the second)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a dataset's version registry."""

    version: str
    # writing | published | retired | failed | gated (failed its gates) |
    # staged (a canary's candidate) | delta (attached to a version); read back as dead: a
    # writing one whose writer's lease lapsed (Versions.all)
    status: str
    model: str = ""
    model_version: str = ""
    rows: int = 0
    buckets: int = 0  # its keys' hash buckets (prescore.encoding.keys); 0: a plain key per key
    started_at: str = ""
    finished_at: str = ""
    published_at: str = ""
    note: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # field by field, not asdict: its deep copy of ``extra`` (a version's key sample)
        # is most of a delta's registry writes
        return dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> VersionInfo:
        # orjson: a publish reads entries many times, each with its version's key sample
        # (it reads an integer past 64 bits as a float; no entry holds one)
        doc = orjson.loads(raw)
        return cls(**{k: v for k, v in doc.items() if k in cls.__dataclass_fields__})

    def replace(self, **changes: Any) -> VersionInfo:
        """A copy with ``changes`` (``extra`` shared, not copied: nothing changes one)."""
        return dataclasses.replace(self, **changes)


FINAL = ("failed", "retired")  # a version's last states: its keys are removed, or going


def sort_versions(infos: Sequence[VersionInfo]) -> list[VersionInfo]:
    """Newest first (version ids sort by their UTC timestamp)."""
    return sorted(infos, key=lambda i: i.version, reverse=True)
