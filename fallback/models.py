"""The promoted models in memory, and a watcher that swaps in a newly promoted version.

A swap never drops a request: the new version is loaded and warmed up completely beside
the old one, then one reference is replaced. Requests hold the model they started with;
the old model's batcher keeps answering them for ``swap_grace_s`` and is closed after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fallback.batcher import BatchObserver, MicroBatcher
from fallback.settings import FallbackSettings
from prescore.errors import ModelStoreError, PrescoreError, Unavailable
from prescore.inference import load_runner, pick_runtime
from prescore.modelstore import ModelRef, ModelStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One model version, loaded, with its batcher."""

    name: str
    version: str
    runtime: str
    meta: dict[str, Any]
    batcher: MicroBatcher

    def predict(self, rows: np.ndarray, timeout_s: float) -> np.ndarray:
        return self.batcher.submit(rows, timeout_s)


def load_model(
    ref: ModelRef, settings: FallbackSettings, observe: BatchObserver | None = None
) -> ServedModel:
    """Load one version in the configured runtime, warm it up, start its batcher."""
    from fallback.predict import warm as prepare  # predict imports this module

    runtime = pick_runtime(ref.meta, ref.path, settings.runtime_for(ref.name))
    runner = load_runner(ref.path, runtime, settings.inference_threads or None)
    meta = (
        {**ref.meta, "serving": {"data_dir": settings.data_dir}} if settings.data_dir else ref.meta
    )
    warm = meta.get("input_shape") or ([meta["feature_width"]] if "feature_width" in meta else None)
    if isinstance(warm, list) and warm:  # first call builds kernels: not on a request
        runner(np.zeros((1, *warm), np.float32))
    prepare(ref.name, meta)
    batch = settings.batch_for(ref.name)
    batcher = MicroBatcher(
        runner,
        max_batch=batch.max_batch,
        max_wait_s=batch.max_wait_s,
        max_queue=batch.max_queue,
        adaptive=batch.adaptive,
        name=f"{ref.name}-{ref.version}",
        observe=observe,
    )
    return ServedModel(ref.name, ref.version, runtime, meta, batcher)


class ModelSlots:
    """The current ServedModel of each model name; swapped whole, read without a lock."""

    def __init__(
        self,
        store: ModelStore,
        settings: FallbackSettings,
        observe: Callable[[str], BatchObserver] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._observe = observe
        self._current: dict[str, ServedModel] = {}
        self._errors: dict[str, str] = {}
        self.swaps = 0

    def get(self, name: str) -> ServedModel:
        found = self._current.get(name)
        if found is None:
            why = self._errors.get(name, "not loaded yet")
            raise Unavailable(f"model {name!r} is not ready: {why}", code="model_not_ready")
        return found

    def loaded(self) -> dict[str, str]:
        return {name: m.version for name, m in self._current.items()}

    def ready(self) -> bool:
        return all(name in self._current for name in self.settings.models)

    def refresh(self, name: str) -> bool:
        """Load the promoted version of ``name`` if it is not the one served; True if swapped."""
        try:
            promoted = self.store.promoted(name)
            current = self._current.get(name)
            if promoted is None or (current is not None and current.version == promoted):
                if promoted is None:
                    self._errors[name] = "no promoted version in the model store"
                return False
            ref = self.store.resolve(name, promoted)
            observe = self._observe(name) if self._observe else None
            model = load_model(ref, self.settings, observe)
        except (PrescoreError, OSError, ValueError, ImportError, AttributeError, KeyError) as exc:
            self._errors[name] = str(exc)
            log.warning("model %s: not loaded: %s", name, exc)
            return False
        old = self._current.get(name)
        self._current = {**self._current, name: model}  # one reference replaced
        self._errors.pop(name, None)
        self.swaps += 1 if old is not None else 0
        log.info("model %s: serving version %s (%s)", name, model.version, model.runtime)
        if old is not None:
            closer = threading.Timer(self.settings.swap_grace_s, old.batcher.close)
            closer.daemon = True
            closer.start()
        return True

    def refresh_all(self) -> None:
        for name in self.settings.models:
            self.refresh(name)


class Watcher:
    """A daemon thread that re-reads the PROMOTED pointers every ``interval_s``."""

    def __init__(self, slots: ModelSlots, interval_s: float) -> None:
        self.slots = slots
        self.interval_s = interval_s
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
            except ModelStoreError as exc:  # the store is down: keep serving what we have
                log.warning("model watcher: %s", exc)
            log.debug("model watcher pass in %.3fs", time.monotonic() - started)
