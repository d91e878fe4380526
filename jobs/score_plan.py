"""What a run of the bulk job would do, said before anything is scored (``--dry-run``):
the keys it would write, the model calls' units behind them (a ranking dataset's entity
x candidate pairs per context, a labels dataset's rows or images), and the time the last
published run's rate puts on them. Everything a run reads and checks is read and checked;
nothing is written.

A ranking dataset's pairs are counted without scoring (jobs.candidates.ranking_pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
