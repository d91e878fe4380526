"""``prescore publish``: scores computed elsewhere, published from parquet with the same
verify-and-switch as the bulk jobs; bad rows counted and reported, never published
silently. Real Redis, real parquet files, the real CLI process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lookup.app import create_app
from lookup.settings import LookupSettings
from prescore.cli import output
from prescore.cli.main import main
from prescore.encoding import compact
from prescore.publishing.parquet import PublishReport, publish_file
from prescore.settings import Settings
from prescore.store.versions import Versions
from tests.frames import write_frame
from tests.helpers import ROOT, SIMILAR_CONFIG, on_terminal, stored_payload, with_catalog


@pytest.fixture()
def similar(settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "prescore.toml"
    path.write_text(SIMILAR_CONFIG)
    return with_catalog(settings, path)


def _rows(n: int) -> list[dict[str, str]]:
    return [
        {"sku": f"s{i}", "payload": json.dumps({"similar": [{"score": 0.5, "sku": f"s{i + 1}"}]})}
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    write_frame(pd.DataFrame(rows), path, index=False)
    return path


def _publish(similar: Settings, client: Any, path: Path, **options: Any) -> PublishReport:
    """publish_file of the JSON column ``payload`` of ``path`` as the dataset ``similar``."""
    dataset = similar.catalog.get("similar")
    return publish_file(client, similar.store, dataset, str(path), json_column="payload", **options)


BAD = [
    {"sku": "bad\tkey", "payload": "{}"},
    {"sku": "s-json", "payload": "{not json"},
    {"sku": "s-list", "payload": "[1, 2]"},
    {"sku": "s-entry", "payload": json.dumps({"similar": [{"score": 1}]})},
    {"sku": "s-nan", "payload": json.dumps({"similar": "none"})},
]


def test_published_rows_are_served_with_their_own_names(similar, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "scores.parquet", _rows(500))
    lines: list[str] = []
    report = _publish(
        similar,
        rclient,
        path,
        model="nightly-als",
        model_version="7",
        say=lines.append,
        progress_s=0.0,  # a progress line after every batch
    )
    assert report.published and report.rows == 500 and report.bad == 0
    said = [line for line in lines if " of 500 rows (100%), " in line]
    assert len(said) == 1 and said[0].startswith(f"  similar {report.version}: 500 of 500"), lines
    v = Versions(rclient, "similar", similar.store)
    info = v.get(v.current() or "")
    assert (info.status, info.rows, info.model, info.model_version) == (
        "published",
        500,
        "nightly-als",
        "7",
    )
    stored = stored_payload(rclient, "similar", info.version, "s3")
    # the entry field is put first (the lookup counts entries by it); the stamp is added
    assert stored.startswith(
        b'{"sku":"s3","similar":[{"sku":"s4","score":0.5}],"model":"nightly-als"'
    )
    assert any("published version" in line and "keys/s" in line for line in lines)
    client = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    doc = client.get("/v1/similar/s3?k=1").get_json()
    assert doc["source"] == "precomputed" and doc["similar"] == [{"sku": "s4", "score": 0.5}]
    assert doc["model_version"] == "7" and doc["scored_at"].endswith("Z")


def test_bad_rows_refuse_the_publish_unless_allowed(similar, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path / "scores.parquet", _rows(20) + BAD)
    v = Versions(rclient, "similar", similar.store)
    lines: list[str] = []
    refused = _publish(similar, rclient, path, say=lines.append)
    assert not refused.published and refused.bad == len(BAD)
    assert v.current() is None and v.get(refused.version).status == "failed"
    assert v.count_keys(refused.version) == 0  # nothing it wrote is left
    text = "\n".join(lines)
    for reason in (
        "'bad\\tkey': invalid_id",
        "'s-json': invalid_payload",
        "'s-list': invalid_payload",
        "'s-entry': invalid_payload",
        "'s-nan': invalid_payload",
    ):
        assert reason in text, text
    assert "5 bad row(s), more than the 0 allowed" in text
    allowed = _publish(similar, rclient, path, max_bad=5, say=lines.append)
    assert allowed.published and (allowed.rows, allowed.bad) == (20, 5)
    assert v.current() == allowed.version and v.count_keys(allowed.version) == 20


def test_payload_columns_and_the_cli(similar, redis_url, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "sku": ["a", "b"],
            "similar": [[{"sku": "b", "score": 0.9}], []],
            "note": ["x", "y"],
            "ignored": [1, 2],
        }
    )
    path = tmp_path / "cols.parquet"
    write_frame(frame, path, index=False)
    env = {
        "PRESCORE_CONFIG": similar.catalog.source,
        "REDIS_URL": redis_url,
        "PATH": "/usr/bin:/bin",
    }
    cli = [sys.executable, "-m", "prescore.cli", "publish", "similar", str(path)]
    ok = subprocess.run(
        [*cli, "--columns", "similar,note"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    v = Versions(rclient, "similar", similar.store)
    doc = json.loads(stored_payload(rclient, "similar", v.current() or "", "a"))
    assert (
        doc["similar"] == [{"sku": "b", "score": 0.9}]
        and doc["note"] == "x"
        and "ignored" not in doc
    )
    for flags, first in (([], compact.NARROW), (["--json-payloads"], ord("{"))):
        listed = subprocess.run(
            [*cli, "--columns", "similar", *flags], env=env, cwd=ROOT, capture_output=True
        )
        assert listed.returncode == 0, listed.stderr
        where = v.placed(v.current() or "")
        assert (rclient.hget(where.bucket("a"), "a") or b"")[0] == first  # as stored
        served = json.loads(stored_payload(rclient, "similar", where.version, "a"))
        assert served["similar"] == [{"sku": "b", "score": 0.9}] and "note" not in served
    before = len(Versions(rclient, "similar", similar.store).all())
    bad = subprocess.run(
        [*cli, "--json-column", "nope"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        bad.returncode == 1 and "no column nope; it has sku, similar, note, ignored" in bad.stdout
    )
    assert len(Versions(rclient, "similar", similar.store).all()) == before  # none begun
    unknown = subprocess.run(
        [sys.executable, "-m", "prescore.cli", "publish", "nope", str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 2 and "no dataset 'nope' is declared" in unknown.stderr


def test_an_integer_key_column_is_published_as_its_digits(similar, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"sku": i, "payload": json.dumps({"similar": [{"score": 0.5, "sku": "s1"}]})}
        for i in (7, 42)
    ]
    path = tmp_path / "int-keys.parquet"
    write_frame(pd.DataFrame(rows).astype({"sku": "int64"}), path, index=False)
    report = _publish(similar, rclient, path)
    assert report.published and (report.rows, report.bad) == (2, 0)
    client = create_app(LookupSettings(core=similar, pointer_cache_s=0)).test_client()
    doc = client.get("/v1/similar/42?k=1").get_json()
    assert doc["source"] == "precomputed" and doc["sku"] == "42"


def test_a_dry_run_checks_every_row_and_writes_nothing(  # type: ignore[no-untyped-def]
    similar, redis_url, rclient, tmp_path, capsys
) -> None:
    path = _write(tmp_path / "scores.parquet", _rows(20) + BAD)
    cli = ["--config", similar.catalog.source, "--redis-url", redis_url, "publish", "similar"]
    cli += [str(path), "--json-column", "payload", "--dry-run"]
    assert main([*cli, "-o", "json"]) == 1  # 5 bad rows, none allowed: it would fail
    said = capsys.readouterr()
    report = json.loads(said.out)
    assert report["dry_run"] and (report["rows"], report["bad"]) == (20, 5)
    assert not report["published"] and report["version"] == ""
    assert "would fail: 5 bad row(s), more than the 0 allowed" in said.err
    assert "'s-json': invalid_payload" in said.err
    assert main([*cli, "--max-bad", "5"]) == 0
    assert (
        "similar: dry run, nothing written: would write 20 keys, 5 bad row(s) skipped; "
        "live version now none" in capsys.readouterr().out
    )
    assert rclient.dbsize() == 0  # no registry entry, no key, no lease


def test_a_key_that_repeats_fails_the_dry_run_and_the_publish_before_its_gates(  # type: ignore[no-untyped-def]
    similar, redis_url, rclient, tmp_path, capsys
) -> None:
    """Two rows of one key are one key stored: the dry run says so, and a publish fails
    (not gated: a gated version whose count cannot match could never be released)."""
    repeats = _write(tmp_path / "scores.parquet", _rows(20) + _rows(20)[3:5])
    good = _write(tmp_path / "good.parquet", _rows(20))
    cli = ["--config", similar.catalog.source, "--redis-url", redis_url, "publish", "similar"]
    options = ["--json-column", "payload", "-o", "json"]
    assert main([*cli, str(repeats), *options, "--dry-run"]) == 1
    said = capsys.readouterr()
    assert json.loads(said.out)["repeated"] == 2
    want = "2 row(s) repeat a key (22 good rows, 20 distinct keys): each key is one row"
    assert f"would fail: {want}" in said.err
    assert rclient.dbsize() == 0
    v = Versions(rclient, "similar", similar.store)
    for live in (False, True):  # the first version, then beside a live one (gated before)
        if live:
            assert main([*cli, str(good), *options]) == 0
            capsys.readouterr()
        assert main([*cli, str(repeats), *options]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["error"] == "repeated_keys" and want in report["message"]
        assert not report["gated"] and v.get(report["version"]).status == "failed"


def test_on_a_terminal_publish_draws_a_bar_on_stderr_and_in_logs_says_lines(
    similar: Settings, redis_url: str, tmp_path: Path
) -> None:
    """Watched on a terminal (a pty), the rows' bar is drawn on stderr, redrawn in place,
    beside the command's lines, or beside its JSON on a piped stdout (-o json); with its
    output going to a pipe, no bar."""
    path = _write(tmp_path / "scores.parquet", _rows(300))
    env = {
        "PRESCORE_CONFIG": similar.catalog.source,
        "REDIS_URL": redis_url,
        "PATH": "/usr/bin:/bin",
    }
    publish = ["publish", "similar", str(path), "--json-column", "payload"]
    cli = [sys.executable, "-m", "prescore.cli", *publish]
    rc, screen, _ = on_terminal(cli, env, stdout_too=True)
    assert rc == 0, screen
    assert "\r" in screen and "similar " in screen and "100%" in screen and "300/300" in screen
    assert "published version" in screen
    rc, screen, out = on_terminal([*cli, "-o", "json"], env, stdout_too=False)
    assert rc == 0 and "100%" in screen and json.loads(out)["published"] is True, screen
    piped = subprocess.run(cli, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert piped.returncode == 0 and "published version" in piped.stdout, piped.stderr
    assert "100%" not in piped.stderr + piped.stdout


def test_the_lifecycle_refuses_versions_of_another_dataset(rclient) -> None:  # type: ignore[no-untyped-def]
    """publish_new writes through the caller's Versions: those of another dataset than the
    one published are a caller's mistake, refused before anything is registered."""
    from prescore.data.datasets import Dataset
    from prescore.publishing.lifecycle import publish_new
    from prescore.settings import StoreSettings

    other = Versions(rclient, "other", StoreSettings())
    with pytest.raises(ValueError, match="versions of other given to publish mine"):
        publish_new(other, Dataset(name="mine", kind="external"), ("m", "1"), lambda v, i: None)  # type: ignore[arg-type,return-value]
    assert other.all() == [] and Versions(rclient, "mine", StoreSettings()).all() == []


def test_a_publish_says_when_its_lists_are_not_best_first(similar, rclient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``k`` takes a list's first entries as stored: lists published worst first are told
    (not refused: an order of the team's own may be meant)."""

    def rows(best_first: bool) -> list[dict[str, str]]:
        scores = [0.9, 0.2] if best_first else [0.2, 0.9]
        entries = [{"sku": f"x{j}", "score": s} for j, s in enumerate(scores)]
        return [{"sku": f"s{i}", "payload": json.dumps({"similar": entries})} for i in range(50)]

    told = {}
    for best_first in (False, True):
        said: list[str] = []
        path = _write(tmp_path / f"{best_first}.parquet", rows(best_first))
        assert _publish(similar, rclient, path, say=said.append).published
        told[best_first] = [line for line in said if "not best first" in line]
    assert told[True] == []
    assert told[False] == [
        "  lists: 50 of the sampled payloads are not best first; k and limit take a list's "
        "first entries as stored"
    ]


def test_a_failed_writer_is_recorded_in_one_line(rclient, capsys) -> None:  # type: ignore[no-untyped-def]
    """A writer's error that carries a traceback (a Spark task's) is recorded as the
    error it ends with; the versions table keeps every note on its row."""
    from prescore.data.datasets import Dataset
    from prescore.publishing.lifecycle import publish_new
    from prescore.settings import StoreSettings

    def write(v, info):  # type: ignore[no-untyped-def]
        raise RuntimeError(
            "An exception was thrown from the Python worker.\nTraceback (most recent call "
            'last):\n  File "worker.py", line 9, in score\nIndexError: invalid index\n'
        )

    v = Versions(rclient, "mine", StoreSettings())
    with pytest.raises(RuntimeError):
        publish_new(v, Dataset(name="mine", kind="external"), ("m", "1"), write, say=print)
    (info,) = v.all()
    assert (info.status, info.note) == ("failed", "IndexError: invalid index")
    other = Versions(rclient, "plain", StoreSettings())
    with pytest.raises(ValueError):
        publish_new(other, Dataset(name="plain", kind="external"), ("m", "1"), _raise, say=print)
    assert other.all()[0].note == "ValueError: no such column x"
    assert output.table(["note"], [["two\nlines"]]).splitlines()[-1] == "two lines"


def _raise(v, info):  # type: ignore[no-untyped-def]
    raise ValueError("no such column x\nmore")


def test_a_publish_sends_no_batch_after_one_is_refused(  # type: ignore[no-untyped-def]
    similar, rclient, tmp_path, monkeypatch
) -> None:
    """Each batch is written on a thread while the next is read and packed, one batch in
    flight at most: once one is refused (here the version is failed by an operator after
    two have landed), the publish stops there and leaves nothing behind."""
    from prescore.publishing import parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 10)  # 60 rows: 6 batches
    path = _write(tmp_path / "scores.parquet", _rows(60))
    sent: list[int] = []
    fence = Versions.fence

    def failed_after_two(self: Versions, version: str, token: str | None = None):  # type: ignore[no-untyped-def]
        send = fence(self, version, token)

        def counted(batch, progress) -> None:  # type: ignore[no-untyped-def]
            if len(sent) == 2:
                self.fail(version, "failed by an operator")
            sent.append(len(batch.keys))
            send(batch, progress)

        return counted

    monkeypatch.setattr(Versions, "fence", failed_after_two)
    report = _publish(similar, rclient, path, say=lambda _: None)
    assert not report.published and report.error == "lease_lost"
    assert sent == [10, 10, 10]  # the third was refused; no fourth was sent
    v = Versions(rclient, "similar", similar.store)
    (info,) = v.all()
    assert info.status == "failed" and v.count_keys(info.version) == 0
    assert v.current() is None
