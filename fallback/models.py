"""The models live inference serves: each dataset's promoted version, and the version that
made its live data when a lookup asks for that one.

A lookup sends the model version recorded with the dataset version it read, so a live
answer comes from the model that made the precomputed ones beside it. Loaded versions
are kept per dataset in one bounded, locked cache (``FALLBACK_MODELS_KEPT``, the least
recently used dropped first); the promoted version is loaded at start and whenever the
watcher sees a new one promoted. A version asked for that is not loaded is loaded in the
background: until it is, its requests get 503 ``model_loading`` at once, never a wait
past their deadline. A version the store does not have answers 404
``unknown_model_version``; one that fails to load answers 503 ``model_unavailable``; both
at once, and the store is asked again only after ``FALLBACK_WATCH_INTERVAL_S``.
A new version is loaded and warmed up beside the old one, then one
reference is replaced; a dropped version's batcher answers the requests that already
hold it for ``swap_grace_s`` and is closed after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fallback.batcher import BatchObserver, Feed, MicroBatcher
from fallback.settings import FallbackSettings
from prescore.data.datasets import Dataset
from prescore.errors import ModelStoreError, NotFound, PrescoreError, Unavailable
from prescore.models.inference import Runner, load_runner, pick_runtime
from prescore.models.store import ModelRef, ModelStore

log = logging.getLogger(__name__)
_FAILED_KEPT = 64  # failed loads remembered (a bound on what odd versions asked can grow)
_MISSING = "not in the model store"


@dataclass(frozen=True)
class ServedModel:
    """One model version, loaded for one dataset, with its batcher."""

    dataset: str
    name: str
    version: str
    runtime: str
    runner: Runner
    batcher: MicroBatcher
    factored: bool  # pairs are scored from encoded rows (score_pairs); else from raw features
    prepared: dict[str, Any]  # what its dataset's predictor built once (encoded items, ...)

    @property
    def meta(self) -> dict[str, Any]:
        return self.runner.meta

    def predict(self, feed: Feed, timeout_s: float) -> np.ndarray:
        return self.batcher.submit(feed, timeout_s)


Prepare = Callable[[Runner], dict[str, Any]]


def load_model(
    dataset: Dataset,
    ref: ModelRef,
    settings: FallbackSettings,
    prepare: Prepare,
    observe: BatchObserver | None = None,
) -> ServedModel:
    """Load one version in the configured runtime, prepare and warm it, start its batcher."""
    runtime = pick_runtime(ref.meta, ref.path, settings.runtime_for(dataset.name))
    runner = load_runner(ref.path, ref.meta, runtime, settings.inference_threads or None)
    factored = runtime == "tf" and runner.signatures.factored and dataset.kind == "ranking"
    prepared = prepare(runner)
    if factored:
        call: Callable[[Feed], np.ndarray] = lambda feed: runner.call("score_pairs", feed)  # type: ignore[attr-defined]  # noqa: E731
    else:
        call = runner
    warm = prepared.get("warm")
    if warm is not None:  # the first call builds kernels: not on a request
        call(warm)
    batch = settings.batch_for(dataset.kind)
    batcher = MicroBatcher(
        call,
        max_batch=batch.max_batch,
        max_wait_s=batch.max_wait_s,
        max_queue=batch.max_queue,
        adaptive=batch.adaptive,
        name=f"{dataset.name}-{ref.version}",
        observe=observe,
    ).start()
    return ServedModel(
        dataset.name, ref.name, ref.version, runtime, runner, batcher, factored, prepared
    )


class ModelSlots:
    """The loaded versions of each served dataset's model (bounded, locked)."""

    def __init__(
        self,
        store: ModelStore,
        settings: FallbackSettings,
        prepare: Callable[[Dataset], Prepare],
        observe: Callable[[str], BatchObserver] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.datasets = {n: settings.core.catalog.get(n) for n in settings.served()}
        self._prepare = prepare
        self._observe = observe
        self._loaded: dict[str, OrderedDict[str, ServedModel]] = {
            n: OrderedDict() for n in self.datasets
        }
        self._promoted: dict[str, str] = {}
        self._loading: set[tuple[str, str]] = set()
        # versions that could not be loaded: (dataset, version) -> (when, why); tried again
        # only after ``watch_interval_s``, so a version the store lacks is no load per request
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.swaps = 0

    def get(self, dataset: str, version: str | None = None) -> ServedModel:
        """The model of ``dataset`` at ``version`` (default: the promoted one)."""
        if dataset not in self.datasets:
            raise Unavailable(
                f"dataset {dataset!r} is not answered live here", code="model_not_ready"
            )
        wanted = version or self._promoted.get(dataset)
        with self._lock:
            found = self._loaded[dataset].get(wanted) if wanted else None
            if found is not None:
                self._loaded[dataset].move_to_end(found.version)
                return found
        if wanted is None:
            why = self._errors.get(dataset, "not loaded yet")
            raise Unavailable(
                f"the model of {dataset!r} is not ready: {why}", code="model_not_ready"
            )
        failed = self._recent_failure(dataset, wanted)
        if failed is None and self._missing(dataset, wanted):
            failed = _MISSING
        if failed is not None:
            if failed == _MISSING:
                raise NotFound(
                    f"model {self.datasets[dataset].model!r} has no version {wanted}",
                    code="unknown_model_version",
                )
            raise Unavailable(
                f"model version {wanted} of {dataset!r} cannot be loaded: {failed}",
                code="model_unavailable",
            )
        self._load_later(dataset, wanted)
        raise Unavailable(
            f"model version {wanted} of {dataset!r} is loading; retry shortly", code="model_loading"
        )

    def loaded(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: list(models) for name, models in self._loaded.items()}

    def promoted(self) -> dict[str, str]:
        return dict(self._promoted)

    def ready(self) -> bool:
        return all(self._promoted.get(n) in self._loaded[n] for n in self.datasets)

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def _recent_failure(self, dataset: str, version: str) -> str | None:
        """Why ``version`` failed to load, if it did within the watch interval."""
        failed = self._failed.get((dataset, version))
        if failed is None or time.monotonic() - failed[0] >= self.settings.watch_interval_s:
            return None
        return failed[1]

    def _missing(self, dataset: str, version: str) -> bool:
        """True (and remembered) if the store lists no such version; a store that cannot
        be asked is left to the load, which remembers why it failed."""
        with self._lock:
            if (dataset, version) in self._loading:
                return False
        try:
            listed = self.store.versions(self.datasets[dataset].model)
        except Exception:  # any store failure (WebHDFS has its own errors): the load tells it
            return False
        if version in listed:
            return False
        self._remember_failure(dataset, version, _MISSING)
        return True

    def _load_later(self, dataset: str, version: str) -> None:
        with self._lock:
            if (dataset, version) in self._loading:
                return
            self._loading.add((dataset, version))
        threading.Thread(target=self.load, args=(dataset, version), daemon=True).start()

    def load(self, dataset: str, version: str) -> ServedModel | None:
        """Load ``version`` of ``dataset``'s model into the cache (None if it cannot be)."""
        d = self.datasets[dataset]
        try:
            ref = self.store.resolve(d.model, version)
            observe = self._observe(dataset) if self._observe else None
            model = load_model(d, ref, self.settings, self._prepare(d), observe)
        except (PrescoreError, OSError, ValueError, ImportError, AttributeError, KeyError) as exc:
            self._remember_failure(dataset, version, str(exc))
            if version == self._promoted.get(dataset) or dataset not in self._promoted:
                self._errors[dataset] = str(exc)  # what /readyz reports
            log.warning("dataset %s: model %s/%s not loaded: %s", dataset, d.model, version, exc)
            return None
        finally:
            with self._lock:
                self._loading.discard((dataset, version))
        with self._lock:
            self._failed.pop((dataset, version), None)
            slot = self._loaded[dataset]
            slot[model.version] = model
            keep = {self._promoted.get(dataset), model.version}  # never the two in use
            dropped = []
            for oldest in [v for v in slot if v not in keep]:
                if len(slot) <= self.settings.models_kept:
                    break
                dropped.append(slot.pop(oldest))
        for old in dropped:
            self._retire(old)
        self._errors.pop(dataset, None)
        log.info("dataset %s: loaded %s/%s (%s)", dataset, model.name, model.version, model.runtime)
        return model

    def _remember_failure(self, dataset: str, version: str, why: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._failed = {
                k: v for k, v in self._failed.items() if now - v[0] < self.settings.watch_interval_s
            }
            self._failed[(dataset, version)] = (now, why)
            while len(self._failed) > _FAILED_KEPT:
                self._failed.pop(next(iter(self._failed)))

    def _retire(self, old: ServedModel) -> None:
        closer = threading.Timer(self.settings.swap_grace_s, old.batcher.close)
        closer.daemon = True
        closer.start()

    def refresh(self, dataset: str) -> bool:
        """Load the promoted version of ``dataset``'s model if it is new; True if swapped."""
        d = self.datasets[dataset]
        try:
            promoted = self.store.promoted(d.model)
        except (PrescoreError, OSError) as exc:
            self._errors[dataset] = str(exc)
            return False
        if promoted is None:
            self._errors[dataset] = f"model {d.model!r} has no promoted version"
            return False
        if promoted == self._promoted.get(dataset):
            return False
        have = self.loaded()[dataset]
        if promoted not in have and self.load(dataset, promoted) is None:
            return False
        swapped = dataset in self._promoted
        self._promoted = {**self._promoted, dataset: promoted}  # one reference replaced
        self.swaps += 1 if swapped else 0
        return True

    def refresh_all(self) -> None:
        for dataset in self.datasets:
            self.refresh(dataset)


class Watcher:
    """A daemon thread that re-reads the PROMOTED pointers periodically (the tables are
    fallback.inputs.Upkeep's), and never dies of a failed pass."""

    def __init__(
        self, slots: ModelSlots, interval_s: float, also: Callable[[], None] | None = None
    ) -> None:
        self.slots = slots
        self.interval_s = interval_s
        self.also = also
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.monotonic()
            try:
                self.slots.refresh_all()
                if self.also is not None:
                    self.also()
            except ModelStoreError as exc:  # the store is down: keep serving what we have
                log.warning("model watcher: %s", exc)
            except Exception:  # anything else: said, and the next pass runs as usual
                log.exception("model watcher pass failed")
            log.debug("model watcher pass in %.3fs", time.monotonic() - started)
