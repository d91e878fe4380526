"""Canary versions: a staged version served to a stable share of keys beside the live one,
chosen by a hash of the key, or to requests that ask for it; promoted or aborted
atomically, ended by any switch, kept by gc while it runs. Real Redis, real parquet
files, the real lookup app and CLI. A canary raced by real processes paused at each step
is in tests/test_version_races.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.api import Prescore
from prescore.cli.main import main
from prescore.encoding import keys, routing
from prescore.errors import NotFound, PublishError
from prescore.publishing.parquet import PublishReport
from prescore.settings import Settings
from prescore.store import canaries
from prescore.store.versions import Versions, write_payloads
from tests.frames import write_frame
from tests.helpers import SIMILAR_CONFIG, publish_similar, with_catalog

KEYS = [f"s{i}" for i in range(100)]  # a batch holds at most 100


@pytest.fixture()
def similar(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "prescore.toml"
    path.write_text(SIMILAR_CONFIG)
    return with_catalog(settings, path)


def _publish(s: Settings, rclient: Any, tmp: Path, tag: str, **options: Any) -> PublishReport:
    report: PublishReport = publish_similar(s, rclient, tmp, KEYS, tag, **options)
    return report


def _batch(api: Any, skus: list[str], query: str = "", **headers: str) -> dict[str, Any]:
    answer = api.post(f"/v1/similar:batchGet{query}", json={"keys": skus}, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    doc: dict[str, Any] = answer.get_json()
    return doc


def test_slots_are_pinned_and_a_share_is_the_share_asked_for() -> None:
    # golden: the slots a lookup and any other reader give these keys, on any machine
    assert routing.slot("a", "v1") == 6986 and routing.slot("user-42", "v1") == 3153
    assert routing.slot("s1", "20261207T000000.000Z-aaaaaa") == 2298
    assert routing.slot("user-42", "v2") == 382  # salted: each canary has keys of its own
    users = [f"user-{i}" for i in range(100_000)]
    five = {k for k in users if routing.to_canary(k, "v1", routing.share_of(5))}
    assert abs(len(five) / len(users) - 0.05) <= 0.005
    twenty = {k for k in users if routing.to_canary(k, "v1", routing.share_of(20))}
    assert five < twenty  # raising the share keeps the keys already in
    assert routing.canary_keys(users, "v1", routing.share_of(5)) == five  # a batch's
    for bad in (0, -1, 100.5, float("nan"), 0.001):
        with pytest.raises(ValueError, match=r"from 0\.01 to 100"):
            routing.share_of(bad)
    assert routing.share_of(100) == routing.SCALE and routing.percent_of(500) == 5


def test_a_staged_version_serves_its_share_of_keys_until_promoted(
    similar: Settings, rclient: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = _publish(similar, rclient, tmp_path, "live")
    staged = _publish(similar, rclient, tmp_path, "new", stage=True)
    assert staged.staged and not staged.published
    v = Versions(rclient, "similar", similar.store)
    assert v.current() == live.version and v.get(staged.version).status == "staged"
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert {r["similar"][0]["sku"] for r in _batch(api, KEYS)["results"]} == {"live"}

    started = Prescore(settings=similar).canary("similar", staged.version, 25)
    assert (started.live, started.version, started.share) == (live.version, staged.version, 2500)
    to_canary = {k for k in KEYS if routing.to_canary(k, staged.version, 2500)}
    assert 0 < len(to_canary) < len(KEYS)
    doc = _batch(api, KEYS)
    assert doc["dataset_version"] == live.version and doc["canary_version"] == staged.version
    for key, item in zip(KEYS, doc["results"], strict=True):  # each says who answered it
        want = staged.version if key in to_canary else live.version
        assert item["dataset_version"] == want
        assert item["similar"][0]["sku"] == ("new" if key in to_canary else "live")
    live_key = next(k for k in KEYS if k not in to_canary)  # each side has one, whatever
    for key in ("s1", "s2", "s3", sorted(to_canary)[0], live_key):  # a single lookup agrees
        single = api.get(f"/v1/similar/{key}").get_json()
        assert single["similar"][0]["sku"] == ("new" if key in to_canary else "live")
    # what the operator's and the notebook's reads say is what readers get, key by key
    got = Prescore(settings=similar).get_many("similar", KEYS)
    assert [g["similar"][0]["sku"] for g in got] == [
        "new" if k in to_canary else "live" for k in KEYS
    ]
    pinned_live = Prescore(settings=similar).get(
        "similar", sorted(to_canary)[0], version=live.version
    )
    assert pinned_live is not None and pinned_live["similar"][0]["sku"] == "live"
    cli = ["--redis-url", similar.redis.url, "--config", str(tmp_path / "prescore.toml")]
    for key in (sorted(to_canary)[0], next(k for k in KEYS if k not in to_canary)):
        assert main([*cli, "show", "similar", key, "-o", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["version"] == (staged.version if key in to_canary else live.version)
        assert shown["canary"] is (key in to_canary)
    # a header sends the whole request to one side; a pin asks for one version
    key = next(k for k in KEYS if k not in to_canary)
    single = api.get(f"/v1/similar/{key}", headers={"X-Prescore-Canary": "1"})
    assert single.get_json()["dataset_version"] == staged.version
    assert single.headers["Vary"] == "X-Prescore-Canary"
    doc = _batch(api, KEYS, **{"X-Prescore-Canary": "0"})
    assert {r["dataset_version"] for r in doc["results"]} == {live.version}
    assert "canary_version" not in doc
    doc = _batch(api, KEYS, f"?version={staged.version}")
    assert {r["dataset_version"] for r in doc["results"]} == {staged.version}
    pinned = api.get(f"/v1/similar/{key}?version={staged.version}").get_json()
    assert pinned["dataset_version"] == staged.version
    unknown = "20200101T000000.000Z-abcdef"
    for bad, status, code in ((unknown, 404, "version_not_served"), ("x", 400, "invalid_version")):
        refused = api.get(f"/v1/similar/s1?version={bad}")
        assert (refused.status_code, refused.get_json()["error"]) == (status, code)
    refused = api.get("/v1/similar/s1", headers={"X-Prescore-Canary": "maybe"})
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_header")
    # metrics split by the side that served
    page = api.get("/metrics").get_data(as_text=True)
    for side in ("live", "canary"):
        hits = f'{{dataset="similar",result="hit",served="{side}"}}'
        assert f"prescore_lookup_canary_keys_total{hits}" in page
        assert f'prescore_lookup_canary_seconds_count{{dataset="similar",served="{side}"}}' in page
    share = f'{{dataset="similar",version="{staged.version}"}} 25.0'
    assert f"prescore_dataset_canary_percent{share}" in page

    promoted = Prescore(settings=similar).promote("similar", staged.version, by="ops")
    assert promoted.status == "published" and "promoted from a 25% canary" in promoted.note
    assert v.current() == staged.version and rclient.exists(keys.canary_key("similar")) == 0
    doc = _batch(api, KEYS)
    assert {r["similar"][0]["sku"] for r in doc["results"]} == {"new"}
    assert "canary_version" not in doc
    assert "prescore_dataset_canary_percent{" not in api.get("/metrics").get_data(as_text=True)


def test_a_canary_is_refused_for_what_it_cannot_serve_and_ended_by_any_switch(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    py = Prescore(settings=similar)
    first = _publish(similar, rclient, tmp_path, "first")
    with pytest.raises(PublishError) as live_one:
        py.canary("similar", first.version, 5)
    assert live_one.value.code == "not_a_candidate"
    with pytest.raises(NotFound) as none:
        py.promote("similar", first.version)
    assert none.value.code == "no_canary"
    with pytest.raises(NotFound) as unknown:
        py.canary("similar", "20200101T000000.000Z-abcdef", 5)
    assert unknown.value.code == "unknown_version"
    one = _publish(similar, rclient, tmp_path, "one", stage=True)
    with pytest.raises(PublishError) as bad_share:
        py.canary("similar", one.version, 0)
    assert bad_share.value.code == "invalid_percent"
    assert py.canary("similar", one.version, 5, dry_run=True).share == 500
    assert rclient.exists(keys.canary_key("similar")) == 0  # a dry run changes nothing
    py.canary("similar", one.version, 5)
    # a newer staged version retires the older staged ones, but never the canary's
    two = _publish(similar, rclient, tmp_path, "two", stage=True)
    v = Versions(rclient, "similar", similar.store)
    assert v.get(one.version).status == "staged"
    with pytest.raises(PublishError) as running:
        py.canary("similar", two.version, 5)
    assert running.value.code == "canary_running"
    assert py.canary("similar", one.version, 50).share == 5000  # ramped in place

    assert py.gc("similar", dry_run=True)["retire"] == []
    ended = py.abort("similar")
    assert ended.version == one.version and v.get(one.version).status == "staged"
    assert py.gc("similar", dry_run=True)["retire"] == [one.version]
    py.gc("similar")
    assert v.get(one.version).status == "retired" and v.count_keys(one.version) == 0
    with pytest.raises(PublishError) as retired:
        py.canary("similar", one.version, 5)
    assert retired.value.code == "not_a_candidate"

    # a full publish ends the canary in its own switch: it ran beside the version left
    py.canary("similar", two.version, 10)
    after = _publish(similar, rclient, tmp_path, "next")
    assert canaries.read(rclient, "similar")[1] is None
    assert rclient.exists(keys.canary_key("similar")) == 0
    assert v.get(two.version).status == "retired"  # older than the live one: it cannot go live
    # so does a rollback; a canary left beside a version no longer live counts for nothing
    three = _publish(similar, rclient, tmp_path, "three", stage=True)
    py.canary("similar", three.version, 10)
    assert py.rollback("similar").version == first.version
    assert canaries.read(rclient, "similar")[1] is None
    rclient.set(keys.canary_key("similar"), f"{after.version} {three.version} 500")
    api = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    assert "canary_version" not in _batch(api, KEYS)


def test_the_cli_stages_canaries_promotes_and_aborts(
    similar: Settings, rclient: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = _publish(similar, rclient, tmp_path, "live")
    rows = [{"sku": k, "payload": json.dumps({"similar": []})} for k in KEYS]
    path = tmp_path / "new.parquet"
    write_frame(pd.DataFrame(rows), path, index=False)
    cli = ["--redis-url", similar.redis.url, "--config", str(tmp_path / "prescore.toml")]
    publish = [*cli, "publish", "similar", str(path), "--json-column", "payload"]
    with pytest.raises(SystemExit) as both:  # one or the other
        main([*publish, "--stage", "--incremental"])
    assert both.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main([*publish, "--stage", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["staged"] and not report["published"]
    staged = report["version"]
    assert main([*cli, "canary", "similar"]) == 0
    assert capsys.readouterr().out.strip() == f"similar: no canary beside {live.version}"
    assert main([*cli, "canary", "similar", staged]) == 2  # the share is asked for
    assert "--percent" in capsys.readouterr().err
    for bad in ("0", "101", "nan", "five"):  # a usage error, before Redis is asked
        with pytest.raises(SystemExit) as refused:
            main([*cli, "canary", "similar", staged, "--percent", bad])
        assert refused.value.code == 2 and "--percent" in capsys.readouterr().err
    assert main([*cli, "canary", "similar", staged, "--percent", "5", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["canary"] == {"live": live.version, "version": staged, "percent": 5.0}
    assert main([*cli, "versions", "similar", "-o", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["canary"] == {"live": live.version, "version": staged, "percent": 5.0}
    assert main([*cli, "versions", "similar"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if staged in line)
    assert row.startswith("~") and "staged, canary 5%" in row
    assert main([*cli, "abort", "similar", "--dry-run"]) == 0
    assert "would be ended" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bare:  # the version is always named
        main([*cli, "promote", "similar"])
    assert bare.value.code == 2
    capsys.readouterr()
    assert main([*cli, "promote", "similar", staged.lower()]) == 2  # no id, no model version
    assert "neither a version id of similar" in capsys.readouterr().err
    assert main([*cli, "promote", "similar", staged]) == 0
    assert f"similar: {staged} promoted" in capsys.readouterr().out
    assert Versions(rclient, "similar", similar.store).current() == staged
    assert main([*cli, "abort", "similar"]) == 1
    assert "no_canary" in capsys.readouterr().err


def test_a_promotion_is_refused_where_a_publish_would_be_and_stale_staged_versions_go(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    """A canary's version older than the live one, or gated against another live version,
    is not promoted unless forced; nothing is staged beside nothing; a publish ends a
    canary, and gc retires a staged version once a newer one went live."""
    py = Prescore(settings=similar)
    nothing_live = _publish(similar, rclient, tmp_path, "first", stage=True)
    assert (nothing_live.error, nothing_live.staged) == ("no_version", False)
    assert rclient.hlen(keys.registry_key("similar")) == 0  # refused before writing
    p0 = _publish(similar, rclient, tmp_path, "p0")
    p1 = _publish(similar, rclient, tmp_path, "p1")
    staged = _publish(similar, rclient, tmp_path, "new", stage=True)  # gated against p1
    assert py.rollback("similar").version == p0.version
    py.canary("similar", staged.version, 5)
    for dry_run in (True, False):
        with pytest.raises(PublishError) as elsewhere:
            py.promote("similar", staged.version, dry_run=dry_run)
        assert elsewhere.value.code == "gated_against_another"  # p0 is live, not p1
        assert "stage a new run" in elsewhere.value.message
    with pytest.raises(PublishError) as wrong:
        py.promote("similar", p1.version)
    assert wrong.value.code == "not_the_canary"
    forced = py.promote("similar", staged.version, force=True)
    assert forced.note.endswith("(forced)")
    v = Versions(rclient, "similar", similar.store)
    assert v.current() == staged.version
    py.canary("similar", p1.version, 5)  # a published version older than the live one
    with pytest.raises(PublishError) as older:
        py.promote("similar", p1.version)
    assert older.value.code == "stale_publish"
    py.abort("similar")

    # a run begun before the live version cannot be staged, forced or not
    late_run = v.begin("m", "")
    write_payloads(rclient, "similar", late_run.version, [("s1", b'{"sku":"s1","similar":[]}')])
    _publish(similar, rclient, tmp_path, "p2")
    with pytest.raises(PublishError) as stale:
        v.publish(late_run.version, 1, stage=True, force=True)
    assert stale.value.code == "stale_publish"
    assert v.get(late_run.version).status == "failed"

    # a publish ends a running canary and says so; a staged version older than the new
    # live one can no longer be promoted, and gc retires it
    late = _publish(similar, rclient, tmp_path, "late", stage=True)
    py.canary("similar", late.version, 5)
    lines: list[str] = []
    _publish(similar, rclient, tmp_path, "nightly", say=lines.append)
    assert f"  the canary of {late.version} (5%) ended" in lines
    assert v.get(late.version).status == "retired" and v.count_keys(late.version) == 0


def test_a_batch_header_names_the_versions_its_keys_were_read_from(
    similar: Settings, rclient: Any, tmp_path: Path
) -> None:
    """A lookup caching the pointer with its canary: after a promotion, a batch with a
    missing key reads the pointer again, and its header names the version that answered;
    the dataset's description shows the canary; LOOKUP_VERSION_PICK=0 ignores a
    request's choice."""
    live = _publish(similar, rclient, tmp_path, "live")
    staged = _publish(similar, rclient, tmp_path, "new", stage=True)
    py = Prescore(settings=similar)
    py.canary("similar", staged.version, 50)
    cached = create_app(LookupSettings(core=similar, pointer_cache_s=3600)).test_client()
    described = cached.get("/v1/datasets/similar").get_json()
    assert described["canary"] == {"version": staged.version, "model_version": "", "percent": 50}
    assert _batch(cached, KEYS[:20])["canary_version"] == staged.version  # caches the canary
    py.promote("similar", staged.version)
    doc = _batch(cached, [*KEYS[:20], "s-unknown"])  # the miss makes it read afresh
    assert doc["dataset_version"] == staged.version and "canary_version" not in doc
    assert {r["dataset_version"] for r in doc["results"][:20]} == {staged.version}
    assert cached.get("/v1/datasets/similar").get_json()["canary"] is None

    py.canary("similar", live.version, 50)  # the version it left, as a canary
    closed = LookupSettings(core=similar, pointer_cache_s=0, version_pick=False)
    api = create_app(closed).test_client()
    key = next(k for k in KEYS if not routing.to_canary(k, live.version, 5000))
    for headers in ({"X-Prescore-Canary": "1"}, {"X-Prescore-Canary": "nonsense"}):
        answer = api.get(f"/v1/similar/{key}?version={live.version}", headers=headers)
        assert (answer.status_code, answer.get_json()["dataset_version"]) == (200, staged.version)
