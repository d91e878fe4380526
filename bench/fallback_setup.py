"""What bench_fallback measures on: the hotel demo's data, models and declarations.

``build_world`` generates the demo's users, hotels and events (examples.hotels.datagen)
and photos (examples.hotels.imagegen) under a ``PRESCORE_VAR`` of its own, trains the
booking model and the photo tagger (examples.hotels.train_reco, train_tagger) and
registers both as ``prescore models register NAME FOLDER --promote`` does (int8 variant
built where the model allows), against the demo's examples/hotels/prescore.toml.
``eval_feed`` gives each dataset's held-out rows as model feeds with their truth,
``measure_tf`` what prescore.models.quantize.measure records, for a model with no LiteRT
variant; ``publish_reco`` writes what a bulk run of ``reco`` would have published.
``run_requests`` is the HTTP load of the server tables (POST bodies of any kind, on
keep-alive connections, threads from bench.loadgen).
"""

from __future__ import annotations

import http.client
import itertools
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.loadgen import Result, run_threads
from prescore.data.datasets import Catalog, load
from prescore.encoding import codec
from prescore.models.store import ModelRef, ModelStore
from prescore.settings import ModelStoreSettings

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "hotels" / "prescore.toml"
Feed = dict[str, np.ndarray]
Request = tuple[str, str, bytes | None, str]  # method, path, body, content type
MakeRequest = Callable[[int], Request | None]  # request i; None: no more to send
TAGGER_SEED = 7  # train_tagger's seed, which fixes its train / validation / test split


@dataclass(frozen=True)
class World:
    """The demo under ``var``: its declarations, its model store."""

    var: Path
    catalog: Catalog
    models: ModelStoreSettings

    @property
    def store(self) -> ModelStore:
        return ModelStore(self.models)

    def ref(self, dataset: str) -> ModelRef:
        """The promoted model of ``dataset``."""
        return self.store.resolve(self.catalog.get(dataset).model)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a fallback or lookup process over the demo's datasets."""
        return {
            "PRESCORE_CONFIG": str(CONFIG),
            "PRESCORE_VAR": str(self.var),
            "PRESCORE_MODEL_STORE": self.models.root,
            "PRESCORE_MODEL_CACHE": self.models.cache_dir,
            **extra,
        }


@dataclass(frozen=True)
class Eval:
    """Held-out rows of one dataset: feeds by model input, truth, metric, batch size."""

    feed: Feed
    truth: np.ndarray
    metric: str
    batch: int


def build_world(work: Path, users: int, hotels: int, images: int) -> World:
    """Generate the demo data, train both models, register and promote them."""
    from examples.hotels import datagen, imagegen, train_reco, train_tagger
    from prescore.models.registration import register

    var = work / "var"
    sizes = datagen.Sizes(users=users, hotels=hotels, impressions_per_user=20, days=30, test_days=6)
    print(f"data: {datagen.generate(var / 'data', sizes)}", flush=True)
    imagegen.generate(var / "images", images, seed=5)
    reco = train_reco.train(var / "data", work / "train" / "reco", epochs=3)
    print(f"reco trained: held-out AUC {reco['metrics']['auc']:.4f}", flush=True)
    tagger = train_tagger.train(
        var / "images", work / "train" / "tagger", epochs=6, seed=TAGGER_SEED
    )
    print(f"tagger trained: held-out mAP {tagger['metrics']['map']:.4f}", flush=True)
    models = ModelStoreSettings(root=(work / "models").as_uri(), cache_dir=str(work / "cache"))
    world = World(var, load(CONFIG, {"PRESCORE_VAR": str(var)}), models)
    for name in ("reco", "tagger"):
        folder = str(work / "train" / name)
        done = register(world.store, world.catalog, name, folder, promote=True, say=_say)
        print(f"{name}: registered version {done.version}, promoted", flush=True)
    return world


def _say(line: str) -> None:
    print(line, flush=True)


def eval_feed(world: World, dataset: str, max_rows: int = 5000) -> Eval:
    """The held-out rows of ``dataset``: reco's declared held-out table (as retraining
    reads it), the tagger's test split of the photos (as train_tagger splits them)."""
    from prescore.models import dataset_feeds
    from prescore.models.signature import Signatures

    d = world.catalog.get(dataset)
    ref = world.ref(dataset)
    sigs = Signatures.from_json(ref.meta["signature"])
    t = d.training
    if t is not None and t.heldout is not None:
        feed, truth = dataset_feeds.heldout(d, sigs, ref.meta, t.heldout, t.label)
        pick = np.sort(np.random.default_rng(1).permutation(len(truth))[:max_rows])
        return Eval({k: v[pick] for k, v in feed.items()}, truth[pick], t.metric, 256)
    from examples.hotels.train_tagger import load_images, split
    from prescore.models.image_features import model_input
    from prescore.models.signature import image_dims, image_input

    name, tensor = image_input(sigs.serving, dataset)
    h, w, _ = image_dims(tensor)
    x, y = load_images(world.var / "images", (h, w))
    test = split(len(x), TAGGER_SEED)[2]
    return Eval({name: model_input(x[test], tensor.dtype)}, y[test], "map", 32)


def measure_tf(ref: ModelRef, ev: Eval, repeats: int) -> dict[str, dict[str, float]]:
    """What prescore.models.quantize.measure records, for TensorFlow alone."""
    from prescore.models.inference import load_runner
    from prescore.models.quantize import measure_one

    runner = load_runner(ref.path, ref.meta, "tf")
    record, _ = measure_one(runner, ev.feed, None, ev.truth, ev.metric, ev.batch, repeats)
    return {"tf": record}


def publish_reco(redis_url: str, world: World, users: int, model_version: str) -> str:
    """Users u0 .. u{users - 1} as one published version of ``reco``, as a bulk run with
    model version ``model_version`` writes them (the version a miss asks the fallback for)."""
    from bench.bench_lookup import shape
    from prescore.settings import RedisSettings, StoreSettings
    from prescore.store.redis_client import connect
    from prescore.store.versions import Versions, write_payloads

    reco = world.catalog.get("reco")
    client = connect(RedisSettings(url=redis_url))
    versions = Versions(client, reco.name, StoreSettings())
    info = versions.begin(reco.model, model_version)

    def payload(u: int) -> tuple[str, bytes]:
        items = [(f"h{(u * 7 + j) % 500}", 1.0 - j / 11) for j in range(10)]
        encoded = codec.encode_payload(
            shape(reco),
            f"u{u}",
            items,
            model=reco.model,
            model_version=model_version,
            scored_at="2026-01-01T00:00:00Z",
        )
        return f"u{u}", encoded

    written = write_payloads(client, reco.name, info.version, (payload(u) for u in range(users)))
    versions.publish(info.version, written)
    return info.version


def get_status(url: str) -> int:
    """The status of one GET (an error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def metrics_text(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        return float("nan"), float("nan")
    q = statistics.quantiles(latencies, n=100)
    return q[49], q[98]


def run_requests(url: str, make: MakeRequest, clients: int, seconds: float) -> tuple[Result, int]:
    """``clients`` threads, each on one keep-alive connection, sending ``make(0)``,
    ``make(1)``, ... for ``seconds`` (or until ``make`` returns None); the result and the
    number of requests sent. An error is a status other than 200, a socket error, or an
    answer holding a per-instance error entry."""
    parts = urlsplit(url)
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        while time.perf_counter() < stop:
            request = make(next(counter))
            if request is None:
                break
            method, path, body, content_type = request
            headers = {"Content-Type": content_type} if body is not None else {}
            started = time.perf_counter()
            try:
                conn.request(method, path, body, headers)
                reply = conn.getresponse()
                ok = reply.status == 200 and b'"error"' not in reply.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                ok = False
            latencies[c].append((time.perf_counter() - started) * 1000)
            errors[c] += 0 if ok else 1
        conn.close()

    took = run_threads(client, clients)
    flat = [x for per in latencies for x in per]
    p50, p99 = _percentiles(flat)
    return Result(len(flat) / took, p50, p99, sum(errors), "python threads"), len(flat)


def describe_quantization(meta: dict[str, Any]) -> str:
    """Why a model has no LiteRT variants, from its model.json (empty when it has them)."""
    q = meta.get("quantization") or {}
    return "" if q.get("built") else str(q.get("reason") or "no record")
