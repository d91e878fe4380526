"""The real server: ``python -m lookup.serve`` under granian, talked to over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from prescore.encoding import codec
from prescore.encoding.codec import PayloadShape
from prescore.store.embedded_redis import free_port
from tests.helpers import SERVED_CONFIG
from tests.lookup_helpers import SCORED_AT, publish, publish_customers, shop_payload

ROOT = Path(__file__).resolve().parent.parent
# A team's own dataset declared beside the shop and colours: a composite key, its own field names.
BASKET = """
[datasets.basket]
kind = "ranking"
model = "basket"
route = "basket-picks"
key_field = "customer_store"
batch_field = "customers"
list_field = "products"
k = 3
[datasets.basket.entities]
path = "${PRESCORE_VAR}/customers.parquet"
key = ["customer_id", "store_id"]
[datasets.basket.items]
path = "${PRESCORE_VAR}/products.parquet"
key = "sku"
"""


def _config(tmp_path: Path) -> dict[str, str]:
    """The env naming a dataset file (tests/served.toml and BASKET) and its var."""
    config = tmp_path / "prescore.toml"
    config.write_text(SERVED_CONFIG.read_text() + BASKET)
    return {"PRESCORE_CONFIG": str(config), "PRESCORE_VAR": str(tmp_path / "var")}


def _get(url: str, data: bytes | None = None) -> tuple[int, Message, str]:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.headers, r.read().decode()  # names match in any case
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


@pytest.fixture()
def server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    yield from _serving(redis_url, tmp_path)


@pytest.fixture()
def timed_server(redis_url: str, tmp_path: Path) -> Iterator[str]:
    """The lookup with LOOKUP_BODY_TIMEOUT_S: served over RSGI, bodies timed."""
    yield from _serving(redis_url, tmp_path, LOOKUP_BODY_TIMEOUT_S="5")


def _serving(redis_url: str, tmp_path: Path, **extra: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LOOKUP_POINTER_CACHE_S": "0.5",
        **_config(tmp_path),
        **extra,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp_path / "serve.log", "wb") as log_file:  # the child keeps its own copy
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lookup.serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        # every worker has loaded the app, so the metrics check below spans both
        if (tmp_path / "serve.log").read_text().count("lookup worker") == 2:
            break
        assert time.monotonic() < deadline, "lookup.serve did not come up"
        time.sleep(0.2)
    yield base
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30)
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log, log
    assert rc == 0, log


# Awkward keys of the shop (a dataset with contexts: a '|' inside a key is '\\|').
AWKWARD = [
    "someone@example.com",
    "ns:-17",
    "🏨 hôtel/é",
    "a\\|b",
    "{x}",
    "100%25",
    "#5",
    "é" * 512,
]


@pytest.mark.parametrize("served", ["server", "timed_server"])
def test_any_key_is_answered_over_http_as_it_was_published(served, request, rclient, settings):
    """Percent-encoded in the URL ('/' too, or left as it is), or in a batch body: each
    key reaches its own entry, through granian and the fast path, as published (over
    WSGI, and over RSGI with timed bodies)."""
    server = request.getfixturevalue(served)
    publish(rclient, settings, "shop", [(k, shop_payload(k, 3, "m1")) for k in AWKWARD], "m1")
    for key in AWKWARD:
        for path in (quote(key, safe=""), quote(key, safe="/")):
            for prefix in ("/v1/picks/", "/v1/datasets/shop/"):
                status, _, text = _get(server + prefix + path)
                assert status == 200, (key, path, text)
                assert json.loads(text)["customer_id"] == key
    body = json.dumps({"customer_ids": [*AWKWARD, "a|b"]}).encode()
    status, _, text = _get(server + "/v1/picks:batchGet", body)
    assert status == 400 and "customer_ids[8]" in json.loads(text)["message"]  # "a|b": 2 parts
    body = json.dumps({"customer_ids": [*AWKWARD, "é" * 511]}).encode()
    status, _, text = _get(server + "/v1/picks:batchGet", body)
    results = json.loads(text)["results"]
    assert [r["customer_id"] for r in results] == [*AWKWARD, "é" * 511]
    assert [r.get("error") for r in results] == [None] * len(AWKWARD) + ["not_found"]


@pytest.mark.parametrize("served", ["server", "timed_server"])
def test_an_oversized_body_gets_its_413_and_the_connection_serves_the_next_request(
    served, request, rclient, settings
):
    """A batchGet over the 64 KiB bound is read and dropped before its 413: a body left
    unread in a kept-alive connection made the server drop it, and the client's next
    request on it failed (most times, for a 70 KB body). 8 MB still gets its 413."""
    server = request.getfixturevalue(served)
    publish_customers(rclient, settings, customers=2)
    batch, big = server + "/v1/picks:batchGet", {"customer_ids": ["u" * 70_000]}
    with requests.Session() as session:  # one kept-alive connection
        for _ in range(30):
            reply = session.post(batch, json=big, timeout=10)
            assert (reply.status_code, reply.json()["error"]) == (413, "too_large")
            assert session.get(server + "/v1/picks/c1", timeout=10).status_code == 200
        body = b'{"customer_ids": ["' + b"u" * (8 << 20) + b'"]}'
        headers = {"Content-Type": "application/json"}
        reply = session.post(batch, data=body, headers=headers, timeout=30)
        assert (reply.status_code, reply.json()["error"]) == (413, "too_large")
        # chunked, with no length: valid JSON, then spaces past the bound (werkzeug's own
        # cap cut such a body at the bound and answered what it held)
        chunks = [b'{"customer_ids": ["c1"]}', b" " * 70_000]
        reply = session.post(batch, data=iter(chunks), headers=headers, timeout=10)
        assert (reply.status_code, reply.json()["error"]) == (413, "too_large")
        assert session.get(server + "/v1/picks/c1", timeout=10).status_code == 200
        chunks = [b'{"customer_ids": ', b'["c1"]}']
        reply = session.post(batch, data=iter(chunks), headers=headers, timeout=10)
        assert (reply.status_code, reply.json()["found"]) == (200, 1)


@pytest.mark.parametrize("served", ["server", "timed_server"])
def test_a_key_that_is_not_utf8_is_refused_not_read_as_another(served, request, rclient, settings):
    """werkzeug reads bytes that are not UTF-8 as U+FFFD: keys of different bytes would
    all be the same key (and be logged as one miss)."""
    server = request.getfixturevalue(served)
    publish_customers(rclient, settings, customers=2)
    for path in (
        "/v1/picks/%FF%FE",
        "/v1/picks/%ED%A0%80",
        "/v1/datasets/shop/c%C3",
        "/v1/picks/%EF%BF%BD",
    ):
        status, _, text = _get(server + path)  # a lone surrogate is not UTF-8 either
        assert (status, json.loads(text)["error"]) == (400, "invalid_id"), path
    status, _, text = _get(server + "/v1/picks/%C3%A9")  # é is a key like any
    assert (status, json.loads(text)["error"]) == (404, "not_found")
    head = requests.head(server + "/v1/picks/%FF%FE", timeout=10)  # a HEAD alike
    assert head.status_code == 400 and not head.content
    body = b'{"customer_ids": ["c1", "\\ud800"]}'  # a lone surrogate escaped in JSON
    status, _, text = _get(server + "/v1/picks:batchGet", body)
    assert (status, json.loads(text)["error"]) == (400, "invalid_id"), text


def test_served_over_http_by_granian_workers(server, rclient, settings):
    version = publish_customers(rclient, settings, customers=4)
    status, headers, text = _get(server + "/v1/picks/c1?k=2")
    assert status == 200 and headers["Content-Type"] == "application/json"
    body = json.loads(text)
    assert body["dataset_version"] == version and len(body["items"]) == 2
    assert "granian" in headers.get("Server", "")

    status, _, text = _get(server + "/v1/picks/nobody")
    assert status == 404 and json.loads(text)["error"] == "not_found"
    status, _, text = _get(server + "/v1/picks/bad%0Aid")
    assert status == 400 and json.loads(text)["error"] == "invalid_id"

    payload = json.dumps({"customer_ids": ["c0", "c3", "x"]}).encode()
    status, _, text = _get(server + "/v1/picks:batchGet", payload)
    assert status == 200 and json.loads(text)["found"] == 2

    # each urlopen is a new connection, so both workers answer some of these
    for i in range(40):
        assert _get(server + f"/v1/picks/c{i % 4}")[0] == 200
    status, _, text = _get(server + "/metrics")
    assert status == 200
    hits = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prescore_lookup_keys_total{")
        and 'dataset="shop"' in line
        and "hit" in line
    ]
    # summed over every worker (prometheus multiprocess mode): 1 + 2 + 40
    assert sum(hits) == 43, text

    status, _, text = _get(server + "/readyz")
    assert status == 200
    assert json.loads(text)["datasets"] == {"shop": version, "colours": None, "basket": None}
    # the generic route, answered by the same workers
    status, _, text = _get(server + "/v1/datasets/shop/c2?limit=3")
    assert status == 200 and len(json.loads(text)["items"]) == 3
    status, _, text = _get(server + "/v1/datasets/nope/c2")
    assert status == 404 and json.loads(text)["error"] == "unknown_dataset"


def test_a_declared_dataset_is_served_over_http(server, rclient, settings):
    shape = PayloadShape("customer_store", "products", "sku")
    rows = [
        (
            key,
            codec.encode_payload(
                shape,
                key,
                [("sku-1", 0.9), ("sku-2", 0.5), ("sku-3", 0.2)],
                model="basket",
                model_version="b1",
                scored_at=SCORED_AT,
            ),
        )
        for key in ("c1|s1", "c2|s1")
    ]
    version = publish(rclient, settings, "basket", rows, "b1", model="basket")
    # the composite key's | travels percent-encoded or raw; granian hands it over decoded
    for url in ("/v1/basket-picks/c1%7Cs1?k=2", "/v1/datasets/basket/c1|s1?k=2"):
        status, _, text = _get(server + url)
        assert status == 200, (url, text)
        body = json.loads(text)
        assert body["customer_store"] == "c1|s1" and body["dataset_version"] == version
        assert body["products"] == [{"sku": "sku-1", "score": 0.9}, {"sku": "sku-2", "score": 0.5}]
    status, _, text = _get(server + "/v1/basket-picks/c1%7Cs1?min_score=0.4&limit=1")
    assert json.loads(text)["products"] == [{"sku": "sku-1", "score": 0.9}]
    status, _, text = _get(server + "/v1/basket-picks/c1")
    assert status == 400 and json.loads(text)["error"] == "invalid_id"
    status, _, text = _get(server + "/v1/basket-picks/c1%7Cs1?k=1&limit=2")
    assert status == 200 and len(json.loads(text)["products"]) == 1  # the smaller bound
    body = json.dumps({"customers": ["c2|s1", "c9|s1"], "min_score": 0.3}).encode()
    status, _, text = _get(server + "/v1/basket-picks:batchGet", body)
    batch = json.loads(text)
    assert status == 200 and batch["dataset_version"] == version
    assert [x["customer_store"] for x in batch["results"]] == ["c2|s1", "c9|s1"]
    assert [p["sku"] for p in batch["results"][0]["products"]] == ["sku-1", "sku-2"]
    assert batch["results"][1]["error"] == "not_found"
    status, _, text = _get(server + "/openapi.json")
    paths = json.loads(text)["paths"]
    assert {
        "/v1/basket-picks/{key}",
        "/v1/datasets/basket:batchGet",
        "/v1/picks/{key}",
    } <= set(paths)


def test_redis_auth_works_and_the_password_is_never_logged(tmp_path, settings):
    """A Redis that requires AUTH: the lookup reaches it with the URL's password, and
    neither its start-up line nor anything else it logs carries the password."""
    import dataclasses

    import redis

    from prescore.settings import RedisSettings
    from prescore.store.embedded_redis import RedisProcess

    secret = "s3cret-Pa55word"
    proc = RedisProcess(tmp_path / "redis-auth", password=secret).start()
    url = proc.url
    port = free_port()
    env = {**os.environ, "REDIS_URL": url, "LOOKUP_POINTER_CACHE_S": "0", **_config(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "serve.log"
    try:
        client = redis.Redis.from_url(url)
        authed = dataclasses.replace(settings, redis=RedisSettings(url=url))
        publish_customers(client, authed, customers=2)
        with open(log_path, "wb") as log_file:
            lookup = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lookup.serve",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "1",
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while "lookup worker" not in log_path.read_text():
                assert lookup.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            status, _, text = _get(f"http://127.0.0.1:{port}/v1/picks/c1")
            assert status == 200, text
            # Redis gone: a clean 503, and still no secret anywhere
            proc.stop()
            status, _, text = _get(f"http://127.0.0.1:{port}/v1/picks/c1")
            assert status == 503 and json.loads(text)["error"] == "store_unavailable"
        finally:
            lookup.send_signal(signal.SIGTERM)
            lookup.wait(timeout=30)
        log = log_path.read_text()
        assert "redis://:***@127.0.0.1" in log, log
        assert secret not in log
    finally:
        proc.stop()


def test_redis_over_tls_with_auth_and_a_client_certificate(tmp_path, settings):
    """rediss:// with a CA file and a client certificate (mutual TLS, through a TLS front
    of the tests' own, tests.tls_proxy) and AUTH: the lookup process serves over it; one
    without the client certificate is refused by the server and answers a clean 503."""
    import dataclasses

    import redis

    from prescore.settings import RedisSettings
    from prescore.store.embedded_redis import RedisProcess
    from tests.tls_proxy import TLSProxy, make_certs

    secret = "tls-Pa55word"
    proc = RedisProcess(tmp_path / "redis-tls", password=secret).start()
    certs = make_certs(tmp_path / "certs")
    proxy = TLSProxy(certs, ("127.0.0.1", proc.port))
    url = f"rediss://:{secret}@127.0.0.1:{proxy.port}/0"
    tls = {
        "PRESCORE_REDIS_TLS_CA_FILE": str(certs["ca.crt"]),
        "PRESCORE_REDIS_TLS_CERT_FILE": str(certs["client.crt"]),
        "PRESCORE_REDIS_TLS_KEY_FILE": str(certs["client.key"]),
    }
    try:
        plain = redis.Redis.from_url(proc.url)
        publish_customers(
            plain, dataclasses.replace(settings, redis=RedisSettings(url=proc.url)), customers=2
        )
        base = {**os.environ, "REDIS_URL": url, "LOOKUP_POINTER_CACHE_S": "0", **_config(tmp_path)}
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)
        for name, env, want in (
            ("with-cert", {**base, **tls}, 200),
            (
                "no-cert",
                {**base, "PRESCORE_REDIS_TLS_CA_FILE": tls["PRESCORE_REDIS_TLS_CA_FILE"]},
                503,
            ),
        ):
            port = free_port()
            log_path = tmp_path / f"{name}.log"
            with open(log_path, "wb") as log_file:
                lookup = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "lookup.serve",
                        "--bind",
                        f"127.0.0.1:{port}",
                        "--workers",
                        "1",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + 30
                while "lookup worker" not in log_path.read_text():
                    assert lookup.poll() is None and time.monotonic() < deadline, (
                        log_path.read_text()
                    )
                    time.sleep(0.2)
                status, _, text = _get(f"http://127.0.0.1:{port}/v1/picks/c1")
                assert status == want, text
                if want == 503:
                    assert json.loads(text)["error"] == "store_unavailable"
            finally:
                lookup.send_signal(signal.SIGTERM)
                lookup.wait(timeout=30)
            log = log_path.read_text()
            assert secret not in log and "rediss://:***@127.0.0.1" in log
        assert proxy.refused >= 1  # the one without a certificate never got through
    finally:
        proxy.close()
        proc.stop()


def test_logs_are_json_lines_with_request_ids_and_every_5xx_has_its_cause(
    redis_proc, redis_url, rclient, settings, tmp_path
):
    """An access log line per request (LOOKUP_ACCESS_LOG=1), the caller's X-Request-ID
    echoed and logged, and a 503 logged with its cause: JSON lines a pipeline can filter."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "LOOKUP_POINTER_CACHE_S": "0",
        "LOOKUP_ACCESS_LOG": "1",
        **_config(tmp_path),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    publish_customers(rclient, settings, customers=2)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lookup.serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def get(path: str, rid: str) -> tuple[int, Message]:
        req = urllib.request.Request(base + path, headers={"X-Request-ID": rid})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.headers

    try:
        deadline = time.monotonic() + 30
        while "lookup worker" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        status, headers = get("/v1/picks/c1", "req-hit-1")
        assert status == 200 and headers["X-Request-ID"] == "req-hit-1"
        status, headers = get("/openapi.json", "bad id with spaces")  # a new one is made
        assert status == 200 and len(headers["X-Request-ID"]) == 32
        redis_proc.stop()
        status, headers = get("/v1/picks/c1", "req-down-2")
        assert status == 503 and headers["X-Request-ID"] == "req-down-2"
        time.sleep(0.3)
    finally:
        redis_proc.start()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    assert all({"ts", "level", "service", "event"} <= set(line) for line in lines)
    access = [line for line in lines if line["event"] == "request"]
    hit = next(line for line in access if line["request_id"] == "req-hit-1")
    assert (hit["status"], hit["method"], hit["path"]) == (200, "GET", "/v1/picks/c1")
    failed = [line for line in lines if line["event"] == "request failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert (failed[0]["status"], failed[0]["error"], failed[0]["request_id"]) == (
        503,
        "store_unavailable",
        "req-down-2",
    )
    assert "while reading" in failed[0]["reason"]
