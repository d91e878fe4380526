"""What a run of the bulk job would do, said before anything is scored (``--dry-run``):
the keys it would write, the model calls' units behind them (a ranking dataset's entity
x candidate pairs per context, a labels dataset's rows or images), and the time the last
published run's rate puts on them. Everything a run reads and checks is read and checked;
nothing is written.

Pairs are counted without scoring: ``all`` is entities x items; ``match`` groups the
entities by their value (set) in the rule's column, so the candidates of each distinct
set are counted once on the driver; ``table`` counts the distinct listed items that
exist (a run drops the others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from jobs.ranking import CANDIDATES, match_groups, rule_values
from jobs.spark_tables import KEY_TEXT
from prescore.data.datasets import Dataset
from prescore.encoding.registry_entry import VersionInfo
from prescore.progress import duration


@dataclass(frozen=True)
class Plan:
    dataset: str
    model: str
    keys: int  # what the version would hold (entities x contexts, or rows)
    work: int  # what the model would score: pairs, rows or images
    unit: str
    items: int = 0  # a ranking dataset's items
    contexts: int = 1
    rate: float = 0.0  # the last published run's units a second (0: none recorded)

    @property
    def estimate_s(self) -> float | None:
        return self.work / self.rate if self.rate else None

    def lines(self) -> list[str]:
        per = (
            f" ({self.work / self.keys:,.1f} per key)" if self.keys and self.unit == "pairs" else ""
        )
        out = [
            f"{self.dataset}: dry run, nothing scored or written; with {self.model}:",
            f"  keys to write {self.keys:,}, {self.unit} to score {self.work:,}{per}",
        ]
        if self.items:
            out.append(f"  items {self.items:,}, contexts {self.contexts}")
        est = self.estimate_s
        out.append(
            f"  about {duration(est)} at the last run's {self.rate:,.0f} {self.unit}/s"
            if est is not None
            else "  no earlier run's rate recorded: no time estimate"
        )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimate_s": self.estimate_s}


def last_rate(infos: Sequence[VersionInfo], unit: str) -> float:
    """Units a second of the newest published run that recorded them in ``unit``."""
    for info in infos:  # newest first
        extra = info.extra
        if info.status == "published" and extra.get("unit") == unit and extra.get("seconds"):
            return float(extra.get("scored", 0)) / float(extra["seconds"])
    return 0.0


def ranking_pairs(
    entities: Any, dataset: Dataset, items: Mapping[str, list[Any]]
) -> tuple[int, int]:
    """(entities, pairs) of one context: ``entities`` is the frame jobs.ranking.plan
    selected (its key text, the rule's column), ``items`` the items' columns it read."""
    from pyspark.sql import functions as F

    rule = dataset.candidates
    n_items = len(next(iter(items.values()), []))
    if rule.rule == "all":
        n = entities.count()
        return n, n * n_items
    if rule.rule == "table":  # the listed items that exist, each once (as a run scores)
        item_key = dataset.items.key[0] if dataset.items else ""
        known = entities.sparkSession.createDataFrame([(i,) for i in items[item_key]], ["_i"])
        listed = entities.select(KEY_TEXT, F.explode(CANDIDATES).alias("_i")).distinct()
        return entities.count(), listed.join(F.broadcast(known), "_i").count()
    index = match_groups(items[rule.item_column])
    n = pairs = 0
    for row in entities.groupBy(rule.entity_column).count().collect():
        found: set[int] = set()
        for v in rule_values(row[0]):
            found.update(index.get(v, ()))
        n += row["count"]
        pairs += row["count"] * len(found)
    return n, pairs
