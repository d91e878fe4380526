"""The retraining pipeline: train, gate against the promoted model, score, publish; real
TensorFlow, real local Spark (spark-submit), real Redis, small data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs.retrain import Options, decide, run
from jobs.retrain_state import RunState
from prescore import keys
from prescore.errors import InvalidInput
from prescore.modelstore import ModelStore
from prescore.settings import Settings
from prescore.versions import Versions


def test_gate_rule() -> None:
    first = {"candidate": {"version": "1", "auc": 0.70}, "promoted": None}
    assert decide(first, 0.005)[0] is True
    same = {"candidate": {"version": "2", "auc": 0.700}, "promoted": {"version": "1", "auc": 0.703}}
    ok, why = decide(same, 0.005)
    assert ok and "within" in why
    worse = {"candidate": {"version": "2", "auc": 0.69}, "promoted": {"version": "1", "auc": 0.70}}
    ok, why = decide(worse, 0.005)
    assert not ok and "stays" in why
    assert decide(worse, 0.02)[0] is True  # a looser margin lets it through


def test_run_state_survives_a_restart(tmp_path: Path) -> None:
    state = RunState(tmp_path, "run-1")
    assert not state.done("train")
    state.record("train", {"version": "3"})
    again = RunState(tmp_path, "run-1")
    assert again.done("train") and again.result("train")["version"] == "3"
    assert again.started_at == state.started_at
    assert json.loads((tmp_path / "run-1" / "state.json").read_text())["steps"]["train"]
    assert not list((tmp_path / "run-1").glob("*.tmp*"))
    with pytest.raises(InvalidInput):
        RunState(tmp_path, "../escape")


def _opts(data: Path, settings: Settings, run_id: str, **kw: Any) -> Options:
    return Options(
        data=str(data),
        run_id=run_id,
        state_dir=str(Path(settings.var_dir) / "retrain"),
        int8=False,
        master="local[2]",
        driver_memory="1g",
        **{"epochs": 2, "seed": 5, **kw},
    )


def _state(settings: Settings, run_id: str) -> dict[str, Any]:
    return dict(
        json.loads((Path(settings.var_dir) / "retrain" / run_id / "state.json").read_text())
    )


def test_pipeline_end_to_end(
    reco_data: Path, settings: Settings, rclient: Any, tmp_path: Path
) -> None:
    store = ModelStore(settings.models)
    reco = Versions(rclient, "reco", settings.store)

    # 1. No model yet: the first candidate is promoted (stopping before the bulk job).
    first = run(settings, _opts(reco_data, settings, "first", until="gate"))
    assert first["decision"] == "promote" and "no promoted model" in first["reason"]
    assert store.promoted("reco") == first["candidate"]["version"] == "1"
    assert first["published_version"] is None and reco.current() is None

    # 2. A candidate trained on far too little data is worse on the same held-out
    #    events: the default margin keeps the promoted model, nothing is published.
    starved = _starved_copy(reco_data, tmp_path / "starved", keep=150)
    worse = run(settings, _opts(starved, settings, "starved", epochs=1))
    cand, prev = worse["candidate"], worse["promoted_before"]
    assert worse["decision"] == "keep" and "stays" in worse["reason"]
    assert (cand["version"], prev["version"]) == ("2", "1")
    assert cand["test_events"] == prev["test_events"]  # the same held-out events
    assert cand["auc"] < prev["auc"] - 0.005 and prev["auc"] > 0.6
    assert store.promoted("reco") == "1" and reco.current() is None
    assert worse["steps_done"] == ["train", "evaluate", "gate"]
    report_file = Path(settings.var_dir) / "retrain" / "starved" / "report.json"
    assert json.loads(report_file.read_text())["decision"] == "keep"

    # A margin that demands a clear improvement also keeps an equally good candidate.
    strict = run(settings, _opts(reco_data, settings, "strict", max_regression=-0.2))
    assert strict["decision"] == "keep" and store.promoted("reco") == "1"
    assert strict["candidate"]["auc"] > 0.6

    # 3. A run that dies after evaluating, then runs again: training is not redone.
    run(settings, _opts(reco_data, settings, "nightly", max_regression=0.5, until="evaluate"))
    trained_at = _state(settings, "nightly")["steps"]["train"]["finished_at"]
    assert store.versions("reco") == ["1", "2", "3", "4"]
    done = run(settings, _opts(reco_data, settings, "nightly", max_regression=0.5))
    assert store.versions("reco") == ["1", "2", "3", "4"]
    assert _state(settings, "nightly")["steps"]["train"]["finished_at"] == trained_at
    assert done["decision"] == "promote" and store.promoted("reco") == "4"
    live = reco.current()
    assert live is not None and done["published_version"] == live
    info = reco.get(live)
    assert info.status == "published" and info.model_version == "4"
    payload = json.loads(rclient.get(keys.value_key("reco", live, "u1")))
    assert payload["model_version"] == "4" and payload["items"]

    # 4. Killed after publishing but before recording it: the re-run finds the version
    #    instead of scoring again; nothing else is redone.
    state_path = Path(settings.var_dir) / "retrain" / "nightly" / "state.json"
    state = json.loads(state_path.read_text())
    del state["steps"]["score"]
    state_path.write_text(json.dumps(state))
    again = run(settings, _opts(reco_data, settings, "nightly", max_regression=0.5))
    assert again["published_version"] == live
    assert [i.version for i in reco.all() if i.status == "published"] == [live]
    assert store.versions("reco") == ["1", "2", "3", "4"]


def _starved_copy(data: Path, out: Path, keep: int) -> Path:
    """The same data set with only ``keep`` training events (held-out events unchanged)."""
    import pandas as pd

    shutil.copytree(data, out)
    train = pd.read_parquet(out / "events_train.parquet")
    train.sample(keep, random_state=1).to_parquet(out / "events_train.parquet", index=False)
    return out
