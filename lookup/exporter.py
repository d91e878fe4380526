"""What the datasets' registries say, as Prometheus metrics read when /metrics is scraped.

A bulk job records its figures with the version it publishes (duration, rows, keys or
pairs scored, gates); reading them from Redis at scrape time exports a batch job's
figures with no Pushgateway, and every lookup pod exports the same values.

| metric | labels | what |
| --- | --- | --- |
| prescore_dataset_info | dataset, version, model, model_version | 1 for the live version |
| prescore_dataset_age_seconds | dataset | since the live version was published |
| prescore_dataset_rows | dataset | keys of the live version |
| prescore_dataset_versions | dataset, status | versions by status (published, gated, ...) |
| prescore_job_last_status | dataset, status | 1 for the status of the newest version |
| prescore_job_last_success_timestamp_seconds | dataset | when the live version was published |
| prescore_job_duration_seconds | dataset | the run that made it, up to its switch |
| prescore_job_scored | dataset, unit | what that run scored (pairs, rows, images) |
| prescore_job_rate | dataset, unit | scored per second |
| prescore_dataset_canary_percent | dataset, version | the share of keys a canary serves |
| prescore_dataset_miss_log_keys | dataset | keys in the miss log (lookup.misslog) |
| prescore_dataset_misses_scored | dataset | keys of the miss log the last run scored |
| prescore_dataset_misses_scored_ratio | dataset | their share of the log at that run |
| prescore_dataset_shadow_min_overlap | dataset | the declared shadow agreement floor |
| prescore_lookup_fallback_deadline_seconds | | PRESCORE_FALLBACK_TIMEOUT_S |
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from lookup.settings import LookupSettings
from prescore.encoding import keys
from prescore.encoding.registry_entry import VersionInfo
from prescore.store import canaries, deltas
from prescore.store.redis_client import OUTAGES, Client

STATUSES = ("published", "staged", "writing", "dead", "gated", "failed", "retired")
D, DU = ["dataset"], ["dataset", "unit"]
GAUGES = {
    "info": (
        "prescore_dataset_info",
        "The live version of each dataset",
        ["dataset", "version", "model", "model_version"],
    ),
    "age": ("prescore_dataset_age_seconds", "Since the live version was published", D),
    "rows": ("prescore_dataset_rows", "Keys of the live version", D),
    "versions": ("prescore_dataset_versions", "Versions by status", ["dataset", "status"]),
    "last": (
        "prescore_job_last_status",
        "The newest version's status (writing, published, failed, gated, dead, ...)",
        ["dataset", "status"],
    ),
    "success": (
        "prescore_job_last_success_timestamp_seconds",
        "When the live version was published",
        D,
    ),
    "duration": (
        "prescore_job_duration_seconds",
        "The run that made the live version, up to its switch",
        D,
    ),
    "scored": ("prescore_job_scored", "What that run scored", DU),
    "rate": ("prescore_job_rate", "Scored per second by that run", DU),
    "misses": ("prescore_dataset_miss_log_keys", "Keys in the miss log", D),
    "deltas": ("prescore_dataset_deltas", "Deltas of the live version", D),
    "delta_rows": ("prescore_dataset_delta_rows", "Keys in the live version's deltas", D),
    "canary": (
        "prescore_dataset_canary_percent",
        "The share of keys served by a canary beside the live version, in percent",
        ["dataset", "version"],
    ),
    "from_log": ("prescore_dataset_misses_scored", "Miss-log keys the last run scored", D),
    "log_share": (
        "prescore_dataset_misses_scored_ratio",
        "Share of the miss log the last run scored",
        D,
    ),
    "hashtables": (
        "prescore_dataset_bucket_hashtable_ratio",
        "Share of the live version's sampled buckets Redis keeps as hashtables, not listpacks",
        D,
    ),
    "min_overlap": (
        "prescore_dataset_shadow_min_overlap",
        "Shadow checks: the declared floor of top-K agreement",
        D,
    ),
}


def _epoch(iso: str) -> float | None:
    try:
        parsed = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
        return parsed.replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


class RegistryCollector:
    """A prometheus_client collector over the registries of the served datasets."""

    def __init__(self, client: Client, min_overlaps: dict[str, float], deadline_s: float) -> None:
        self.client = client
        self.datasets = sorted(min_overlaps)
        self.min_overlaps = min_overlaps
        self.deadline_s = deadline_s

    @classmethod
    def of(cls, client: Client, settings: LookupSettings) -> RegistryCollector:
        catalog = settings.core.catalog
        floors = {n: catalog.datasets[n].shadow_min_overlap for n in catalog.names()}
        return cls(client, floors, settings.fallback_timeout_s)

    def describe(self) -> list[Any]:
        return []  # read at scrape time only

    def collect(self) -> Iterator[Any]:
        g = {k: GaugeMetricFamily(name, text, labels=ls) for k, (name, text, ls) in GAUGES.items()}
        now = time.time()
        deadline = GaugeMetricFamily(
            "prescore_lookup_fallback_deadline_seconds", "The deadline of one live call"
        )
        deadline.add_metric([], self.deadline_s)
        yield deadline
        for name in self.datasets:
            g["min_overlap"].add_metric([name], self.min_overlaps[name])
            try:
                self._one(name, g, now)
            except OUTAGES:  # a scrape during an outage shows what it could read
                continue
        yield from g.values()

    def _one(self, name: str, g: dict[str, Any], now: float) -> None:
        live = self.client.get(keys.pointer_key(name))
        raw = self.client.hgetall(keys.registry_key(name))
        infos = [VersionInfo.from_bytes(v) for v in raw.values()]
        counts = {s: 0 for s in STATUSES}
        newest: tuple[str, str] | None = None  # (version, status); ids sort by time
        for info in infos:
            alive = info.status != "writing" or self.client.exists(
                keys.lease_key(name, info.version)
            )
            status = info.status if alive else "dead"
            counts[status] = counts.get(status, 0) + 1
            if "delta_of" in info.extra:  # an incremental publish, not a run: its own CLI says
                continue
            if newest is None or info.version > newest[0]:
                newest = (info.version, status)
        for status, n in counts.items():
            g["versions"].add_metric([name, status], n)
        if newest is not None:
            g["last"].add_metric([name, newest[1]], 1)
        g["misses"].add_metric([name], self.client.zcard(keys.miss_log_key(name)))
        if live is None:
            return
        version = live.decode() if isinstance(live, bytes) else live
        current = next((i for i in infos if i.version == version), None)
        if current is None:
            return
        info = current
        listed = set(deltas.read(self.client, name)[1])
        g["deltas"].add_metric([name], len(listed))
        if (canary := canaries.read(self.client, name)[1]) is not None:
            g["canary"].add_metric([name, canary.version], canary.percent)
        g["delta_rows"].add_metric([name], sum(i.rows for i in infos if i.version in listed))
        g["info"].add_metric([name, version, info.model, info.model_version], 1)
        g["rows"].add_metric([name], info.rows)
        published = _epoch(info.published_at)
        if published is not None:
            g["age"].add_metric([name], max(0.0, now - published))
            g["success"].add_metric([name], published)
        figures = info.extra or {}
        if "seconds" in figures:
            unit = str(figures.get("unit", "rows"))
            g["duration"].add_metric([name], float(figures["seconds"]))
            g["scored"].add_metric([name, unit], float(figures.get("scored", 0)))
            if figures["seconds"]:
                g["rate"].add_metric(
                    [name, unit], float(figures.get("scored", 0)) / float(figures["seconds"])
                )
        sampled = figures.get("buckets") or {}
        if sampled.get("sampled"):
            g["hashtables"].add_metric([name], sampled["hashtables"] / sampled["sampled"])
        if "from_miss_log" in figures:
            g["from_log"].add_metric([name], float(figures["from_miss_log"]))
            logged = float(figures.get("miss_log_keys") or 0)
            if logged:
                g["log_share"].add_metric([name], float(figures["from_miss_log"]) / logged)
