"""Pre-switch data gates: each refuses a run broken in its own way and passes a normal
rerun; a refused version is listed as gated with its report, never served, and can be
released by an operator (recorded). Real Redis, real parquet; one real Spark run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs.score import parse_args, run_job
from prescore.encoding.codec import PayloadShape
from prescore.errors import PublishError
from prescore.publishing import gates
from prescore.publishing.parquet import publish_file
from prescore.settings import Settings
from prescore.store.versions import Versions
from tests import domains
from tests.frames import read_frame, write_frame
from tests.helpers import ROOT, registered, with_catalog

CONFIG = """
[datasets.picks]
kind = "external"
key_field = "customer_id"
list_field = "items"
entry_field = "product_id"
"""
USERS = 400


def _scores(i: int, shift: float = 0.0, n: int = 5) -> list[dict[str, object]]:
    rng = np.random.default_rng(i)
    base = np.sort(rng.beta(2, 5, n))[::-1] + shift
    return [{"product_id": f"p{j}", "score": round(float(s), 4)} for j, s in enumerate(base)]


def _write(path: Path, users: range, **kw: object) -> Path:
    rows = [
        {"customer_id": f"c{i}", "payload": json.dumps({"items": _scores(i, **kw)})} for i in users
    ]  # type: ignore[arg-type]
    write_frame(pd.DataFrame(rows), path, index=False)
    return path


@pytest.fixture()
def picks(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "prescore.toml"
    path.write_text(CONFIG)
    return with_catalog(settings, path)


def _publish(s: Settings, rclient, path: Path):  # type: ignore[no-untyped-def]
    lines: list[str] = []
    report = publish_file(
        rclient, s.store, s.catalog.get("picks"), str(path), json_column="payload", say=lines.append
    )
    return report, "\n".join(lines)


@pytest.mark.parametrize(
    ("broken", "failing"),
    [
        ({"users": range(USERS // 3)}, {"rows", "coverage"}),  # most keys missing
        ({"shift": 0.5}, {"drift"}),  # scores shifted
        ({"n": 0}, {"payload_size"}),  # payloads empty
    ],
)
def test_each_gate_refuses_its_broken_run_and_a_normal_rerun_passes(
    picks: Settings, rclient, tmp_path: Path, broken: dict, failing: set[str]
) -> None:  # type: ignore[no-untyped-def]
    v = Versions(rclient, "picks", picks.store)
    first, _ = _publish(picks, rclient, _write(tmp_path / "a.parquet", range(USERS)))
    assert first.published
    users = broken.pop("users", range(USERS))
    bad, _ = _publish(picks, rclient, _write(tmp_path / "b.parquet", users, **broken))
    assert not bad.published and bad.gated and v.current() == first.version
    info = v.get(bad.version)
    assert info.status == "gated" and "gated:" in info.note
    report = info.extra["gates"]
    assert {c["name"] for c in report["checks"] if not c["passed"]} == failing
    assert v.count_keys(bad.version) > 0  # kept, to be looked at
    rerun, _ = _publish(picks, rclient, _write(tmp_path / "c.parquet", range(USERS)))
    assert rerun.published and v.current() == rerun.version
    assert all(c["passed"] for c in v.get(rerun.version).extra["gates"]["checks"])
    assert 0 < v.get(rerun.version).extra["gate_seconds"] < 60  # what the gates cost it


def test_a_gated_version_is_released_by_an_operator_and_says_so(
    picks: Settings, redis_url: str, rclient, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _first, _ = _publish(picks, rclient, _write(tmp_path / "a.parquet", range(USERS)))
    bad, _ = _publish(picks, rclient, _write(tmp_path / "b.parquet", range(USERS), shift=0.5))
    assert bad.gated
    env = {
        "PRESCORE_CONFIG": picks.catalog.source,
        "REDIS_URL": redis_url,
        "PATH": "/usr/bin:/bin",
        "PRESCORE_OPERATOR": "oncall-ana",
    }
    cli = [sys.executable, "-m", "prescore.cli"]
    listed = subprocess.run(
        [*cli, "versions", "picks"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "gated" in listed and "drift" in listed
    refused = subprocess.run(
        [*cli, "release", "picks", bad.version],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2  # --reason is required
    newer, _ = _publish(picks, rclient, _write(tmp_path / "c.parquet", range(USERS)))
    assert not newer.gated  # live now, and newer than the gated one
    release = [*cli, "release", "picks", bad.version, "--reason", "new pricing"]
    stale = subprocess.run(release, env=env, cwd=ROOT, capture_output=True, text=True)
    assert stale.returncode == 1 and "stale_publish" in stale.stderr, stale.stderr
    v = Versions(rclient, "picks", picks.store)
    assert v.current() == newer.version  # a release moves forward only, as a publish does
    done = subprocess.run(
        [*release, "--force"], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    info = v.get(bad.version)
    assert v.current() == bad.version and info.status == "published"
    assert info.extra["released_by"] == "oncall-ana" and "new pricing" in info.note
    assert f"forced over the newer live version {newer.version}" in info.note


def test_a_bulk_run_missing_half_its_entities_is_gated(
    spark, settings: Settings, shop: dict[str, Path], rclient, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tables = tmp_path / "tables"
    shutil.copytree(shop["tables"], tables)
    s = with_catalog(settings, domains.shop_config(tables, tmp_path / "p.toml"))
    registered(s, "shop-model", shop["plain"])
    good = run_job(spark, parse_args(["--dataset", "shop"]), s)
    customers = read_frame(tables / "customers.parquet")
    write_frame(customers.iloc[: len(customers) // 2], tables / "customers.parquet", index=False)
    with pytest.raises(PublishError) as info:
        run_job(spark, parse_args(["--dataset", "shop"]), s)
    assert info.value.code == "gated" and "coverage" in info.value.message
    v = Versions(rclient, "shop", s.store)
    assert v.current() == good.version
    assert [i.status for i in v.all()][:1] == ["gated"]


def test_the_decode_gate_reads_as_the_lookup_reads() -> None:
    shape = PayloadShape("customer_id", "items", "product_id")
    ok = b'{"customer_id":"c1","items":[{"product_id":"p1","score":0.5}],"model_version":"1"}'
    assert gates.decodes(ok, shape, "c1") == "" and gates.decodes(ok, shape, "c1|weekend") == ""
    assert "its customer_id" in gates.decodes(ok, shape, "c2")
    bad_order = b'{"customer_id":"c1","items":[{"score":0.5,"product_id":"p1"}]}'
    assert "not opening with product_id" in gates.decodes(bad_order, shape, "c1")
    assert "numeric score" in gates.decodes(
        b'{"customer_id":"c1","items":[{"product_id":"p"}]}', shape, "c1"
    )
    assert "not a JSON object" in gates.decodes(b"[1]", shape, "c1")
    assert gates.psi(np.linspace(0, 1, 500), np.linspace(0, 1, 500)) < 0.01
    assert gates.psi(np.linspace(0, 1, 500), np.linspace(0.5, 1.5, 500)) > 1


def test_a_batchs_part_of_the_sample_is_its_share_of_ranks_and_at_least_its_floor() -> None:
    from prescore.publishing import gates

    found = [f"user-{i}" for i in range(2000)]
    assert set(gates.sampled(found, 1.0, 0)) == set(found)
    half = gates.sampled(found, 0.5, 0)
    assert 800 < len(half) < 1200  # about half; which ones, the same whoever asks
    parts = gates.sampled(found[:700], 0.5, 0) + gates.sampled(found[700:], 0.5, 0)
    assert sorted(parts) == sorted(half)  # whichever task holds a key
    assert set(gates.sampled(found, 0.0, 10)) == set(gates.sample_keys(found, 10))  # the floor
    assert gates.sample_keys(found, 10) == gates.sample_keys(list(reversed(found)), 10)
