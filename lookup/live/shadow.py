"""Shadow checks: a sample of hits is also answered live, off the request's path, and the
two answers compared.

With ``LOOKUP_SHADOW_RATE`` above 0 (e.g. 0.01: one hit in a hundred), a hit is queued
(a bounded queue; when it is full the check is skipped, never the answer delayed) and a
background thread asks live inference for the same key, from the model version that made
the precomputed answer, never writing it back. The share of the precomputed entries the
live answer also has (``prescore_lookup_shadow_overlap``) and the mean score difference of
the entries both have (``prescore_lookup_shadow_score_diff``) are observed per dataset:
drift between the bulk and the live path, or an int8 variant that has stopped agreeing
with the float model the bulk job ran, shows there before users see it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from lookup.datasets import Served
from lookup.metrics import Metrics
from lookup.store import Resolved
from prescore.errors import PrescoreError

log = logging.getLogger(__name__)
Ask = Callable[[str, list[dict[str, Any]], Resolved], list[Any]]  # FallbackClient.answer


def entries(payload: bytes, spec: Served) -> dict[str, float]:
    """An answer's entries: name (item key or label) -> score."""
    doc = json.loads(payload)
    out = {}
    for entry in doc.get(spec.shape.list_field) or []:
        if isinstance(entry, dict) and isinstance(entry.get("score"), int | float):
            out[str(entry.get(spec.shape.entry_field))] = float(entry["score"])
    return out


def compare(precomputed: dict[str, float], live: dict[str, float]) -> tuple[float, float | None]:
    """(share of the precomputed entries the live answer has, mean |score difference|)."""
    if not precomputed:
        return (1.0 if not live else 0.0), None
    both = [k for k in precomputed if k in live]
    diff = sum(abs(precomputed[k] - live[k]) for k in both) / len(both) if both else None
    return len(both) / len(precomputed), diff


class ShadowChecker:
    """Compares sampled hits with live answers on a daemon thread that its owner starts
    (:meth:`start`) and stops (:meth:`stop`). A check that fails is logged with its cause
    and skipped; the thread goes on with the next."""

    def __init__(self, ask: Ask, metrics: Metrics, queued: int = 100) -> None:
        self.ask = ask
        self.metrics = metrics
        self.checked = 0
        self._queue: queue.Queue[tuple[Served, str, str | None, bytes, Resolved]] = queue.Queue(
            queued
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)

    def start(self) -> ShadowChecker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def offer(
        self, spec: Served, key: str, context: str | None, payload: bytes, version: Resolved
    ) -> None:
        with contextlib.suppress(queue.Full):  # a check skipped; answers are never held
            self._queue.put_nowait((spec, key, context, payload, version))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                spec, key, context, payload, version = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._check(spec, key, context, payload, version)
            except (PrescoreError, ValueError, KeyError) as exc:  # no comparable answer
                log.info("shadow check of %s %s skipped: %s", spec.name, key, type(exc).__name__)
            except Exception:  # a fault of its own: said with its traceback, never fatal
                log.exception("shadow check of %s %s failed", spec.name, key)

    def _check(
        self, spec: Served, key: str, context: str | None, payload: bytes, version: Resolved
    ) -> None:
        instance: dict[str, Any] = {"key": key}
        if context:
            instance["context"] = context
        live = self.ask(spec.name, [instance], version)[0]
        if not isinstance(live, bytes):
            return
        overlap, diff = compare(entries(payload, spec), entries(live, spec))
        self.metrics.seconds(self.metrics.shadow_overlap, spec.name, overlap)
        if version.side:  # a canary runs: which side this answer came from
            self.metrics.seconds(
                self.metrics.canary_shadow_overlap, spec.name, overlap, version.side
            )
        if diff is not None:
            self.metrics.seconds(self.metrics.shadow_diff, spec.name, diff)
        self.checked += 1
