"""The shadow checker's thread (lookup.live.shadow): started and stopped by its owner, and
never ended by a check that fails, whatever the failure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lookup.datasets import ServedDatasets
from lookup.live.shadow import ShadowChecker
from lookup.metrics import Metrics
from lookup.store import Resolved
from prescore.data.datasets import load
from tests.helpers import SERVED_CONFIG


def test_a_check_that_fails_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ServedDatasets.of(load(SERVED_CONFIG, {"PRESCORE_VAR": str(tmp_path)})).get("shop")
    item = spec.shape.entry_field
    answer = json.dumps({spec.shape.list_field: [{item: "p1", "score": 0.5}]}).encode()
    asked: list[str] = []

    def ask(dataset: str, instances: list[dict[str, Any]], version: Resolved) -> list[Any]:
        asked.append(instances[0]["key"])
        if len(asked) == 1:
            raise RuntimeError("a fault of the checker's own")  # not a PrescoreError
        return [answer]

    metrics = Metrics()
    checker = ShadowChecker(ask, metrics)
    version = Resolved("shop", "v1")
    checker.offer(spec, "c1", None, answer, version)  # queued before the thread starts
    assert asked == []
    assert checker.start().running
    checker.offer(spec, "c2", None, answer, version)
    deadline = time.monotonic() + 10
    while checker.checked < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    checker.stop()
    assert asked == ["c1", "c2"] and checker.checked == 1
    failed = [r for r in caplog.records if "shadow check of shop c1 failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # said with its cause
    overlap = metrics.registry.get_sample_value(
        "prescore_lookup_shadow_overlap_sum", {"dataset": "shop"}
    )
    assert overlap == 1.0  # the second check compared its answers
    assert not checker.running
