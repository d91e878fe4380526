"""Incremental publishes: a delta of the live version, all or nothing, read before its
base by the lookup and the Python API, ordered, rolled back alone or with its version,
and removed by gc once its base has left. Real Redis, real parquet files, the real
lookup app and CLI. Deltas raced by real processes paused at their attach are in
tests/test_version_races.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.api import Prescore
from prescore.cli.main import main
from prescore.encoding import compact, keys
from prescore.errors import PublishError
from prescore.publishing.parquet import PublishReport, publish_file
from prescore.settings import Settings, StoreSettings
from prescore.store import deltas, values
from prescore.store.versions import Versions
from tests.frames import write_frame
from tests.helpers import SIMILAR_CONFIG, publish_similar, with_catalog


@pytest.fixture()
def similar(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "prescore.toml"
    path.write_text(SIMILAR_CONFIG)
    return with_catalog(settings, path)


def _publish(
    s: Settings, rclient: Any, tmp: Path, skus: range | list[int], tag: str, **options: Any
) -> PublishReport:
    report: PublishReport = publish_similar(
        s, rclient, tmp, [f"s{i}" for i in skus], tag, **options
    )
    return report


def _served(api: Any, *skus: str) -> list[str | None]:
    """The item each key is answered with, in one batch request (None: a miss)."""
    doc = api.post("/v1/similar:batchGet", json={"keys": list(skus)}).get_json()
    return [r["similar"][0]["sku"] if r.get("similar") else None for r in doc["results"]]


def test_a_delta_is_read_before_its_base_until_the_next_version_replaces_it(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    base = _publish(similar, rclient, tmp_path, range(100), "base")
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert _served(api, "s1", "s150") == ["base", None]

    one = _publish(similar, rclient, tmp_path, range(0, 200, 50), "one", incremental=True)
    assert one.published and one.rows == 4 and one.delta_of == base.version
    v = Versions(rclient, "similar", similar.store)
    assert v.current() == base.version  # the pointer did not move
    entry = v.get(one.version)
    assert (entry.status, entry.rows, entry.extra["delta_of"]) == ("delta", 4, base.version)
    # the delta's own keys and the base's others, from one request
    assert _served(api, "s0", "s1", "s150", "s199") == ["one", "base", "one", None]
    answer = api.get("/v1/similar/s150?k=1").get_json()
    assert answer["source"] == "precomputed" and answer["similar"] == [{"sku": "one", "score": 0.5}]
    # stored compactly, decoded with the delta's own frames
    stored = rclient.hget(v.placed(one.version).bucket("s150"), "s150")
    assert compact.is_compact(stored) and one.compact == 4
    py = Prescore(settings=similar)
    assert [d and d["similar"][0]["sku"] for d in py.get_many("similar", ["s0", "s1"])] == [
        "one",
        "base",
    ]
    # a second delta is read before the first where both hold a key
    two = _publish(similar, rclient, tmp_path, [0, 1], "two", incremental=True)
    assert _served(api, "s0", "s1", "s50", "s2") == ["two", "two", "one", "base"]
    assert deltas.read(rclient, "similar")[1] == (two.version, one.version)
    page = api.get("/metrics").get_data(as_text=True)
    assert 'prescore_dataset_deltas{dataset="similar"} 2.0' in page
    assert 'prescore_dataset_delta_rows{dataset="similar"} 6.0' in page

    # a new full version takes its base's deltas with it, in its own switch
    cached = create_app(LookupSettings(core=similar, pointer_cache_s=3600)).test_client()
    assert _served(cached, "s0", "s150") == ["two", "one"]
    lines: list[str] = []
    full = _publish(similar, rclient, tmp_path, range(100), "full", say=lines.append)
    assert f"  2 delta(s) went with the version it replaced: {two.version}, {one.version}" in lines
    assert _served(api, "s0", "s150") == ["full", None]
    assert rclient.exists(keys.deltas_key("similar")) == 0
    assert v.current() == full.version
    # a lookup still caching the base with its deltas reads them whole: their keys stay
    # while their base is kept for rollback, and go once it is retired
    assert _served(cached, "s0", "s150") == ["two", "one"]
    assert v.get(one.version).status == "delta" and v.count_keys(one.version) == 4
    for n in range(similar.store.keep_versions):
        _publish(similar, rclient, tmp_path, range(100), f"later{n}")
    assert v.get(base.version).status == "retired"
    for d in (one.version, two.version):
        assert v.get(d).status == "retired" and v.count_keys(d) == 0


def test_a_delta_rolled_back_alone_gives_back_what_was_read_before_it(
    similar: Settings, rclient: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(similar, rclient, tmp_path, range(10), "base")
    one = _publish(similar, rclient, tmp_path, [1, 2], "one", incremental=True)
    two = _publish(similar, rclient, tmp_path, [2, 3], "two", incremental=True)
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert _served(api, "s1", "s2", "s3") == ["one", "two", "two"]

    cli = ["--redis-url", similar.redis.url, "--config", str(tmp_path / "prescore.toml")]
    assert main([*cli, "versions", "similar", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["deltas"] == [two.version, one.version]
    assert main([*cli, "show", "similar", "s3", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["delta"] == two.version and shown["payload"]["similar"][0]["sku"] == "two"
    assert main([*cli, "rollback", "similar", "--delta", two.version, "-o", "json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["delta"]["version"], done["delta"]["status"]) == (two.version, "retired")
    assert _served(api, "s1", "s2", "s3") == ["one", "one", "base"]
    v = Versions(rclient, "similar", similar.store)
    assert v.get(two.version).status == "retired" and v.count_keys(two.version) == 0
    # taken off twice: it says so; a delta that is none of the live version's names them
    assert main([*cli, "rollback", "similar", "--delta", two.version]) == 1
    err = capsys.readouterr().err
    assert "unknown_delta" in err and "was already taken off (retired: rolled back" in err
    assert main([*cli, "rollback", "similar", "--delta", "20200101T000000.000Z-abcdef"]) == 1
    err = capsys.readouterr().err
    assert "unknown_delta" in err and one.version in err
    # a rollback of the version says which deltas go with it
    assert main([*cli, "rollback", "similar", "--dry-run", "-o", "json"]) == 1  # none older


def test_a_version_rolled_back_takes_its_deltas_and_gc_removes_them(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    first = _publish(similar, rclient, tmp_path, range(10), "first")
    second = _publish(similar, rclient, tmp_path, range(10), "second")
    one = _publish(similar, rclient, tmp_path, [1], "one", incremental=True)
    py = Prescore(settings=similar)
    assert py.rollback("similar").version == first.version
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert _served(api, "s1") == ["first"]
    # its keys stay while its base is kept for rollback (a cached reader's), unserved
    assert py.gc("similar", dry_run=True)["retire_deltas"] == []
    v = Versions(rclient, "similar", similar.store)
    assert v.get(one.version).status == "delta" and v.count_keys(one.version) == 1
    # rolled forward again, the version comes back without the delta it had
    assert py.rollback("similar", to=second.version).version == second.version
    assert _served(api, "s1") == ["second"]
    for n in range(similar.store.keep_versions):  # until its base is retired
        _publish(similar, rclient, tmp_path, range(10), f"later{n}")
    assert v.get(second.version).status == "retired"
    assert v.get(one.version).status == "retired" and v.count_keys(one.version) == 0


def test_a_delta_without_a_live_version_or_with_bad_rows_publishes_nothing(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    for dry_run in (False, True):  # refused before anything is written
        with pytest.raises(PublishError, match="no live version to add a delta to"):
            _publish(similar, rclient, tmp_path, [1], "one", incremental=True, dry_run=dry_run)
    assert rclient.hlen(keys.registry_key("similar")) == 0
    base = _publish(similar, rclient, tmp_path, range(10), "base")
    bad = tmp_path / "bad.parquet"
    rows = [{"sku": "s1", "payload": "{not json"}, {"sku": "s2", "payload": '{"similar": []}'}]
    write_frame(pd.DataFrame(rows), bad, index=False)
    report = publish_file(
        rclient,
        similar.store,
        similar.catalog.get("similar"),
        str(bad),
        json_column="payload",
        incremental=True,
        say=lambda line: None,
    )
    v = Versions(rclient, "similar", similar.store)
    assert not report.published and v.get(report.version).status == "failed"
    assert report.delta_of == base.version and report.error == "publish_failed"
    assert v.count_keys(report.version) == 0 and rclient.exists(keys.deltas_key("similar")) == 0
    assert v.current() == base.version
    # a delta within the gate sample has every payload decoded: one bad entry fails it
    good = {"similar": [{"sku": "x", "score": 0.5}]}
    rows = [{"sku": f"s{i}", "payload": json.dumps(good)} for i in range(600)]
    rows[0]["payload"] = json.dumps({"similar": [{"sku": "x", "score": "high"}]})
    write_frame(pd.DataFrame(rows), bad, index=False)
    dataset = similar.catalog.get("similar")
    report = publish_file(
        rclient, similar.store, dataset, str(bad), json_column="payload", incremental=True
    )
    assert (report.published, report.error) == (False, "gated")
    assert "an entry without a numeric score" in v.get(report.version).note


def test_a_lookup_still_caching_a_rolled_back_delta_answers_from_the_base(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    """Within its pointer cache a lookup still lists a delta just rolled back (whose
    keys are gone): its keys are answered from the version's own buckets, never missed."""
    _publish(similar, rclient, tmp_path, range(10), "base")
    one = _publish(similar, rclient, tmp_path, [1, 20], "one", incremental=True)
    api = create_app(LookupSettings(core=similar, pointer_cache_s=3600)).test_client()
    assert _served(api, "s1", "s20", "s2") == ["one", "one", "base"]
    Prescore(settings=similar).rollback_delta("similar", one.version)
    assert _served(api, "s1", "s20", "s2") == ["base", None, "base"]
    fresh = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert _served(fresh, "s1", "s20") == ["base", None]


def test_a_full_version_that_began_before_a_delta_carries_it_over(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    """A bulk run begun before a correction was published switches in after it: the
    correction's data is newer than the run's, so it stays, now a delta of the run's
    version; a delta that began before the run goes with the version it was made for."""
    _publish(similar, rclient, tmp_path, range(10), "base")
    older = _publish(similar, rclient, tmp_path, [1], "older", incremental=True)
    v = Versions(rclient, "similar", similar.store)
    run = v.begin("m", "1", expected_keys=10)
    rows = (
        (f"s{i}", json.dumps({"sku": f"s{i}", "similar": [{"sku": "run", "score": 0.5}]}).encode())
        for i in range(10)
    )
    written = values.write(rclient, v.placed(run.version), rows, fence=v.fence(run.version))
    fix = _publish(similar, rclient, tmp_path, [2], "fix", incremental=True)
    v.publish(run.version, written)
    assert deltas.read(rclient, "similar")[:2] == (run.version, (fix.version,))
    assert v.get(fix.version).extra["delta_of"] == run.version
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert _served(api, "s1", "s2", "s3") == ["run", "fix", "run"]
    assert older.version not in deltas.read(rclient, "similar")[1]


def test_small_deltas_pass_the_gates_and_one_that_fails_them_is_failed_not_held(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    rows = [
        {
            "sku": f"s{i}",
            "payload": json.dumps(
                {"similar": [{"sku": "x", "score": round(float(rng.random()), 4)}]}
            ),
        }
        for i in range(2000)
    ]
    write_frame(pd.DataFrame(rows), tmp_path / "base.parquet", index=False)
    dataset = similar.catalog.get("similar")
    quiet = {"json_column": "payload", "say": lambda line: None}
    assert publish_file(
        rclient, similar.store, dataset, str(tmp_path / "base.parquet"), **quiet
    ).published
    lines: list[str] = []
    for n in (1, 5, 20):  # too few scores to say anything of drift: not checked
        few = pd.DataFrame(rows[:n])
        write_frame(few, tmp_path / f"few{n}.parquet", index=False)
        done = publish_file(
            rclient,
            similar.store,
            dataset,
            str(tmp_path / f"few{n}.parquet"),
            incremental=True,
            json_column="payload",
            say=lines.append,
        )
        assert done.published, lines
    assert any("gate drift: ok  None" in line and "not checked: 1 scores" in line for line in lines)
    assert any(
        "gate payload_size: ok  None" in line and "not checked: 1 payloads" in line
        for line in lines
    )
    # payloads 10x the live ones' size, enough of them to say so: refused by payload_size,
    # and failed (never `gated`)
    big = [
        {"sku": f"s{i}", "payload": json.dumps({"similar": [{"sku": "x" * 400, "score": 0.5}]})}
        for i in range(150)
    ]
    write_frame(pd.DataFrame(big), tmp_path / "big.parquet", index=False)
    refused = publish_file(
        rclient, similar.store, dataset, str(tmp_path / "big.parquet"), incremental=True, **quiet
    )
    v = Versions(rclient, "similar", similar.store)
    assert not refused.published and not refused.gated
    assert v.get(refused.version).status == "failed" and v.count_keys(refused.version) == 0
    # the dashboards' last run is still the bulk one, whatever deltas came after
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    page = api.get("/metrics").get_data(as_text=True)
    assert 'prescore_job_last_status{dataset="similar",status="published"} 1.0' in page, page


def test_a_version_takes_at_most_max_deltas(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    _publish(similar, rclient, tmp_path, range(10), "base")
    for n in range(deltas.MAX_DELTAS):
        assert _publish(similar, rclient, tmp_path, [n % 10], f"d{n}", incremental=True).published
    with pytest.raises(PublishError, match=f"already has {deltas.MAX_DELTAS} deltas"):
        _publish(similar, rclient, tmp_path, [1], "last", incremental=True)


def test_a_delta_by_another_model_version_is_refused_and_gc_plans_what_it_does(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    base = _publish(similar, rclient, tmp_path, range(10), "base", model_version="7")
    # named another model version: refused before anything is written, dry run or not
    for dry_run in (False, True):
        with pytest.raises(PublishError, match="a delta holds the answers of its version's"):
            _publish(
                similar,
                rclient,
                tmp_path,
                [1],
                "x",
                incremental=True,
                model_version="8",
                dry_run=dry_run,
            )
    v = Versions(rclient, "similar", similar.store)
    assert [i.version for i in v.all()] == [base.version]
    one = _publish(similar, rclient, tmp_path, [1], "one", incremental=True)  # external/7
    assert one.published and v.get(one.version).model_version == "7"
    # once its base is retired by a publish, so is the delta: the dry run says both
    later = StoreSettings(keep_versions=1)
    _publish(similar, rclient, tmp_path, range(10), "later", model_version="7")
    plan = Versions(rclient, "similar", later).gc_plan()
    assert plan["retire"] == [base.version] and plan["retire_deltas"] == [one.version]


def test_a_delta_filling_the_gate_sample_has_its_drift_checked(
    settings: Settings, rclient: Any, tmp_path: Path
) -> None:
    config = tmp_path / "small.toml"
    config.write_text(SIMILAR_CONFIG + "\n[datasets.similar.gates]\nsample = 100\n")
    s = with_catalog(settings, config)
    low = [round(0.1 + i / 5000, 4) for i in range(300)]

    def rows(scores: list[float]) -> list[dict[str, str]]:
        return [
            {"sku": f"s{i}", "payload": json.dumps({"similar": [{"sku": "x", "score": x}]})}
            for i, x in enumerate(scores)
        ]

    dataset = s.catalog.get("similar")
    for name, scores, incremental in (("base", low, False), ("high", [x + 0.4 for x in low], True)):
        write_frame(pd.DataFrame(rows(scores)), tmp_path / f"{name}.parquet", index=False)
        done = publish_file(
            rclient,
            s.store,
            dataset,
            str(tmp_path / f"{name}.parquet"),
            json_column="payload",
            incremental=incremental,
            say=lambda line: None,
        )
    assert not done.published  # 100 scores, a full sample: drift checked, and failed
    # against the profile recorded with the live version, not a second read of its sample
    live = Versions(rclient, "similar", s.store).current() or ""
    profile = Versions(rclient, "similar", s.store).get(live).extra["gates"]["profile"]
    assert len(profile["edges"]) == 11 and profile["median_size"] > 0
    entry = Versions(rclient, "similar", s.store).get(done.version)
    assert entry.status == "failed" and "drift" in entry.note


def test_a_lookup_holds_the_keys_of_its_deltas_up_to_a_total(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    """A process holds the keys of its deltas up to ``held_keys`` in all: a delta beyond
    it is asked for every key (the same answers, without its keys in memory), and the
    keys of a delta no longer listed are let go."""
    from lookup.store import StoreReader

    _publish(similar, rclient, tmp_path, range(10), "base")
    one = _publish(similar, rclient, tmp_path, [1, 2, 3, 4], "one", incremental=True)
    two = _publish(similar, rclient, tmp_path, [4, 5], "two", incremental=True)
    reader = StoreReader(rclient, pointer_cache_s=0, held_keys=5)
    resolved = reader.resolve("similar")
    assert [d.placed.version for d in resolved.deltas] == [two.version, one.version]
    assert resolved.deltas[0].held == {"s4", "s5"} and resolved.deltas[1].held is None
    asked = ["s0", "s1", "s4", "s5"]
    read, found = reader.read("similar", asked)
    answers = [json.loads(read.as_json(f or b"{}", k)) for f, k in zip(found, asked, strict=True)]
    assert [a["similar"][0]["sku"] for a in answers] == [
        "base",
        "one",
        "two",
        "two",
    ]
    Prescore(settings=similar).rollback_delta("similar", two.version)
    three = _publish(similar, rclient, tmp_path, [7, 8, 9], "three", incremental=True)
    resolved = reader.resolve("similar")  # two's keys let go: three's fit
    assert resolved.deltas[0].placed.version == three.version
    assert resolved.deltas[0].held == {"s7", "s8", "s9"}
