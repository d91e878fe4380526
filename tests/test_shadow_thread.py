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
from tests.helpers import DEMO_CONFIG


def test_a_check_that_fails_is_logged_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ServedDatasets.of(load(DEMO_CONFIG, {"PRESCORE_VAR": str(tmp_path)})).get("reco")
    item = spec.shape.entry_field
    answer = json.dumps({spec.shape.list_field: [{item: "h1", "score": 0.5}]}).encode()
    asked: list[str] = []

    def ask(dataset: str, instances: list[dict[str, Any]], version: Resolved) -> list[Any]:
        asked.append(instances[0]["key"])
        if len(asked) == 1:
            raise RuntimeError("a fault of the checker's own")  # not a PrescoreError
        return [answer]

    metrics = Metrics()
    checker = ShadowChecker(ask, metrics)
    version = Resolved("reco", "v1")
    checker.offer(spec, "u1", None, answer, version)  # queued before the thread starts
    assert asked == []
    assert checker.start().running
    checker.offer(spec, "u2", None, answer, version)
    deadline = time.monotonic() + 10
    while checker.checked < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    checker.stop()
    assert asked == ["u1", "u2"] and checker.checked == 1
    failed = [r for r in caplog.records if "shadow check of reco u1 failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None  # said with its cause
    overlap = metrics.registry.get_sample_value(
        "prescore_lookup_shadow_overlap_sum", {"dataset": "reco"}
    )
    assert overlap == 1.0  # the second check compared its answers
    assert not checker.running
