"""What the writers, version gc, deltas, canaries and an operator's switches ask of one
dataset's versions.

prescore.store.versions.Versions is the one implementation; it imports the writers and
gc modules to delegate to them, so they name it by this Protocol instead of importing it
back, and the store family has no import circle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prescore.encoding.registry_entry import VersionInfo
from prescore.settings import StoreSettings
from prescore.store.redis_client import Client
from prescore.store.transitions import Change, Registry
from prescore.store.values import Placed


class DatasetVersions(Protocol):
    """The registry, pointer and leases of one dataset (prescore.store.versions)."""

    client: Client
    dataset: str
    settings: StoreSettings
    registry: Registry

    def current(self) -> str | None: ...

    def writing(self, version: str, status: str = "writing") -> tuple[bytes, VersionInfo]: ...

    def verify(self, version: str, expected_rows: int) -> int: ...

    def held(self, version: str) -> tuple[str, str] | None: ...

    def finish(self, version: str, change: Change) -> None: ...

    def raw(self, version: str) -> bytes: ...

    def all(self) -> list[VersionInfo]: ...

    def placed(self, version: str) -> Placed: ...

    def count_keys(self, version: str) -> int: ...

    def renew(self, version: str) -> bool: ...

    def apply(self, decide: Callable[[], Change], version: str) -> Change: ...

    def fail(self, version: str, reason: str, status: str = "failed") -> None: ...

    def reap_dead(self) -> list[str]: ...

    def forget(self, version: str) -> None: ...

    def delete_keys(self, version: str) -> int: ...
