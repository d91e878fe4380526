"""The operator CLI against a real redis-server and a real model-store directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from prescore.cli.main import main
from prescore.encoding import codec, keys
from prescore.models.store import ModelStore
from prescore.settings import ModelStoreSettings, StoreSettings
from prescore.store.embedded_redis import free_port
from prescore.store.versions import Versions, write_payloads
from tests.helpers import ROOT, SERVED_CONFIG

CONFIG = ["--config", str(SERVED_CONFIG)]  # the tests' shop and colours datasets


def _publish(client: redis.Redis, tag: str, retire: bool = True) -> str:
    v = Versions(client, "shop", StoreSettings())
    info = v.begin("shop", tag)
    payload = codec.encode_payload(
        codec.PayloadShape("customer_id", "items", "product_id"),
        "c1",
        [("p1", 0.9)],
        model="shop",
        model_version=tag,
        scored_at="2026-11-24T00:00:00Z",
    )
    write_payloads(client, "shop", info.version, [("c1", payload)])
    v.publish(info.version, 1, retire=retire)
    return info.version


def test_versions_show_and_rollback(
    rclient: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _publish(rclient, "1")
    second = _publish(rclient, "2")
    assert main([*CONFIG, "--redis-url", redis_url, "versions", "shop"]) == 0
    out = capsys.readouterr().out
    live_line = next(line for line in out.splitlines() if second in line)
    assert live_line.startswith("*") and "published" in live_line
    assert first in out

    assert main([*CONFIG, "--redis-url", redis_url, "show", "shop", "c1"]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out)["model_version"] == "2"  # stdout: the payload alone (| jq)
    assert shown.err.startswith(f"# shop version {second}")

    assert main([*CONFIG, "--redis-url", redis_url, "rollback", "shop"]) == 0
    assert f"{second} -> {first}" in capsys.readouterr().out
    assert rclient.get("ps:{shop}:current") == first.encode()


def test_missing_key_and_no_target_are_clear(
    rclient: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*CONFIG, "--redis-url", redis_url, "rollback", "colours"]) == 1
    assert "no_version" in capsys.readouterr().err
    assert main([*CONFIG, "--redis-url", redis_url, "versions", "nope"]) == 2  # bad usage
    assert "no dataset 'nope' is declared" in capsys.readouterr().err
    _publish(rclient, "1")
    assert main([*CONFIG, "--redis-url", redis_url, "show", "shop", "nobody"]) == 1
    assert "no key 'nobody'" in capsys.readouterr().err
    # after --, a key that starts with '-' (a negative id) is a key, not a flag
    assert main([*CONFIG, "--redis-url", redis_url, "show", "shop", "--", "-5"]) == 1
    assert "no key '-5'" in capsys.readouterr().err


def test_rollback_to_a_version_that_cannot_be_the_target_says_why(
    rclient: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _publish(rclient, "1")
    second = _publish(rclient, "2")
    cli = [*CONFIG, "--redis-url", redis_url, "rollback", "shop", "--to"]
    assert main([*cli, "20200101T000000.000Z-abcdef"]) == 1
    err = capsys.readouterr().err
    assert "unknown_version" in err and "has no version '20200101T000000.000Z-abcdef'" in err
    assert main([*cli, second]) == 1
    assert f"{second} is already the live version" in capsys.readouterr().err
    v = Versions(rclient, "shop", StoreSettings())
    bad = v.begin("shop", "3").version
    v.fail(bad, "a bad run")
    assert main([*cli, bad]) == 1
    assert f"{bad} is failed: only a published version" in capsys.readouterr().err
    assert main([*cli, first]) == 0  # the one that can be


def test_output_to_a_reader_that_left_is_no_failure(rclient: redis.Redis, redis_url: str) -> None:
    """``prescore versions shop | head -0``: the reader leaves before the output."""
    _publish(rclient, "1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prescore.cli",
            *CONFIG,
            "--redis-url",
            redis_url,
            "versions",
            "shop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # long before the command has imported what it needs
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b"", err


def test_unreachable_redis_is_a_clean_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run(
        [sys.executable, "-m", "prescore.cli", *CONFIG, "--redis-url", url, "versions", "shop"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1  # a runtime error; 2 is bad usage
    assert "store_unavailable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"({url}: Error 111 connecting" in proc.stderr  # where, and why


def test_a_redis_that_refuses_this_client_is_one_line_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wrong credentials or a database Redis lacks: bad configuration (2), one line, the
    same for a command that reads as for one that writes; a URL that is none, too."""
    from prescore.store.embedded_redis import RedisProcess

    proc = RedisProcess(tmp_path / "redis", password="right-password-2").start()
    try:
        wrong, missing_db = proc.url.replace("right", "wrong"), proc.url[:-1] + "99"
        commands = [["versions", "shop"], ["gc", "shop"], ["misses", "shop"], ["canary", "shop"]]
        for command in [*commands, ["rollback", "shop", "--dry-run"]]:
            for url, why in (
                (wrong, "refused this client's credentials"),
                (missing_db, "DB index"),
            ):
                # a command that checks the store first says it is configuration (2); one
                # that reads at once has Redis' own answer (1): one line either way
                code = main([*CONFIG, "--redis-url", url, *command])
                err = capsys.readouterr().err.strip()
                assert code == (2 if url == wrong or command[0] in ("versions", "gc") else 1)
                assert len(err.splitlines()) == 1 and why in err, (command, err)
                assert "password-2" not in err
    finally:
        proc.stop()
    assert main([*CONFIG, "--redis-url", "redis://:pw@[::1:6391/0", "versions", "shop"]) == 2
    err = capsys.readouterr().err
    assert "--redis-url='(a URL that cannot be parsed)': not a URL" in err, err


def test_ctrl_c_is_one_line_and_exit_130() -> None:
    """Interrupted while it waits on Redis (here a socket that never answers, so the test
    knows when the command is waiting): one line, no traceback."""
    import signal
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"redis://127.0.0.1:{server.getsockname()[1]}/0"
        env = {**os.environ, "PRESCORE_REDIS_TIMEOUT_S": "30"}
        cli = [sys.executable, "-m", "prescore.cli", *CONFIG, "--redis-url", url]
        proc = subprocess.Popen(  # SIGINT as a terminal leaves it (a test runner's
            [*cli, "versions", "shop"],  # worker may ignore it, which a child inherits)
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(64)  # its first command sent: it waits for the answer
                proc.send_signal(signal.SIGINT)
                _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130 and err.strip() == "prescore: interrupted", err


def test_flags_are_checked_as_their_variables_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag gets the check its variable gets: one line naming it (the password masked),
    exit 2 as for any bad configuration, never a traceback."""
    for flag, value, named in (
        ("--redis-url", "http://user:hunter2@x", "--redis-url='http://user:***@x'"),
        ("--model-store", "ftp://x/models", "--model-store='ftp://x/models'"),
    ):
        assert main([*CONFIG, flag, value, "versions", "shop"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"prescore: bad_config: {named}: must be a URL of"), err
        assert "hunter2" not in err and err.count("\n") == 1
    # a password as redis-py also takes it, in the query: masked where the store is named
    socket = f"unix://{tmp_path}/no.sock?password=hunter2"
    assert main([*CONFIG, "--redis-url", socket, "versions", "shop"]) == 1
    err = capsys.readouterr().err
    assert f"unix://{tmp_path}/no.sock?password=***" in err and "hunter2" not in err, err
    with pytest.raises(SystemExit) as shown:
        main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("prescore ")
    for module in ("prescore.cli", "prescore.cli.main"):  # either module runs the CLI
        ran = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0 and ran.stdout.startswith("prescore "), (module, ran.stderr)


def test_a_missing_extra_is_named_in_one_line(redis_url: str, tmp_path: Path) -> None:
    """A core install (no 'tables' extra) asked to publish: which extra to install."""
    blocker = tmp_path / "sitecustomize.py"  # this interpreter, without pyarrow
    blocker.write_text("import sys\nsys.modules['pyarrow'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prescore.cli",
            *CONFIG,
            "--redis-url",
            redis_url,
            "publish",
            "shop",
            str(tmp_path / "scores.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        "prescore: missing_extra: publish needs pyarrow, part of the 'tables' extra: "
        "pip install 'prescore[tables]'\n"
    )
    # the Python API imports without it; only its publish needs the extra
    api = subprocess.run(
        [sys.executable, "-c", "from prescore.api import Prescore; print(Prescore.get)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert api.returncode == 0, api.stderr


def test_every_command_reports_as_json(
    rclient: redis.Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-o json``: one JSON document on stdout, for the commands that change things too;
    a version's gate sample is counted, not listed."""
    cli = [*CONFIG, "--redis-url", redis_url]
    first = _publish(rclient, "1")
    second = _publish(rclient, "2")
    v = Versions(rclient, "shop", StoreSettings())
    entry = v.get(second)
    rclient.hset(
        keys.registry_key("shop"),
        second,
        entry.replace(extra={**entry.extra, "sample": ["c1"] * 1000}).to_bytes(),
    )
    assert main([*cli, "versions", "shop", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["versions"][0]["extra"]["sample"] == 1000
    assert main([*cli, "show", "shop", "c1", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["version"], doc["payload"]["model_version"]) == (second, "2")
    assert main([*cli, "rollback", "shop", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["from"], doc["to"]["version"]) == (second, first)
    assert main([*cli, "gc", "shop", "-o", "json"]) == 0
    actions = ("removed", "reap", "retire", "drop_gated_keys", "trim", "retire_deltas", "sweep")
    nothing = {action: [] for action in actions}
    assert json.loads(capsys.readouterr().out) == {"dataset": "shop", **nothing}
    root = (tmp_path / "models").as_uri()
    (tmp_path / "built").mkdir()
    ModelStore(ModelStoreSettings(root=root)).save("shop", tmp_path / "built", {})
    assert main(["--model-store", root, "promote", "shop", "1", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "shop", "promoted": "1", "was": None}


def test_models_and_promote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = (tmp_path / "models").as_uri()
    store = ModelStore(ModelStoreSettings(root=root))
    for auc in (0.7, 0.8):
        built = tmp_path / f"build{auc}"
        built.mkdir()
        store.save("shop", built, {"metrics": {"auc": auc}, "created_at": "2026-11-24"})
    assert main(["--model-store", root, "promote", "shop", "2"]) == 0
    assert "promoted 2 (was none)" in capsys.readouterr().out
    assert main(["--model-store", root, "models", "list", "shop"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("*") and "auc=0.8000" in line for line in out.splitlines())
    assert main(["--model-store", root, "models", "list", "shop", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["promoted"]) for v in doc["shop"]] == [("1", False), ("2", True)]
    assert main(["--model-store", root, "models", "promote", "shop", "9"]) == 1
    capsys.readouterr()
    assert main(["--model-store", root, "models", "list", "shpo"]) == 1  # mistyped
    assert "no model 'shpo'" in capsys.readouterr().err
    for argv in (
        ["models", "-o", "json", "promote", "shop", "1"],
        ["models", "promote", "shop", "1", "-o", "json"],
    ):
        assert main(["--model-store", root, *argv]) == 0  # -o on either side
        assert json.loads(capsys.readouterr().out)["promoted"] == "1", argv


def test_models_list_names_the_litert_variants_of_each_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = (tmp_path / "models").as_uri()
    store = ModelStore(ModelStoreSettings(root=root))
    ok, off = {"agrees": True}, {"agrees": False}
    records = [
        {"built": False, "reason": "no kernels"},
        {"built": True, "runtimes": {"tf": ok, "float32": ok}, "not_built": {"int8": "crash"}},
        {"built": True, "runtimes": {"tf": ok, "float32": ok, "int8": off}},
    ]
    for i, record in enumerate(records):
        (tmp_path / f"b{i}").mkdir()
        store.save("shop", tmp_path / f"b{i}", {"quantization": record})
    assert main(["--model-store", root, "models", "list", "shop"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    shown = {row[0]: " ".join(row[1:]) for row in rows if row and row[0] in "123"}
    assert shown["1"].startswith("no") and shown["2"].startswith("float32")
    assert shown["3"].startswith("float32, int8 (disagrees)") and "int8" not in shown["2"]


def test_listings_as_json_and_usage_errors(
    rclient: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    version = _publish(rclient, "1")
    assert main([*CONFIG, "--redis-url", redis_url, "versions", "shop", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["live"] == version and doc["versions"][0]["status"] == "published"
    assert main([*CONFIG, "datasets", "-o", "json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["colours", "shop"]
    with pytest.raises(SystemExit) as usage:
        main(["versions"])
    assert usage.value.code == 2


def test_dry_runs_say_what_gc_rollback_and_release_would_do_and_change_nothing(
    rclient: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = [*CONFIG, "--redis-url", redis_url]
    published = [_publish(rclient, str(n), retire=False) for n in range(5)]  # 3 are kept
    v = Versions(rclient, "shop", StoreSettings())
    gated_before, gated = v.begin("shop", "g0").version, v.begin("shop", "g").version
    for version in (gated_before, gated):  # the older one's keys go: only the newest is kept
        write_payloads(rclient, "shop", version, [("c1", b'{"items":[]}')])
        v.gate(version, 1, {}, "drift too high")
    dead = v.begin("shop", "d").version  # a writer killed: its lease gone
    rclient.delete(keys.lease_key("shop", dead))

    def state() -> tuple[object, ...]:
        return (
            rclient.get(keys.pointer_key("shop")),
            rclient.hgetall(keys.registry_key("shop")),
            sorted(rclient.keys("*")),
        )

    before = state()
    assert main([*cli, "gc", "shop", "--dry-run", "-o", "json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["retire"] == published[:2][::-1] and planned["dry_run"] is True
    assert planned["reap"] == [dead] and dead not in planned["sweep"]  # said once
    assert planned["drop_gated_keys"] == [gated_before]
    assert main([*cli, "rollback", "shop", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert (
        f"would be rolled back (dry run, nothing changed): {published[4]} -> {published[3]}" in said
    )
    assert main([*cli, "release", "shop", gated, "--reason", "checked", "--dry-run"]) == 0
    assert f"would be released (dry run, nothing changed): {gated}" in capsys.readouterr().out
    assert state() == before  # nothing changed
    assert main([*cli, "release", "shop", "nope", "--reason", "x", "--dry-run"]) == 1
    capsys.readouterr()
    assert main([*cli, "gc", "shop", "-o", "json"]) == 0  # what the plan said
    did = json.loads(capsys.readouterr().out)
    assert sorted(did["removed"]) == sorted(planned["reap"] + planned["retire"])
    for action in ("reap", "retire", "drop_gated_keys", "trim", "retire_deltas", "sweep"):
        assert sorted(did[action]) == sorted(planned[action]), action


def test_serve_runs_the_service_with_the_global_flags(
    rclient: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """``prescore serve lookup``: the process becomes the lookup (same pid), and
    ``--redis-url`` reaches it: it answers from that Redis."""
    version = _publish(rclient, "1")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRESCORE_CONFIG": str(SERVED_CONFIG)}
    env.pop("REDIS_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    cmd = [sys.executable, "-m", "prescore.cli", "--redis-url", redis_url, "serve", "lookup"]
    proc = subprocess.Popen(
        [*cmd, "--", "--bind", f"127.0.0.1:{port}"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = None
        for _ in range(300):
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        got = requests.get(f"http://127.0.0.1:{port}/v1/picks/c1", timeout=5).json()
        assert got["dataset_version"] == version and got["items"][0]["product_id"] == "p1"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"lookup.serve" in cmdline
    finally:
        proc.terminate()
        code = proc.wait(30)
    assert code == 0  # a clean stop on SIGTERM
