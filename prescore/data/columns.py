"""A table's columns as a model sees them (prescore.models.signature checks a model's inputs
against them): what the job reads from Spark's schema and live inference from Arrow's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """A dataset column as the model sees it: a kind (string, int, float, binary) and
    whether it holds a list per row."""

    kind: str
    is_list: bool = False

    def describe(self) -> str:
        return f"list<{self.kind}>" if self.is_list else self.kind


Columns = Mapping[str, Column]  # column name -> type, one table
