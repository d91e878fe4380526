"""Pre-switch data gates: a new version is checked against the live one before the pointer
moves (Venice's and Voldemort's pre-swap checks, and more).

Every writer keeps a sample of the keys it wrote (at most ``gates.sample`` of them, kept
with the version in its registry entry), so the gates cost what the sample costs, never a
walk of the keyspace. Against the live version:

- ``rows``: the new row count within a band of the live one's (``[0.5, 2.0]``);
- ``coverage``: at least this share of the live version's sampled keys are in the new one;
- ``drift``: the population stability index of the entries' scores (the new sample's
  against the live sample's), at most this;
- ``payload_size``: the new median payload size within a band of the live one's;
- ``decode``: every sampled payload reads as the lookup reads it: a JSON object with its
  key and list fields, each entry opening with the entry field and carrying a numeric
  score, never fewer entry markers than entries (prescore.encoding.codec.PayloadShape).

A first version (nothing live) is checked by ``decode`` alone. A failed gate leaves the
version unpublished, kept as ``gated`` with this report (``prescore versions``), until an
operator releases it (``prescore release``, recorded) or gc removes it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from prescore.data.datasets import Dataset, Gates
from prescore.encoding.codec import PayloadShape, envelope
from prescore.encoding.registry_entry import VersionInfo
from prescore.store import values
from prescore.store.redis_client import Client
from prescore.store.values import Placed

_BINS = 10
# scores a delta's sample needs before its drift says anything (a few scores from the
# same distribution as the live version's still land in few bins), unless it fills the
# sample a version gets
DRIFT_MIN_SCORES = 50 * _BINS
SIZE_MIN_KEYS = 100  # payloads a delta's sample needs before its median size says anything


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str = ""


@dataclass
class GateReport:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    profile: Profile | None = None  # the new version's sample's, recorded with it
    # sampled lists not best first (told, not gated: `k` takes the first entries as stored)
    unordered: int = 0

    def to_json(self) -> dict[str, Any]:
        doc = {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}
        doc |= {"unordered": self.unordered} if self.unordered else {}
        return doc | ({"profile": asdict(self.profile)} if self.profile else {})

    def summary(self) -> str:
        failed = [c for c in self.checks if not c.passed]
        if not failed:
            return "all gates passed"
        return "; ".join(
            f"{c.name} {c.value} outside {c.limit}" + (f" ({c.detail})" if c.detail else "")
            for c in failed
        )


class Reservoir:
    """A uniform sample of at most ``size`` of the keys offered one batch at a time
    (Algorithm R, its draws made a batch at a time: the i-th key offered replaces a
    kept one with probability size / i)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seen = size, 0
        self.keys: list[str] = []
        self._rng = np.random.default_rng(seed)

    def offer(self, found: Sequence[str]) -> None:
        room = max(self.size - len(self.keys), 0)
        self.keys.extend(found[:room])
        self.seen += min(room, len(found))
        rest = len(found) - room
        if rest <= 0:
            return
        seen = np.arange(self.seen + 1, self.seen + rest + 1)  # each key's own count
        slots = (self._rng.random(rest) * seen).astype(np.int64)  # uniform in [0, seen)
        for at in np.flatnonzero(slots < self.size).tolist():  # in order: later ones win
            self.keys[slots[at]] = found[room + at]
        self.seen += rest


def sample_keys(found: Sequence[str], size: int) -> list[str]:
    """At most ``size`` of ``found``: those of the lowest :func:`ranks`, a sample uniform
    over keys that a rerun over the same keys draws again, so its gates compare alike."""
    lowest = np.argsort(ranks(found), kind="stable")[:size]
    return [found[i] for i in lowest.tolist()]


def sampled(found: Sequence[str], share: float, floor: int) -> list[str]:
    """One batch's part of a run's sample: the keys of ``found`` whose rank is in the
    lowest ``share`` of ranks (about ``share`` of all keys, whichever task holds them),
    and at least its ``floor`` lowest, which hold the sample up when a run writes fewer
    keys than it planned."""
    if not found:
        return []
    rank = ranks(found)
    keep = rank < np.uint64(min(int(share * 2**64), 2**64 - 1))
    if floor:  # the floor lowest, unordered: a partition, not a sort
        keep[np.argpartition(rank, min(floor, len(rank)) - 1)[:floor]] = True
    return [found[i] for i in np.flatnonzero(keep).tolist()]


def sample_share(size: int, keys: int) -> float:
    """The share of a run's ``keys`` its tasks report so that the lowest ``size`` ranks
    are among them (twice that, in expectation); 0: the run's size is not known."""
    return min(1.0, 2 * size / keys) if keys else 0.0


def ranks(found: Sequence[str], salt: str = "0123456789123456") -> np.ndarray:
    """Each key's place in every sample: a 64-bit hash of its text (pandas' SipHash with
    a fixed key, ``salt``), uniform over keys and alike in every process."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(found, dtype=object), hash_key=salt, categorize=False)


def _loaded(raw: bytes | None) -> Any:
    """A stored payload parsed (None: missing, or not JSON), once for every gate."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except ValueError:
        return None


def _scores(payloads: Sequence[bytes | None], list_field: str) -> np.ndarray:
    return _doc_scores([_loaded(raw) for raw in payloads], list_field)


def _doc_scores(docs: Sequence[Any], list_field: str) -> np.ndarray:
    out = []
    for doc in docs:
        entries = doc.get(list_field) if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            score = entry.get("score") if isinstance(entry, dict) else None
            if isinstance(score, int | float) and math.isfinite(score):
                out.append(float(score))
    return np.asarray(out, np.float64)


@dataclass(frozen=True)
class Profile:
    """What the distribution gates compare with, of one version's sample, recorded with
    it (``gates.profile`` in its entry), so that a delta is gated against the live version
    without reading its sample again: the scores' decile edges and each bin's share, and
    the median payload size. No edges: the sample held no score."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]
    median_size: float

    @classmethod
    def of(cls, payloads: Sequence[bytes | None], list_field: str) -> Profile:
        size = float(np.median([len(r) for r in payloads if r is not None] or [0]))
        return cls.of_scores(_scores(payloads, list_field), size)

    @classmethod
    def of_scores(cls, scores: np.ndarray, size: float = 0.0) -> Profile:
        if not len(scores):
            return cls((), (), size)
        edges = np.unique(np.quantile(scores, np.linspace(0, 1, _BINS + 1)))
        if len(edges) < 2:
            edges = np.array([scores.min() - 1e-9, scores.max() + 1e-9])
        shares = np.histogram(np.clip(scores, edges[0], edges[-1]), edges)[0] / len(scores)
        return cls(tuple(edges.tolist()), tuple(shares.tolist()), size)

    @classmethod
    def from_json(cls, doc: Any) -> Profile | None:
        """The profile recorded with a version (None: none, or not as written)."""
        try:
            return cls(tuple(doc["edges"]), tuple(doc["shares"]), float(doc["median_size"]))
        except (TypeError, KeyError, ValueError):
            return None

    def psi(self, actual: np.ndarray) -> float:
        """Population stability index of ``actual`` against this sample's deciles."""
        if not self.edges or not len(actual):
            return 0.0
        edges = np.asarray(self.edges)
        a = np.histogram(np.clip(actual, edges[0], edges[-1]), edges)[0] / len(actual)
        e, a = np.maximum(np.asarray(self.shares), 1e-4), np.maximum(a, 1e-4)
        return float(np.sum((a - e) * np.log(a / e)))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of ``actual`` against ``expected`` (deciles of expected)."""
    return Profile.of_scores(expected).psi(actual)


def decodes(
    raw: bytes, shape: PayloadShape, key: str, doc: Any = None, scores: list[float] | None = None
) -> str:
    """Why ``raw`` does not read as the lookup reads it ("" when it does); ``doc``: it
    parsed already (None: parse it here); ``scores`` gets its entries' finite scores (the
    distribution gates', from the same walk; those before a fault too)."""
    try:
        doc = orjson.loads(raw) if doc is None else doc
        envelope(raw, dataset_version="v")
    except ValueError as exc:
        return f"not a JSON object: {exc}"[:120]
    own = doc.get(shape.key_field) if isinstance(doc, dict) else None
    if not isinstance(own, str) or not (key == own or key.startswith(own + "|")):
        return f"its {shape.key_field} is not its key"  # a context follows the key
    entries = doc.get(shape.list_field)
    if not isinstance(entries, list):
        return f"no list {shape.list_field}"
    for entry in entries:
        score = entry.get("score") if isinstance(entry, dict) else None
        if not isinstance(score, int | float):
            return "an entry without a numeric score"
        if shape.entry_field and next(iter(entry), None) != shape.entry_field:
            return f"an entry not opening with {shape.entry_field}"
        if scores is not None and math.isfinite(score):
            scores.append(float(score))
    if shape.entry_field and raw.count(shape.entry_marker) < len(entries):
        # the lookup cuts a list without decoding when the marker count says it is short
        # enough: more markers than entries only costs a decode, fewer would serve too many
        return "fewer entry markers than entries: the lookup would not cut it"
    return ""


def _band(name: str, value: float, band: Sequence[float]) -> Check:
    lo, hi = band
    return Check(name, lo <= value <= hi, round(value, 4), f"[{lo:g}, {hi:g}]")


def check(
    client: Client,
    dataset: Dataset,
    new: VersionInfo,
    new_rows: int,
    new_sample: Sequence[str],
    live: VersionInfo | None,
    gates: Gates,
    whole: bool = True,
) -> GateReport:
    """Every gate of ``new`` (about to be published) against ``live`` (None: the first);
    not ``whole`` (a delta of the live version's keys, prescore.store.deltas): without
    ``rows`` and ``coverage``, which compare whole versions."""
    shape = PayloadShape(dataset.key_field, dataset.list_field, dataset.entry_field)
    sample = list(new_sample)[: gates.sample]
    new_at = Placed(dataset.name, new.version, new.buckets)
    new_raw = values.read(client, new_at, sample)
    found: list[float] = []  # the scores of the payloads that decode
    bad: list[tuple[str, str]] = []
    unordered = 0
    for k, raw in zip(sample, new_raw, strict=True):
        scores: list[float] = []
        why = decodes(raw, shape, k, _loaded(raw), scores) if raw is not None else ""
        if why:
            bad.append((k, why))
        else:
            found += scores
            unordered += any(a < b for a, b in itertools.pairwise(scores))
    missing = sum(1 for raw in new_raw if raw is None)
    checks = [
        Check(
            "decode",
            not bad and not missing,
            float(len(bad) + missing),
            "0 of the sample",
            bad[0][0] + ": " + bad[0][1]
            if bad
            else (f"{missing} sampled keys missing" if missing else ""),
        )
    ]
    new_scores = np.asarray(found, np.float64)
    sizes = [len(r) for r in new_raw if r is not None]
    profile = Profile.of_scores(new_scores, float(np.median(sizes or [0])))
    live_sample = list((live.extra or {}).get("sample", []))[: gates.sample] if live else []
    if live is not None and live.rows and live_sample:
        if whole:
            checks += _whole(client, new_at, new_rows, live, live_sample, gates)
        old = None if whole else Profile.from_json(live.extra.get("gates", {}).get("profile"))
        if old is None:  # a version published before profiles, or a whole one: its sample
            live_at = Placed(dataset.name, live.version, live.buckets)
            old = Profile.of(values.read(client, live_at, live_sample), shape.list_field)
        full = whole or len(sample) >= gates.sample
        checks += _distribution(new_scores, sizes, old, gates, full)
    return GateReport(all(c.passed for c in checks), checks, profile, unordered)


def _distribution(
    new_scores: np.ndarray, sizes: list[int], old: Profile, gates: Gates, full: bool
) -> list[Check]:
    """``drift`` and ``payload_size`` against the live version's profile; a delta's
    sample short of ``full`` is checked once it holds enough to say anything."""
    checks = []
    if full or len(new_scores) >= DRIFT_MIN_SCORES:
        drift = old.psi(new_scores)
        checks.append(Check("drift", drift <= gates.drift, round(drift, 4), f"<= {gates.drift:g}"))
    else:
        few = f"not checked: {len(new_scores)} scores, fewer than {DRIFT_MIN_SCORES}"
        checks.append(Check("drift", True, None, f"<= {gates.drift:g}", few))
    if old.median_size and (full or len(sizes) >= SIZE_MIN_KEYS):
        ratio = float(np.median(sizes or [0]) / old.median_size)
        checks.append(_band("payload_size", ratio, gates.payload_size))
    elif old.median_size:
        few = f"not checked: {len(sizes)} payloads, fewer than {SIZE_MIN_KEYS}"
        checks.append(
            replace(_band("payload_size", 1.0, gates.payload_size), value=None, detail=few)
        )
    return checks


def _whole(
    client: Client,
    new_at: Placed,
    new_rows: int,
    live: VersionInfo,
    live_sample: list[str],
    gates: Gates,
) -> list[Check]:
    """The gates that compare whole versions: ``rows`` and ``coverage``."""
    in_new = values.read_raw(client, new_at, live_sample)
    covered = sum(1 for raw in in_new if raw is not None) / len(live_sample)
    return [
        _band("rows", new_rows / live.rows, gates.rows),
        Check("coverage", covered >= gates.coverage, round(covered, 4), f">= {gates.coverage:g}"),
    ]


def describe(report: Mapping[str, Any]) -> str:
    """One line of a stored report, for listings."""
    failed = [c for c in report.get("checks", []) if not c.get("passed")]
    return ", ".join(f"{c['name']}={c['value']} (want {c['limit']})" for c in failed) or "passed"
