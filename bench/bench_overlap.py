"""Whether decoding the next batch in a thread while the model runs the current one helps
a tagging worker, measured as the job's workers run: one process per core, TensorFlow
on one thread in each (jobs.bulk), decode with prescore.models.image_features.decode.

    python -m bench.bench_overlap --size 1024x768 --count 256
    python -m bench.bench_overlap --count 4000            # the demo's small photos

Generates the photos (examples.hotels.imagegen) and the model (bench.tagging_setup's
MobileNetV3Small for ``--size``, else the demo's CNN trained briefly), then times each
worker's batches decoded then inferred in turn, and with the next batch's decode in a
thread (one batch ahead: memory bounded by two batches), the two modes taking turns.
Prints images/s of all workers together for each round and the medians.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ORDER = (False, True, True, False, False, True)  # decode ahead, in turns


def _worker(raws: list[bytes], saved: str, size: tuple[int, int], batch: int) -> list[float]:
    """One worker's images/s in each mode of ORDER."""
    import tensorflow as tf

    from prescore.models.image_features import decode

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    serve = tf.saved_model.load(saved).signatures["serving_default"]

    def pixels(chunk: list[bytes]) -> Any:
        return tf.constant(np.stack([decode(r, size) for r in chunk]))

    chunks = [raws[i : i + batch] for i in range(0, len(raws), batch)]
    serve(image=pixels(chunks[0]))  # the first call builds the graph
    rates = []
    for ahead in ORDER:
        started = time.perf_counter()
        if ahead:
            with ThreadPoolExecutor(1) as pool:
                following = pool.submit(pixels, chunks[0])
                for i in range(len(chunks)):
                    x = following.result()
                    if i + 1 < len(chunks):
                        following = pool.submit(pixels, chunks[i + 1])
                    serve(image=x)
        else:
            for chunk in chunks:
                serve(image=pixels(chunk))
        rates.append(len(raws) / (time.perf_counter() - started))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--size", help="WxH photos, e.g. 1024x768 (default: the demo's)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)

    from bench.tagging_setup import INPUT_SIZE, mobilenet_tagger
    from examples.hotels.imagegen import generate, parse_size
    from examples.hotels.train_tagger import IMAGE_SIZE, train

    size = parse_size(args.size) if args.size else None
    with tempfile.TemporaryDirectory(prefix="bench-overlap-") as tmp:
        work = Path(tmp)
        generate(work / "images", args.count, seed=5, size=size)
        if size:
            mobilenet_tagger(work / "model")
            side = (INPUT_SIZE, INPUT_SIZE)
        else:
            train(work / "images", work / "model", epochs=1, seed=5)
            side = IMAGE_SIZE
        raws = [p.read_bytes() for p in sorted((work / "images").glob("*.jpg"))]
        saved = str(work / "model" / "saved_model")
        n = args.cores
        spawn = multiprocessing.get_context("spawn")  # TensorFlow is loaded here already
        with ProcessPoolExecutor(n, mp_context=spawn) as pool:
            found = list(
                pool.map(
                    _worker,
                    [raws[i::n] for i in range(n)],
                    [saved] * n,
                    [side] * n,
                    [args.batch] * n,
                )
            )
    totals = [sum(rates) for rates in zip(*found, strict=True)]
    for ahead in (False, True):
        mine = [t for t, a in zip(totals, ORDER, strict=True) if a == ahead]
        name = "decode ahead in a thread" if ahead else "decode, then infer"
        rounds = ", ".join(f"{t:,.1f}" for t in mine)
        print(f"| {name} | {statistics.median(mine):,.1f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
