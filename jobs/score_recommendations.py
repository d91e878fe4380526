"""Bulk scoring: every user's top-K hotels, published to Redis as a new ``reco`` version.

    spark-submit jobs/score_recommendations.py --data var/data [--top-k 10] [--contexts a,b]

Candidates of a user are the hotels of the user's regions of interest (or every hotel in
``--candidates``). Pairs, inference and top-K are made inside each partition of users
(mapInPandas): no shuffle per scored pair. The model is loaded once per Python worker;
payloads are written pipelined per partition; the driver verifies the key count and
switches the pointer atomically (jobs.bulk). Keys are ``user_id``, and ``user_id|context``
for each ``--contexts`` entry.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from jobs.bulk import (
    STATS_SCHEMA,
    Summary,
    plain_settings,
    publish_version,
    settings_for,
    spark_session,
    worker_model,
    worker_redis,
    write_rows,
)
from jobs.flags import add_store_flags
from jobs.pair_scoring import score_pairs
from prescore import keys
from prescore.modelstore import ModelStore
from prescore.payloads import RecoPayloads
from prescore.reco_features import Schema, context_block, hotel_block, user_block
from prescore.settings import Settings

MODEL_NAME = "reco"
_HOTELS: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = {}
_CANDIDATES: dict[tuple[int, tuple[str, ...]], np.ndarray] = {}
_ENCODERS: dict[tuple[str, str, str | None], RecoPayloads] = {}


def _hotel_tables(
    conf: Mapping[str, Any], schema: Schema
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Hotel ids, their encoded block and the hotel indices of each region, once per worker."""
    key = conf["model_key"]
    if key not in _HOTELS:
        hotels = pd.DataFrame(conf["hotels"])
        by_region = {r: np.asarray(i) for r, i in hotels.groupby("region").indices.items()}
        if conf["all_candidates"]:
            by_region = {"*": np.arange(len(hotels))}
        _HOTELS[key] = (hotels["hotel_id"].to_numpy(), hotel_block(hotels, schema), by_region)
    return _HOTELS[key]


def _candidates(by_region: dict[str, np.ndarray], regions: tuple[str, ...]) -> np.ndarray:
    """Hotel indices of a set of regions; users share region sets, so it is cached."""
    key = (id(by_region), regions)
    found = _CANDIDATES.get(key)
    if found is None:
        parts = [by_region.get(r, np.empty(0, int)) for r in regions]
        found = _CANDIDATES[key] = np.unique(np.concatenate(parts)).astype(int)
    return found


def top_k_per_user(counts: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices of each user's ``k`` best, best first, and which of them exist.

    Pairs are grouped by user (``counts`` pairs each); the scores are laid out in a
    users x candidates grid padded with -inf, so the selection is one vectorised
    argpartition instead of a loop over users.
    """
    n_users = len(counts)
    starts = np.zeros(n_users, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    width = max(int(counts.max(initial=0)), 1)
    cells = np.full(n_users * width, -np.inf, np.float32)
    # pair i, the j-th of user u (i = starts[u] + j), goes to cell u * width + j
    cells[np.arange(len(scores)) + np.repeat(np.arange(n_users) * width - starts, counts)] = scores
    grid = cells.reshape(n_users, width)
    kk = min(k, width)
    part = np.argpartition(grid, width - kk, axis=1)[:, width - kk :]  # the kk largest
    order = np.argsort(-np.take_along_axis(grid, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return starts[:, None] + best, best < counts[:, None]


def _encoder(conf: Mapping[str, Any], hotel_ids: np.ndarray, ctx: str | None) -> RecoPayloads:
    """The run's payload encoder for ``ctx`` (hotel fragments built once per worker)."""
    key = (conf["model_key"], conf["version"], ctx)
    if key not in _ENCODERS:
        _ENCODERS.clear()  # a worker lives across runs: keep only the current run's
        for c in conf["contexts"]:
            _ENCODERS[(conf["model_key"], conf["version"], c)] = RecoPayloads(
                hotel_ids.tolist(),
                model=MODEL_NAME,
                model_version=conf["model_version"],
                scored_at=conf["scored_at"],
                context=c,
            )
    return _ENCODERS[key]


def _payloads(
    encoder: RecoPayloads,
    ids: list[str],
    counts: np.ndarray,
    hotel_idx: np.ndarray,
    scores: np.ndarray,
    best: np.ndarray,
    exists: np.ndarray,
) -> list[tuple[str, bytes]]:
    """(key, payload) of each user with candidates, from the top-K grid of pair indices."""
    if not len(scores):
        return []
    keep = np.flatnonzero(counts)  # a user without candidates gets no payload
    best = np.minimum(best[keep], len(scores) - 1)  # absent slots (exists False) point anywhere
    users = [ids[u] for u in keep.tolist()]
    found = exists[keep].sum(axis=1)  # -inf padding sorts last: present slots come first
    payloads = encoder.encode_grid(users, hotel_idx[best], scores[best], found)
    ctx = encoder.context
    return [(keys.reco_key(u, ctx), p) for u, p in zip(users, payloads, strict=True)]


def score_users(
    users: pd.DataFrame, conf: Mapping[str, Any]
) -> tuple[list[tuple[str, bytes]], int]:
    """Payloads of ``users`` for every context, and how many pairs were scored."""
    runner, meta = worker_model(conf, MODEL_NAME, conf["model_version"])
    schema = Schema.from_dict(meta["schema"])
    hotel_ids, hotel_x, by_region = _hotel_tables(conf, schema)
    ids = [keys.check_id(str(u), what="user_id") for u in users["user_id"]]
    cands = [
        _candidates(by_region, ("*",) if conf["all_candidates"] else tuple(rs))
        for rs in users["regions"]
    ]
    counts = np.array([len(c) for c in cands], np.int64)
    owner = np.repeat(np.arange(len(users)), counts)
    hotel_idx = np.concatenate(cands) if len(owner) else np.empty(0, np.int64)
    user_x = user_block(users, schema)
    match = np.ones(len(owner), np.float32)  # candidates come from the user's regions
    if conf["all_candidates"]:  # a hotel outside the user's regions is a candidate too
        regions = [set(users["regions"].iloc[o]) for o in owner]
        hotel_regions = conf["hotels"]["region"]
        match[:] = [hotel_regions[h] in regions[i] for i, h in enumerate(hotel_idx)]
    rows: list[tuple[str, bytes]] = []
    for ctx in conf["contexts"]:
        blocks = (user_x, hotel_x, context_block([ctx], schema))
        scores = score_pairs(runner, blocks, owner, hotel_idx, match, conf["batch_rows"])
        best, exists = top_k_per_user(counts, scores, conf["top_k"])
        rows += _payloads(
            _encoder(conf, hotel_ids, ctx), ids, counts, hotel_idx, scores, best, exists
        )
    return rows, len(owner) * len(conf["contexts"])


def score_partition(
    batches: Iterator[pd.DataFrame], conf: Mapping[str, Any]
) -> Iterator[pd.DataFrame]:
    """mapInPandas body: score, write pipelined, yield one stats row per Arrow batch."""
    client = worker_redis(conf)
    step = conf["users_per_chunk"]  # bounds the pair matrix of one model call
    for batch in batches:
        written = pairs = 0
        for start in range(0, len(batch), step):
            rows, scored = score_users(batch.iloc[start : start + step], conf)
            written += write_rows(client, "reco", conf["version"], rows)
            pairs += scored
        yield pd.DataFrame({"rows": [written], "scored": [pairs], "bad": [0], "bad_sample": [[]]})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder with users.parquet, hotels.parquet")
    parser.add_argument("--candidates", help="parquet of hotels every user is scored against")
    parser.add_argument("--model-version", help="default: the promoted version")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--contexts", default="", help="comma-separated contexts to score too")
    parser.add_argument("--partitions", type=int, default=0, help="default: Spark's parallelism")
    parser.add_argument("--batch-rows", type=int, default=32768, help="pairs per model call")
    parser.add_argument(
        "--users-per-chunk",
        type=int,
        default=1024,
        help="users scored, encoded and written together (a chunk's pairs: ~120 a user)",
    )
    add_store_flags(parser)
    return parser.parse_args(argv)


def run_job(spark: Any, args: argparse.Namespace, settings: Settings) -> Summary:
    """Score every user and publish a new ``reco`` version; raises if anything fails."""
    model_version = args.model_version or ModelStore(settings.models).resolve(MODEL_NAME).version
    data = args.data.rstrip("/")
    hotels = spark.read.parquet(args.candidates or f"{data}/hotels.parquet").toPandas()
    users = spark.read.parquet(f"{data}/users.parquet").select(
        "user_id", "country", "language", "device", "regions"
    )
    if args.partitions or users.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:
        users = users.repartition(args.partitions or spark.sparkContext.defaultParallelism)
    contexts = [None, *[keys.check_id(c, what="context") for c in args.contexts.split(",") if c]]
    conf = {
        **plain_settings(settings),
        "model_version": model_version,
        "model_key": f"{settings.models.root}|{model_version}|{args.candidates or data}",
        "hotels": {c: hotels[c].tolist() for c in ("hotel_id", "region", "price", "stars")}
        | {"amenities": [list(a) for a in hotels["amenities"]]},
        "all_candidates": bool(args.candidates),
        "contexts": contexts,
        "top_k": args.top_k,
        "batch_rows": args.batch_rows,
        "users_per_chunk": args.users_per_chunk,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }

    def run(version: str) -> Any:
        body = {**conf, "version": version}
        return users.mapInPandas(lambda it: score_partition(it, body), schema=STATS_SCHEMA)

    print(
        f"scoring users of {data} against {len(hotels)} hotels, top {args.top_k}, "
        f"contexts {[c or '(none)' for c in contexts]}",
        flush=True,
    )
    return publish_version(spark, settings, "reco", (MODEL_NAME, model_version), run, "pairs")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spark = spark_session("prescore-score-recommendations")
    try:
        run_job(spark, args, settings_for(args, os.environ))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
