"""What the lookup knows of each declared dataset: names in URLs, bodies and payloads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prescore.data.datasets import Catalog, Dataset
from prescore.encoding.codec import PayloadShape
from prescore.encoding.keys import KeyForm
from prescore.errors import NotFound


@dataclass(frozen=True)
class Served:
    """One dataset as the lookup serves it."""

    name: str
    kind: str
    route: str  # "" when only /v1/datasets/{name} serves it
    shape: PayloadShape  # key, list and entry field names of its payloads
    batch_field: str  # a batchGet body's list of keys (``keys`` is always taken too)
    key_form: KeyForm  # its key columns and contexts: how a key's text is written
    contexts: bool  # ?context= is taken
    k: int  # entries a payload holds (the OpenAPI document's default of k)
    live: bool  # a miss may be answered by live inference
    miss_log: bool = True  # misses are recorded (prescore.store.misslog)
    max_age_s: float | None = None  # an older answer is stale (lookup.live.freshness)
    stale: str = "refresh"  # refresh in the background, or ask live within the deadline
    scored: frozenset[str] = frozenset()  # the contexts its bulk run scores
    images: bool = False  # scored from image files: :predict takes an image, not features

    def falls_back(self, context: str | None) -> bool:
        """Whether a key missing in ``context`` is answered by its plain key: only in a
        context the bulk run does not score (one it scores has an answer of its own, a
        precomputed one or else a live one)."""
        return context not in self.scored

    @property
    def counts_entries(self) -> bool:
        """Whether payload entries can be counted by their marker (their first field)."""
        return bool(self.shape.entry_field)

    @classmethod
    def of(cls, d: Dataset) -> Served:
        return cls(
            name=d.name,
            kind=d.kind,
            route=d.route,
            shape=PayloadShape(d.key_field, d.list_field, d.entry_field),
            batch_field=d.batch_field,
            key_form=d.key_form,
            contexts=d.has_contexts,
            k=d.k if d.kind == "ranking" else 100,
            live=d.live,
            miss_log=d.miss_log,
            max_age_s=d.max_age_s,
            stale=d.stale,
            scored=frozenset(d.contexts.score if d.contexts else ()),
            images=bool(d.images),
        )


@dataclass(frozen=True)
class ServedDatasets:
    """Every served dataset, by name and by route."""

    by_name: Mapping[str, Served]

    @classmethod
    def of(cls, catalog: Catalog) -> ServedDatasets:
        return cls({name: Served.of(d) for name, d in catalog.datasets.items()})

    def get(self, name: str) -> Served:
        found = self.by_name.get(name)
        if found is None:
            raise NotFound(f"no dataset {name!r} is served here", code="unknown_dataset")
        return found

    def routes(self) -> list[tuple[str, Served]]:
        """(URL prefix of a single-key GET, dataset) for every dataset, declared routes too."""
        out = [(f"/v1/datasets/{s.name}/", s) for s in self.by_name.values()]
        out += [(f"/v1/{s.route}/", s) for s in self.by_name.values() if s.route]
        return out
