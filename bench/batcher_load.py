"""The micro-batcher alone: concurrent callers submitting one row each, no HTTP around it.

Part of bench_fallback. The server-level table there pays, per request, for HTTP,
JSON and decoding as well as the model; this one isolates what micro-batching itself
buys: ``clients`` threads call ``MicroBatcher.submit`` with one already-decoded row each,
with merging against ``max_batch=1``, for the same model and runtime.
"""

from __future__ import annotations

import time

import numpy as np

from bench.loadgen import run_threads
from fallback.batcher import MicroBatcher
from prescore.inference import load_runner
from prescore.modelstore import ModelStore
from prescore.settings import ModelStoreSettings


def _load(batcher: MicroBatcher, x: np.ndarray, clients: int, seconds: float) -> float:
    """Rows answered per second with ``clients`` threads submitting one row at a time."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        i = c
        while time.monotonic() < stop:
            batcher.submit(x[i % len(x) : i % len(x) + 1])
            counts[c] += 1
            i += clients

    took = run_threads(client, clients)
    return sum(counts) / took


def batcher_table(
    root: str, evals: dict[str, tuple[np.ndarray, ...]], clients: int, seconds: float
) -> list[str]:
    store = ModelStore(ModelStoreSettings(root=root))
    lines = [
        "| model | runtime | clients | micro-batching (rows/s) | batch size 1 (rows/s) "
        "| ratio | rows per model call |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, runtime, max_batch in (("tagger", "tf", 32), ("reco", "tf", 256)):
        x = evals[name][0]
        runner = load_runner(store.resolve(name).path, runtime)
        rates, merged = [], 0.0
        for size in (max_batch, 1):
            batcher = MicroBatcher(runner, max_batch=size, max_wait_s=0.002, adaptive=False)
            try:
                _load(batcher, x, clients, 1.0)  # warm up
                before = batcher.stats.requests, batcher.stats.batches
                rates.append(_load(batcher, x, clients, seconds))
                if size > 1:
                    merged = (batcher.stats.requests - before[0]) / max(
                        1, batcher.stats.batches - before[1]
                    )
            finally:
                batcher.close()
        lines.append(
            f"| {name} | {runtime} | {clients} | {rates[0]:,.0f} | {rates[1]:,.0f} "
            f"| {rates[0] / rates[1]:.1f}x | {merged:.1f} |"
        )
        print(f"{name} batcher measured", flush=True)
    return lines
