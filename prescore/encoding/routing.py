"""Which version answers a key while a canary runs: a stable share of keys, by hash.

A key's slot is a keyed hash of its text (BLAKE2b, keyed with the canary's version id) in
[0, SCALE); the key goes to the canary when its slot is below the canary's share, in
basis points. So a key sees one version for the whole canary, raising the share only adds
keys to it (the ones already in stay in), and each new canary picks a different share of
keys: a key is not always the first to meet every new model. No I/O here: the lookup and
the bench route keys the same way, and golden tests pin the slots.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

SCALE = 10_000  # a share is in basis points: 5% is 500


def slot(key: str, salt: str) -> int:
    """The key's place in [0, SCALE) under ``salt`` (a canary's version id)."""
    keyed = _keyed(salt).copy()  # the key block hashed once per salt, not once per key
    keyed.update(key.encode())
    return int.from_bytes(keyed.digest(), "big") % SCALE


@functools.lru_cache(maxsize=16)
def _keyed(salt: str) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=8, key=salt.encode()[:64])


def to_canary(key: str, salt: str, share: int) -> bool:
    """Whether ``key`` is among the ``share`` (basis points) served by the canary."""
    return share > 0 and slot(key, salt) < share


def canary_keys(keys: Iterable[str], salt: str, share: int) -> set[str]:
    """The ``keys`` the canary serves (:func:`to_canary` of each, in one loop: a batch's)."""
    if share <= 0:
        return set()
    fresh, read = _keyed(salt).copy, int.from_bytes
    found = set()
    for key in keys:
        keyed = fresh()
        keyed.update(key.encode())
        if read(keyed.digest(), "big") % SCALE < share:
            found.add(key)
    return found


def share_of(percent: float) -> int:
    """A canary's share in basis points from a percentage in (0, 100]; ValueError
    naming the bound otherwise."""
    if not 0 < percent <= 100 or round(percent * SCALE / 100) < 1:  # NaN fails the first
        raise ValueError(f"a canary's percent must be from 0.01 to 100, got {percent!r}")
    return round(percent * SCALE / 100)


def percent_of(share: int) -> float:
    """A share in basis points as the percentage it was given as."""
    return share * 100 / SCALE
