"""Bulk scoring of a ``ranking`` dataset: every entity's top k items, as a new version.

The driver reads the declared tables, checks the model's signature against their
columns before anything is written, collects the items (and contexts) and sends them
to the workers once (a broadcast); entities are scored where they lie, a partition at a
time (mapInPandas): candidates, pairs, inference and top-K are made inside the partition,
so no pair is ever shuffled. In each Python worker the model, the encoded items, the
candidate index and the payload encoders are built once per run (jobs.worker_cache).

A model with the factored signatures (prescore.models.signature) is called once per entity
(``encode_entity``), once per item and context, and then on pairs of encoded rows
(``score_pairs``, gathered in one tf.function); any other model is called on the raw
features of every pair (``serving_default``), its preprocessing run once per pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from jobs.bulk import (
    STATS_SCHEMA,
    Run,
    keyed,
    stats_row,
    task_tally,
    worker_model,
    worker_redis,
    write_rows,
)
from jobs.candidates import CANDIDATES, match_groups, rule_values
from jobs.spark_tables import (
    KEY_TEXT,
    WHOLE,
    Selection,
    Subset,
    columns,
    read,
    require,
    rows_to_score,
)
from jobs.top_k import top_k_per_entity
from jobs.worker_cache import CACHE
from prescore.data.columns import Column
from prescore.data.datasets import Dataset
from prescore.encoding import keys
from prescore.encoding.codec import PayloadShape
from prescore.encoding.ranking_payloads import RankingPayloads
from prescore.errors import ConfigError
from prescore.models import feeds
from prescore.models.signature import (
    ENCODE_CONTEXT,
    Signatures,
    check_candidates,
    check_ranking,
)
from prescore.models.store import ModelRef
from prescore.settings import StoreSettings
from prescore.store.values import Placed
from prescore.store.versions import Versions

ITEM_KEY = "__item_key"


def context_rows(spark: Any, dataset: Dataset) -> tuple[dict[str, Column], list[dict[str, Any]]]:
    """The declared contexts' columns, and the rows of the ones a run scores."""
    ctx = dataset.contexts
    if ctx is None:
        return {}, []
    if ctx.table is None:
        cols = {ctx.key: Column("string")}
        return cols, [{ctx.key: v} for v in ctx.score]
    frame = read(spark, ctx.table)
    require(frame, [ctx.key], f"dataset {dataset.name}: contexts {ctx.table.path}")
    found = {r[ctx.key]: r.asDict() for r in frame.collect()}  # a small table
    missing = [v for v in ctx.score if v not in found]
    if missing:
        raise ConfigError(f"dataset {dataset.name}: contexts not in the table: {missing}")
    return dict(columns(frame)), [found[v] for v in ctx.score]


@dataclass(frozen=True, kw_only=True)
class RankingRun(Run):
    """What every task of a ranking run is sent, besides :class:`jobs.bulk.Run`'s fields:
    each model input's side (entity, item or context), whether the factored signatures
    are used, the rows of the contexts scored, how many entities a chunk holds and how
    many rows a task holds before it writes them."""

    bound: Mapping[str, str]
    factored: bool
    contexts: tuple[Mapping[str, Any], ...]
    entities_per_chunk: int
    write_rows: int


@dataclass(frozen=True)
class Plan:
    """What the driver read and checked for a run: the model inputs' sides, the contexts'
    rows and the contexts scored (None: the plain key; :func:`context_names`), the
    entities to score (a DataFrame, where they lie) and the items (column -> values,
    broadcast to the workers), and the rows chosen (jobs.spark_tables)."""

    bound: Mapping[str, str]
    factored: bool
    contexts: tuple[Mapping[str, Any], ...]
    scored: tuple[str | None, ...]
    entities: Any
    items: Mapping[str, list[Any]]
    selection: Selection

    @property
    def n_items(self) -> int:
        return len(next(iter(self.items.values()), []))


def plan(
    spark: Any,
    dataset: Dataset,
    ref: ModelRef,
    per_pair: bool = False,
    missed: Sequence[str] = (),
    subset: Subset = WHOLE,
) -> Plan:
    """Read and check everything a run needs.
    ``per_pair``: call serving_default on every pair even if the model is factored;
    ``missed``: keys of the miss log, scored besides the entities' filter; ``subset``:
    the entities an incremental run scores instead (jobs.spark_tables.Subset)."""
    assert dataset.entities is not None and dataset.items is not None
    sigs = Signatures.from_json(ref.meta["signature"])
    rule, where = dataset.candidates, f"dataset {dataset.name}"
    # every table read first (one that Spark cannot read is refused in one line), then
    # the model and the candidate rule checked against their columns, then the rest
    ctx_columns, ctx_rows = context_rows(spark, dataset)
    entities, items = read(spark, dataset.entities), read(spark, dataset.items)
    listing = read(spark, rule.table) if rule.table is not None else None
    sides = {"entity": columns(entities), "item": columns(items)}
    if dataset.contexts is not None:
        sides["context"] = ctx_columns
    bound = check_ranking(dataset, sigs, ref.meta, sides)
    check_candidates(dataset, sides)
    require(entities, [*dataset.entities.key, rule.entity_column], f"{where}: entities")
    require(items, [*dataset.items.key, rule.item_column, *dataset.item_payload], f"{where}: items")
    chosen = rows_to_score(
        entities, dataset.entities, dataset.key_form, f"{where}: entities", missed, subset
    )
    if listing is not None:
        assert rule.table is not None
        require(listing, [*rule.table.key, rule.items_column], f"{where}: candidates")
    factored = sigs.factored and not per_pair
    item_cols = {c for c, side in bound.items() if side == "item"} | set(dataset.item_payload)
    if factored:
        item_cols |= set(sigs.by_name["encode_item"].inputs)
    item_cols |= {rule.item_column} - {""}
    picked = items.select(dataset.items.key[0], *sorted(item_cols - {dataset.items.key[0]}))
    item_table = picked.toPandas()
    _check_items(item_table[dataset.items.key[0]], f"{where}: items")
    entity_cols = {c for c, side in bound.items() if side == "entity"} | {rule.entity_column}
    if factored:
        entity_cols |= set(sigs.by_name["encode_entity"].inputs)
    entity_cols = (entity_cols - {""}) - set(dataset.entities.key)
    frame = chosen.frame.select(KEY_TEXT, *dataset.entities.key, *sorted(entity_cols))
    if listing is not None:
        assert rule.table is not None
        listed = listing.select(*rule.table.key, listing[rule.items_column].alias(CANDIDATES))
        frame = frame.join(listed, list(dataset.entities.key), "left")
    return Plan(
        bound=bound,
        factored=factored,
        contexts=tuple(ctx_rows),
        scored=tuple(context_names(dataset, ctx_rows)),
        entities=frame,
        items={c: item_table[c].tolist() for c in item_table.columns},
        selection=chosen,
    )


def _check_items(ids: Any, where: str) -> None:
    """ConfigError for an items table a top K cannot come from: none, or a key that
    repeats (its item would fill two places of a list)."""
    if not len(ids):
        raise ConfigError(f"{where}: no rows: there is nothing to rank")
    repeats = ids[ids.duplicated()].unique()
    if len(repeats):
        named = ", ".join(repr(str(x)) for x in repeats[:3])
        raise ConfigError(
            f"{where}: {len(repeats)} key(s) repeat ({named}, ...); each item is one row"
        )


@dataclass
class RunTables:
    """What a worker builds once per run: items (raw or encoded), the candidate index,
    each context's features and a payload encoder per context."""

    item_ids: list[str]
    item_feed: dict[str, np.ndarray]
    item_block: np.ndarray | None
    index: Mapping[Any, np.ndarray]
    contexts: list[tuple[str | None, dict[str, np.ndarray], np.ndarray | None]]
    encoders: dict[str | None, RankingPayloads]
    cached: dict[tuple[Any, ...], np.ndarray]


def build_run(run: RankingRun, items: Mapping[str, list[Any]], model: Any) -> RunTables:
    ds = run.dataset
    assert ds.items is not None
    key = ds.items.key[0]
    item_ids = [keys.check_text(str(i), what="item key") for i in items[key]]
    sigs = model.signatures
    serving = sigs.serving.inputs
    side = run.bound
    item_feed = feeds.feeds(items, {n: t for n, t in serving.items() if side[n] == "item"})
    block = None
    if run.factored:
        block = model.encode("encode_item", feeds.feeds(items, sigs.by_name["encode_item"].inputs))
    rule = ds.candidates
    index: dict[Any, np.ndarray] = {}
    if rule.rule == "match":
        groups = match_groups(items[rule.item_column])
        index = {v: np.asarray(ix, np.int64) for v, ix in groups.items()}
    elif rule.rule == "table":
        index = {item: np.array([i]) for i, item in enumerate(item_ids)}
    contexts = _contexts(run, model)
    encoders = dict(zip(context_values(run), payload_encoders(run, items), strict=True))
    return RunTables(item_ids, item_feed, block, index, contexts, encoders, {})


def payload_encoders(run: RankingRun, items: Mapping[str, list[Any]]) -> list[RankingPayloads]:
    """One payload encoder per context of the run (:func:`context_values`), in order: the
    context's index is its compact payloads' frame id."""
    ds = run.dataset
    assert ds.items is not None
    item_ids = [str(i) for i in items[ds.items.key[0]]]
    extras = None
    if ds.item_payload:
        extras = [{c: _plain(items[c][i]) for c in ds.item_payload} for i in range(len(item_ids))]
    shape = PayloadShape(ds.key_field, ds.list_field, ds.entry_field)
    return [
        RankingPayloads(
            shape,
            item_ids,
            model=ds.model,
            model_version=run.model_version,
            scored_at=run.scored_at,
            context=c,
            item_extras=extras,
            frame_id=i,
        )
        for i, c in enumerate(context_values(run))
    ]


def context_values(run: RankingRun) -> list[str | None]:
    """The contexts a run scores, in order: None for the plain key, then each value."""
    return context_names(run.dataset, run.contexts)


def context_names(dataset: Dataset, rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The contexts of ``rows`` (:func:`context_rows`') a run of ``dataset`` scores, in
    order: None for the plain key, then each value."""
    ctx = dataset.contexts
    ctx_key = ctx.key if ctx is not None else "context"
    plain = ctx is None or ctx.plain
    return ([None] if plain else []) + [str(row[ctx_key]) for row in rows]


def _plain(value: Any) -> Any:
    """A cell as JSON takes it (numpy scalars and arrays to Python values)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _contexts(
    run: RankingRun, model: Any
) -> list[tuple[str | None, dict[str, np.ndarray], np.ndarray | None]]:
    """(context value or None for the plain key, its raw feed, its encoded row)."""
    serving = model.signatures.serving.inputs
    ctx_inputs = {n: t for n, t in serving.items() if run.bound[n] == "context"}
    enc_inputs = None
    if run.factored and ENCODE_CONTEXT in model.signatures.by_name:
        enc_inputs = model.signatures.by_name[ENCODE_CONTEXT].inputs
    named = context_values(run)
    rows: list[Mapping[str, Any] | None] = [None] * (len(named) - len(run.contexts))
    rows += run.contexts
    out = []
    for value, row in zip(named, rows, strict=True):

        def feed_of(inputs: Mapping[str, Any], row: Mapping[str, Any] | None = row) -> dict:
            if row is None:
                return feeds.blank(inputs)
            return feeds.feeds({k: [row[k]] for k in inputs}, inputs)

        encoded = model.encode(ENCODE_CONTEXT, feed_of(enc_inputs)) if enc_inputs else None
        out.append((value, feed_of(ctx_inputs), encoded))
    return out


def _candidates(frame: pd.DataFrame, conf: RankingRun, run: RunTables) -> list[np.ndarray]:
    """Item indices each entity of ``frame`` is scored against."""
    rule = conf.dataset.candidates
    everything = np.arange(len(run.item_ids), dtype=np.int64)
    if rule.rule == "all":
        return [everything] * len(frame)
    column = frame[rule.entity_column if rule.rule == "match" else CANDIDATES]
    out = []
    empty = np.empty(0, np.int64)
    shared = rule.rule == "match"  # entities share value sets: cached per run
    for value in column:
        wanted = tuple(rule_values(value))
        found = run.cached.get(wanted) if shared else None
        if found is None:
            parts = [run.index.get(v, empty) for v in wanted]
            found = np.unique(np.concatenate(parts)) if parts else empty
            if shared:
                run.cached[wanted] = found
        out.append(found)
    return out


def _form(conf: RankingRun) -> keys.KeyForm:
    return conf.dataset.key_form


Entity = tuple[dict[str, np.ndarray], np.ndarray | None]  # raw feeds, encoded rows


def _scores(
    model: Any,
    conf: RankingRun,
    run: RunTables,
    ctx: int,
    entity: Entity,
    owner: np.ndarray,
    item_idx: np.ndarray,
) -> np.ndarray:
    """Every pair's score in context ``ctx``, ``batch_rows`` pairs a model call."""
    step = conf.batch_rows
    scores = np.empty(len(owner), np.float32)
    _, ctx_feed, ctx_row = run.contexts[ctx]
    entity_feed, entity_block = entity
    if conf.factored:
        score = model.pair_scorer()
        for i in range(0, len(owner), step):
            part = slice(i, i + step)
            got = score(entity_block, run.item_block, ctx_row, owner[part], item_idx[part])
            scores[part] = np.asarray(got)
        return scores
    for i in range(0, len(owner), step):
        part = slice(i, i + step)
        n = len(owner[part])
        feed = {
            **feeds.take(entity_feed, owner[part]),
            **feeds.take(run.item_feed, item_idx[part]),
            **{k: np.repeat(v, n, axis=0) for k, v in ctx_feed.items()},
        }
        scores[part] = model(feed)
    return scores


def score_chunk(
    frame: pd.DataFrame, ids: list[str], conf: RankingRun, model: Any, run: RunTables
) -> tuple[list[tuple[str, bytes]], int, int]:
    """Payloads of the entities of ``frame`` (keys ``ids``) in every context, the pairs
    scored, and the entities with no candidate items (which get no payload)."""
    cands = _candidates(frame, conf, run)
    counts = np.fromiter(map(len, cands), np.int64, len(cands))
    owner = np.repeat(np.arange(len(frame)), counts)
    item_idx = np.concatenate(cands) if len(owner) else np.empty(0, np.int64)
    entity_feed: dict[str, np.ndarray] = {}  # the raw features: the per-pair path's
    block = None
    if conf.factored:
        wanted = model.signatures.by_name["encode_entity"].inputs
        block = model.encode("encode_entity", feeds.feeds(frame, wanted))
    else:
        serving = model.signatures.serving.inputs
        entity = {n: t for n, t in serving.items() if conf.bound[n] == "entity"}
        entity_feed = feeds.feeds(frame, entity)
    rows: list[tuple[str, bytes]] = []
    for c, (ctx, _, _) in enumerate(run.contexts):
        if not len(owner):
            break
        scores = _scores(model, conf, run, c, (entity_feed, block), owner, item_idx)
        best, exists = top_k_per_entity(counts, scores, conf.dataset.k)
        rows += _payloads(run.encoders[ctx], ids, counts, item_idx, scores, best, exists)
    return rows, len(owner) * len(run.contexts), int((counts == 0).sum())


def _payloads(
    encoder: RankingPayloads,
    ids: list[str],
    counts: np.ndarray,
    item_idx: np.ndarray,
    scores: np.ndarray,
    best: np.ndarray,
    exists: np.ndarray,
) -> list[tuple[str, bytes]]:
    """(key, payload) of each entity with candidates, from the top-K grid of pair indices."""
    keep = np.flatnonzero(counts)  # an entity without candidates gets no payload
    best = np.minimum(best[keep], len(scores) - 1)  # absent slots (exists False) point anywhere
    chosen = [ids[u] for u in keep.tolist()]
    found = exists[keep].sum(axis=1)  # -inf padding sorts last: present slots come first
    payloads = encoder.encode_compact(chosen, item_idx[best], scores[best], found)
    ctx = encoder.context
    return [(keys.entity_key(k, ctx), p) for k, p in zip(chosen, payloads, strict=True)]


def score_partition(
    batches: Iterator[pd.DataFrame], conf: RankingRun, items: Any
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: score, write, yield one stats row per Arrow batch. The rows of
    several chunks are written together, once ``write_rows`` of them are scored (and at
    the end of a batch): the more rows a write holds, the more of them share each
    bucket's HSET (prescore.store.values.write)."""
    client = worker_redis(conf)
    model = worker_model(conf)
    run = CACHE.get(("run", conf.version), lambda: build_run(conf, items.value, model))
    step = conf.entities_per_chunk  # bounds the pairs of one chunk
    tally = task_tally()
    form, what = _form(conf), conf.dataset.key_field

    def write(rows: list[tuple[str, bytes]], pairs: int) -> int:
        tally.units += pairs  # reported with the rows, as the job's pairs done
        return write_rows(client, conf, rows, tally)

    for batch in batches:
        written = pairs = held_pairs = unmatched = 0
        held: list[tuple[str, bytes]] = []  # scored, not yet written
        keys_: list[str] = []
        batch, ids, bad = keyed(batch, form, what)
        for start in range(0, len(batch), step):
            part = slice(start, start + step)
            chunk, scored, none = score_chunk(batch.iloc[part], ids[part], conf, model, run)
            unmatched += none
            held += chunk
            pairs += scored
            held_pairs += scored
            if len(held) >= conf.write_rows or start + step >= len(batch):
                written += write(held, held_pairs)
                keys_ += [k for k, _ in held]
                held, held_pairs = [], 0
        yield stats_row(conf, written, pairs, bad, written=keys_, unmatched=unmatched)


def write_frames(conf: RankingRun, items: Mapping[str, list[Any]]) -> None:
    """Store the frames of the run's compact payloads before any task writes one."""
    client = worker_redis(conf)
    frames = {e.frame_id: e.frame() for e in payload_encoders(conf, items)}
    versions = Versions(client, conf.dataset.name, StoreSettings())
    versions.write_frames(conf.placed(), frames, conf.token)


def runner(spark: Any, planned: Plan, base: Run, entities_per_chunk: int, write_rows: int) -> Any:
    """``run(where, token)``: the stats DataFrame of one run (jobs.bulk.publish_version)."""
    items = spark.sparkContext.broadcast(dict(planned.items))
    frame = planned.entities
    parallelism = spark.sparkContext.defaultParallelism
    if base.partitions or frame.rdd.getNumPartitions() < parallelism:
        frame = frame.repartition(base.partitions or parallelism)
    body = RankingRun(
        **base.base(),
        bound=planned.bound,
        factored=planned.factored,
        contexts=planned.contexts,
        entities_per_chunk=entities_per_chunk,
        write_rows=write_rows,
    )

    def run(where: Placed, token: str, share: float) -> Any:
        mine = body.writing(where, token, share)
        write_frames(mine, items.value)
        return frame.mapInPandas(lambda it: score_partition(it, mine, items), STATS_SCHEMA)

    return run
