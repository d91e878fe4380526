"""A ranking dataset's candidate rules: which items each entity is scored against.

``all``: every item; ``match``: the items whose value in the rule's item column is among
the entity's values in its entity column (a list column or one value, :func:`rule_values`),
found through an index of the items' values (:func:`match_groups`); ``table``: the items a
candidates table lists for the entity, joined into the entities' frame as
:data:`CANDIDATES`. The run scores these pairs (jobs.ranking); a dry run counts them
without scoring (:func:`ranking_pairs`): ``match`` groups the entities by their value
(set), so the candidates of each distinct set are counted once on the driver; ``table``
counts the distinct listed items that exist (a run drops the others).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jobs.spark_tables import KEY_TEXT
from prescore.data.datasets import Dataset

CANDIDATES = "__candidates"  # the listed items' column a ``table`` rule joins in


def rule_values(value: Any) -> list[Any]:
    """A column value as a list of values (a list column, or one value)."""
    if value is None:
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    return [value]


def match_groups(item_values: Sequence[Any]) -> dict[Any, list[int]]:
    """A match rule's index: each value of the items' column -> the items holding it."""
    groups: dict[Any, list[int]] = {}
    for i, value in enumerate(item_values):
        for v in rule_values(value):
            groups.setdefault(v, []).append(i)
    return groups


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
