"""What live inference reads a key's inputs from: the dataset's own tables and images.

A ranking dataset's items (all of them, with the candidate rule's index) and contexts
are read at start with prescore.data.local_tables (on file://, hdfs://, s3:// or gs://) and read
again every ``FALLBACK_TABLES_REFRESH_S``. Tables keyed by entity (its entities, a
candidate table, a labels dataset's rows) are not held: a request reads the rows of its
keys (fallback.keyed_rows), so memory does not grow with them and an entity added to a
local table is answered at once (an ``hdfs://``, ``s3://`` or ``gs://`` one's after the next
:meth:`Inputs.maintain`, which copies its new files); a large one is indexed on local
disk in the background. A labels dataset reads an image by key from its folder
(prescore.data.images). A refresh that fails keeps the tables it had.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fallback.keyed_rows import KeyedRows
from prescore.data import local_tables
from prescore.data.datasets import Dataset, Table
from prescore.data.images import ImageStore
from prescore.encoding.keys import KeyForm
from prescore.errors import PrescoreError

log = logging.getLogger(__name__)


def _values(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and value != value):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    return [value]


@dataclass(frozen=True)
class RankingTables:
    """One read of a ranking dataset's tables."""

    items: pd.DataFrame  # in table order; positions are item indices
    item_ids: list[str]
    index: Mapping[Any, np.ndarray]  # match rule: value -> item indices
    item_at: Mapping[str, int]  # item key -> index (table rule)
    entities: KeyedRows | None  # by key, read per request
    candidates: KeyedRows | None  # table rule: each entity's listed items, by key
    contexts: pd.DataFrame | None  # indexed by context value


def keyed(table: Table, form: KeyForm, webhdfs_url: str, had: KeyedRows | None) -> KeyedRows:
    """The keyed rows of ``table``: those it ``had``, kept with their index and copy (an
    ``hdfs://`` table's new files are copied by :meth:`Inputs.maintain`), or new ones."""
    return had if had is not None else KeyedRows(table, form, webhdfs_url)


def read_ranking(
    dataset: Dataset, webhdfs_url: str, had: RankingTables | None = None
) -> RankingTables:
    assert dataset.entities is not None and dataset.items is not None
    items = local_tables.read(dataset.items, webhdfs_url=webhdfs_url).reset_index(drop=True)
    key = dataset.items.key[0]
    item_ids = items[key].astype(str).tolist()
    rule = dataset.candidates
    index: dict[Any, list[int]] = {}
    if rule.rule == "match":
        for i, value in enumerate(items[rule.item_column]):
            for v in _values(value):
                index.setdefault(v, []).append(i)
    form = dataset.key_form
    entities = keyed(dataset.entities, form, webhdfs_url, had.entities if had else None)
    candidates = None
    if rule.rule == "table" and rule.table is not None:
        candidates = keyed(rule.table, form, webhdfs_url, had.candidates if had else None)
    contexts = None
    ctx = dataset.contexts
    if ctx is not None:
        frame = (
            local_tables.read(ctx.table, webhdfs_url=webhdfs_url)
            if ctx.table is not None
            else pd.DataFrame({ctx.key: list(ctx.values)})
        )
        contexts = frame.set_index(frame[ctx.key].astype(str), drop=False)
    return RankingTables(
        items=items,
        item_ids=item_ids,
        index={v: np.asarray(ix, np.int64) for v, ix in index.items()},
        item_at={k: i for i, k in enumerate(item_ids)},
        entities=entities,
        candidates=candidates,
        contexts=contexts,
    )


def candidates(
    dataset: Dataset,
    tables: RankingTables,
    entity: Mapping[str, Any],
    listed: Mapping[str, Any] | None,
) -> np.ndarray:
    """Item indices ``entity`` is scored against, by the dataset's candidate rule
    (``listed``: the entity's row of the candidate table, for the table rule)."""
    rule = dataset.candidates
    if rule.rule == "all":
        return np.arange(len(tables.item_ids), dtype=np.int64)
    if rule.rule == "match":
        parts = [
            tables.index.get(v, np.empty(0, np.int64))
            for v in _values(entity.get(rule.entity_column))
        ]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
    if listed is None:
        return np.empty(0, np.int64)
    items = _values(listed[rule.items_column])
    return np.array([tables.item_at[i] for i in map(str, items) if i in tables.item_at], np.int64)


class Inputs:
    """A served dataset's inputs, refreshed in the background."""

    def __init__(
        self, dataset: Dataset, webhdfs_url: str, refresh_s: float, timeout_s: float
    ) -> None:
        self.dataset = dataset
        self.webhdfs_url = webhdfs_url
        self.refresh_s = refresh_s
        self.images = (
            ImageStore.for_dataset(dataset, webhdfs_url, timeout_s=timeout_s)
            if dataset.images
            else None
        )
        self.ranking: RankingTables | None = None
        self.rows: KeyedRows | None = None
        self.error = ""
        self.read_at = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Read the tables again; on failure keep the last good read and record why."""
        try:
            if self.dataset.kind == "ranking":
                self.ranking = read_ranking(self.dataset, self.webhdfs_url, self.ranking)
            elif self.dataset.rows is not None:
                form = self.dataset.key_form
                self.rows = keyed(self.dataset.rows, form, self.webhdfs_url, self.rows)
            self.error = ""
            self.read_at = time.monotonic()
        except (PrescoreError, OSError, ValueError, KeyError, TypeError) as exc:
            self.error = str(exc)  # pyarrow's type errors are TypeErrors
            log.warning("dataset %s: inputs not read: %s", self.dataset.name, exc)

    def keyed(self) -> dict[str, KeyedRows]:
        """The tables read by key, by their role in the dataset."""
        found = {"rows": self.rows}
        if self.ranking is not None:
            found |= {"entities": self.ranking.entities, "candidates": self.ranking.candidates}
        return {role: k for role, k in found.items() if k is not None}

    def index_ready(self) -> dict[str, bool]:
        """Whether each table read by key is read as it should be (KeyedRows.index_ready)."""
        return {role: rows.index_ready() for role, rows in self.keyed().items()}

    def maintain(self) -> None:
        """Read the tables again when due, copy the keyed ``hdfs://`` tables' new files,
        and build the keyed tables' indexes where one would spare reads (reads scan
        meanwhile). One table's failure is logged and leaves the others' upkeep be."""
        if self.stale():
            self.refresh()
        for role, rows in self.keyed().items():
            try:
                rows.maintain()
            except Exception:  # a background pass must outlive any one table
                log.exception("dataset %s: upkeep of its %s table", self.dataset.name, role)

    @property
    def ready(self) -> bool:
        return self.ranking is not None or self.rows is not None or self.images is not None

    def stale(self) -> bool:
        """Whether the tables are due to be read again (an images folder is never read ahead)."""
        return self.images is None and time.monotonic() - self.read_at > self.refresh_s


class Upkeep:
    """A daemon thread that keeps the served datasets' inputs current (Inputs.maintain
    every ``interval_s``), apart from the model watcher: an index build can take minutes,
    and a promoted model must not wait for it. A pass that fails is logged with its
    traceback, and the next one runs as usual."""

    def __init__(self, inputs: Iterable[Inputs], interval_s: float) -> None:
        self.inputs = list(inputs)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inputs-upkeep", daemon=True)

    def start(self) -> Upkeep:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> None:
        for found in self.inputs:
            try:
                found.maintain()
            except Exception:  # the loop must outlive any one dataset
                log.exception("dataset %s: inputs upkeep", found.dataset.name)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.run_once()
