"""The retraining pipeline of a declared dataset: train, evaluate, gate, score, publish,
promote. The shop domain's own training entry point, real TensorFlow, real spark-submit
(local mode), real Redis, small data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobs.retrain import Options, decide, run
from jobs.retrain_state import RunState
from prescore.errors import InvalidInput, PrescoreError
from prescore.models.store import ModelStore
from prescore.settings import Settings
from prescore.store.versions import Versions
from tests import domains
from tests.helpers import stored_payload, with_catalog


def test_gate_rule() -> None:
    first = {"metric": "auc", "candidate": {"version": "1", "auc": 0.70}, "promoted": None}
    assert decide(first, 0.005)[0] is True
    same = {
        "metric": "auc",
        "candidate": {"version": "2", "auc": 0.700},
        "promoted": {"version": "1", "auc": 0.703},
    }
    ok, why = decide(same, 0.005)
    assert ok and "within" in why
    worse = {
        "metric": "map",
        "candidate": {"version": "2", "map": 0.69},
        "promoted": {"version": "1", "map": 0.70},
    }
    ok, why = decide(worse, 0.005)
    assert not ok and "stays" in why and "map" in why
    assert decide(worse, 0.02)[0] is True  # a looser margin lets it through
    # a metric that cannot be computed (held-out labels of one class: NaN, null in JSON)
    unmeasured = {"metric": "auc", "candidate": {"version": "1", "auc": None}, "promoted": None}
    ok, why = decide(unmeasured, 0.005)
    assert not ok and "cannot be computed" in why  # a first model too: nothing to judge by
    nan = {**same, "candidate": {"version": "2", "auc": float("nan")}}
    assert decide(nan, 0.005)[0] is False
    stuck = {**same, "promoted": {"version": "1", "auc": None}}  # a NaN promoted earlier
    assert decide(stuck, 0.005)[0] is True  # would otherwise keep every candidate out


def test_run_state_survives_a_restart(tmp_path: Path) -> None:
    state = RunState(tmp_path, "run-1")
    assert not state.done("train")
    state.record("train", {"version": "3"})
    with pytest.raises(PrescoreError, match="running in another process") as busy:
        RunState(tmp_path, "run-1")  # two processes at once would share its model folder
    assert busy.value.code == "run_busy"
    state.close()  # the process ended (or was killed: the OS lets go of its lock)
    again = RunState(tmp_path, "run-1")
    assert again.done("train") and again.result("train")["version"] == "3"
    assert again.started_at == state.started_at
    assert json.loads((tmp_path / "run-1" / "state.json").read_text())["steps"]["train"]
    assert not list((tmp_path / "run-1").glob("*.tmp*"))
    with pytest.raises(InvalidInput):
        RunState(tmp_path, "../escape")


def _opts(settings: Settings, run_id: str, **kw: Any) -> Options:
    base: dict[str, Any] = {"int8": False, "master": "local[2]", "driver_memory": "1g"}
    state_dir = str(Path(settings.var_dir) / "retrain")
    return Options(dataset="shop", run_id=run_id, state_dir=state_dir, **{**base, **kw})


def _state(settings: Settings, run_id: str) -> dict[str, Any]:
    return dict(
        json.loads((Path(settings.var_dir) / "retrain" / run_id / "state.json").read_text())
    )


def test_pipeline_end_to_end(
    settings: Settings,
    shop: dict[str, Path],
    rclient: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TABLES", str(shop["tables"]))
    s = with_catalog(settings, domains.shop_config(shop["tables"], tmp_path / "prescore.toml"))
    store = ModelStore(s.models)
    data = Versions(rclient, "shop", s.store)

    # 1. No model yet: the first candidate is scored, published, then promoted.
    first = run(s, _opts(s, "first"))
    assert first["decision"] == "promote" and "no promoted model" in first["reason"]
    assert first["steps_done"] == ["train", "evaluate", "gate", "score", "promote"]
    assert store.promoted("shop-model") == first["promoted"] == "1"
    live = data.current()
    assert live is not None and first["published_version"] == live
    assert data.get(live).model_version == "1"
    payload = json.loads(stored_payload(rclient, "shop", live, "c1"))
    assert payload["model_version"] == "1" and payload["items"]
    assert first["candidate"]["auc"] > 0.65  # the shop's rule is learnt

    # 2. A worse candidate (trained on shuffled labels) is not promoted, nor scored.
    monkeypatch.setenv("SHOP_GOOD", "0")
    worse = run(s, _opts(s, "worse"))
    cand, prev = worse["candidate"], worse["promoted_before"]
    assert worse["decision"] == "keep" and "stays" in worse["reason"]
    assert (cand["version"], prev["version"]) == ("2", "1")
    assert cand["heldout_rows"] == prev["heldout_rows"]  # the same held-out rows
    assert cand["auc"] < prev["auc"] - 0.01
    assert worse["steps_done"] == ["train", "evaluate", "gate"]
    assert store.promoted("shop-model") == "1" and data.current() == live
    report = json.loads((Path(s.var_dir) / "retrain" / "worse" / "report.json").read_text())
    assert report["decision"] == "keep"

    # 3. A run that dies after evaluating, then runs again: training is not redone.
    monkeypatch.setenv("SHOP_GOOD", "1")
    run(s, _opts(s, "nightly", until="evaluate"))
    trained_at = _state(s, "nightly")["steps"]["train"]["finished_at"]
    assert store.versions("shop-model") == ["1", "2", "3"]
    done = run(s, _opts(s, "nightly", max_regression=0.5))
    assert store.versions("shop-model") == ["1", "2", "3"]
    assert _state(s, "nightly")["steps"]["train"]["finished_at"] == trained_at
    assert done["decision"] == "promote" and store.promoted("shop-model") == "3"
    assert data.get(data.current() or "").model_version == "3"

    # 4. Killed after publishing but before recording it: the re-run finds the version
    #    instead of scoring again; nothing else is redone.
    state_path = Path(s.var_dir) / "retrain" / "nightly" / "state.json"
    state = json.loads(state_path.read_text())
    del state["steps"]["score"], state["steps"]["promote"]
    state_path.write_text(json.dumps(state))
    published = [i.version for i in data.all() if i.status == "published"]
    again = run(s, _opts(s, "nightly", max_regression=0.5))
    assert again["published_version"] == done["published_version"]
    assert [i.version for i in data.all() if i.status == "published"] == published
    assert store.versions("shop-model") == ["1", "2", "3"]


def test_a_run_that_fails_at_scoring_leaves_model_and_data_from_one_model(
    settings: Settings,
    shop: dict[str, Path],
    rclient: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHOP_TABLES", str(shop["tables"]))
    s = with_catalog(settings, domains.shop_config(shop["tables"], tmp_path / "prescore.toml"))
    store = ModelStore(s.models)
    data = Versions(rclient, "shop", s.store)
    run(s, _opts(s, "good"))
    live = data.current()
    assert store.promoted("shop-model") == "1" and live is not None
    with pytest.raises(subprocess.CalledProcessError):  # spark-submit refuses the run
        run(s, _opts(s, "broken", max_regression=0.5, driver_memory="not-a-size"))
    # the candidate passed its gate and is registered, but was never promoted: the
    # promoted model is the one that made the live data, so live answers agree with it
    assert store.versions("shop-model") == ["1", "2"]
    assert store.promoted("shop-model") == "1"
    assert data.current() == live and data.get(live).model_version == "1"
    assert _state(s, "broken")["steps"].keys() == {"train", "evaluate", "gate"}


def test_a_resumed_run_promotes_only_while_its_scores_are_live(
    rclient: Any, settings: Settings, tmp_path: Path
) -> None:
    """A run killed after its score and resumed after another publish (a nightly run of
    the promoted model) would promote a model whose scores are not what readers get:
    refused, the promoted model unchanged."""
    from jobs.retrain import step_promote
    from prescore.errors import PublishError
    from tests.lookup_helpers import publish_customers, served_settings

    s = served_settings(settings, tmp_path / "var")
    ours = publish_customers(rclient, s, 3)  # the version this run's score published
    nightly = publish_customers(rclient, s, 3)  # then another, made by another model
    with pytest.raises(PublishError, match=f"the live version is {nightly}, not {ours}") as no:
        step_promote(s, s.catalog.get("shop"), "2", ours)
    assert no.value.code == "live_changed"
    assert not Path(ModelStore(s.models).root.removeprefix("file://")).exists()  # untouched


@pytest.mark.parametrize(
    ("training", "said"),
    [
        (
            'entry = "tests.domains:no_such_training"',
            "training tests.domains:no_such_training raised",
        ),
        ('command = ["no-such-trainer-xyz", "{output}"]', "'no-such-trainer-xyz' cannot run"),
    ],
)
def test_a_training_that_raises_or_cannot_start_fails_in_one_line(
    settings: Settings, shop: dict[str, Path], tmp_path: Path, capsys: Any, training: str, said: str
) -> None:
    from jobs.retrain import main

    config = domains.shop_config(shop["tables"], tmp_path / "prescore.toml")
    text = config.read_text().replace('entry = "tests.domains:train_shop_entry"', training)
    config.write_text(text)
    argv = ["--dataset", "shop", "--config", str(config), "--redis-url", settings.redis.url]
    argv += ["--model-store", settings.models.root, "--state-dir", str(tmp_path / "state")]
    assert main(argv) == 1
    out = capsys.readouterr()
    failed = [line for line in out.out.splitlines() if "failed:" in line]
    assert len(failed) == 1 and "training_failed" in failed[0] and said in failed[0], out.out
    assert "Traceback" not in out.out + out.err


def test_run_ids_begun_in_one_second_are_their_own() -> None:
    from jobs.retrain_state import new_run_id

    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("retrain-") for i in ids)
