"""A batch of rows grouped by the bucket each key lives in, laid out for one bulk write.

A version's writers send their rows a batch at a time (prescore.store.values.write). A
batch is sorted by bucket once, so that each bucket's keys go in one HSET and a fenced
script call's arguments are slices of a few lists: building a mapping per bucket and
walking it row by row cost a writer more than Redis spends storing the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prescore.encoding import keys


@dataclass(frozen=True)
class Grouped:
    """Rows in bucket order: bucket ``names[i]`` holds the ``counts[i]`` rows of ``keys``
    and ``payloads`` after those of the buckets before it. The sort is stable, so a key
    given twice keeps its last payload last (and so stored)."""

    names: list[str]
    counts: list[int]
    keys: list[str]
    payloads: list[bytes]

    def mappings(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        """Each bucket's name and its keys' payloads."""
        start = 0
        for name, count in zip(self.names, self.counts, strict=True):
            end = start + count
            yield name, dict(zip(self.keys[start:end], self.payloads[start:end], strict=True))
            start = end

    def pairs(self) -> list[str | bytes]:
        """``key, payload, key, payload, ...`` of every row, in bucket order."""
        out: list[str | bytes] = [b""] * (2 * len(self.keys))
        out[0::2] = self.keys
        out[1::2] = self.payloads
        return out


def group(dataset: str, version: str, buckets: int, rows: list[tuple[str, bytes]]) -> Grouped:
    """``rows`` (key, payload) grouped by their bucket among ``buckets`` of the version."""
    if not rows:
        return Grouped([], [], [], [])
    where = keys.bucket_indices([k for k, _ in rows], buckets)
    order = sorted(range(len(rows)), key=where.__getitem__)
    ordered = [where[i] for i in order]
    # where each bucket's rows begin: the first row, and each whose bucket is not the last's
    firsts = [0, *(i for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1])]
    ends = [*firsts[1:], len(rows)]
    return Grouped(
        names=keys.bucket_names(dataset, version, [ordered[i] for i in firsts]),
        counts=[end - start for start, end in zip(firsts, ends, strict=True)],
        keys=[rows[i][0] for i in order],
        payloads=[rows[i][1] for i in order],
    )
