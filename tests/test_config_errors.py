"""Bad configuration at start: one line naming the setting, the value and what is
allowed, a non-zero exit, never a traceback; real processes, a real redis-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, SERVED_CONFIG


def _start(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "PRESCORE_CONFIG": str(SERVED_CONFIG),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", module, "--bind", "127.0.0.1:0", *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"LOOKUP_THREADS": "four"},
            "lookup: LOOKUP_THREADS='four': must be an integer of at least 1",
        ),
        (
            {"PRESCORE_REDIS_TIMEOUT_S": "fast"},
            "lookup: PRESCORE_REDIS_TIMEOUT_S='fast': must be a number from 0.001 to 60",
        ),
        (
            {"REDIS_URL": "http://:pw@cache:6379"},
            "lookup: REDIS_URL='http://:***@cache:6379': must be a URL of redis://, rediss://, unix://",
        ),
        (  # an option of the URL's too, its password hidden
            {"REDIS_URL": "redis://:pw@cache:6379/0?socket_timeout=abc"},
            "lookup: REDIS_URL='redis://:***@cache:6379/0?socket_timeout=abc': Invalid value "
            "for 'socket_timeout' in connection URL.",
        ),
        ({"PRESCORE_CONFIG": ""}, "lookup: PRESCORE_CONFIG: no datasets declared"),
        (
            {"LOOKUP_METRICS_BIND": "9090"},
            "lookup: LOOKUP_METRICS_BIND='9090': must be host:port (e.g. 0.0.0.0:9090)",
        ),
        (  # a secret's value is never shown, only its length
            {"PRESCORE_FALLBACK_TOKEN": "hunter2"},
            "lookup: PRESCORE_FALLBACK_TOKEN: must be at least 16 characters with no "
            "surrounding spaces (got 7 characters)",
        ),
        (
            {"PRESCORE_CONFIG": "/nowhere.toml"},
            "lookup: /nowhere.toml: cannot read the dataset file",
        ),
    ],
)
def test_the_lookup_refuses_bad_settings_before_serving(env: dict[str, str], line: str) -> None:
    done = _start("lookup.serve", env)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(line) and len(done.stderr.strip().splitlines()) == 1
    assert "serving" not in done.stdout and "Traceback" not in done.stderr


def test_credentials_redis_refuses_are_one_line_at_start(tmp_path: Path) -> None:
    from prescore.store.embedded_redis import RedisProcess

    proc = RedisProcess(tmp_path / "redis", password="right-password-1").start()
    try:
        for url in (proc.url.replace("right", "wrong"), proc.url.replace(":right-password-1@", "")):
            done = _start("lookup.serve", {"REDIS_URL": url})
            said = done.stderr.strip()
            assert done.returncode == 2 and len(said.splitlines()) == 1, said
            assert said.startswith("lookup: the Redis at ") and "refused this client's" in said
            assert "password-1" not in said and "serving" not in done.stdout
    finally:
        proc.stop()


def test_cluster_mode_against_a_single_node_is_one_line(redis_url: str) -> None:
    done = _start("lookup.serve", {"REDIS_URL": redis_url, "PRESCORE_REDIS_CLUSTER": "1"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"lookup: PRESCORE_REDIS_CLUSTER=1, but the Redis at {redis_url} is not a cluster "
        "(set PRESCORE_REDIS_CLUSTER=0)"
    )


def test_a_model_store_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    cli = [
        sys.executable,
        "-m",
        "prescore.cli",
        "--model-store",
        "file:///nonexistent/models",
        "models",
    ]
    done = subprocess.run(
        cli,
        env={"PATH": "/usr/bin:/bin", "PRESCORE_CONFIG": str(SERVED_CONFIG)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "prescore: model_store: PRESCORE_MODEL_STORE=file:///nonexistent/models: no such folder "
        "(register a model to create the store, or fix the setting)"
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"FALLBACK_MODELS_KEPT": "1"},
            "fallback: FALLBACK_MODELS_KEPT='1': must be an integer of at least 2",
        ),
        (
            {"FALLBACK_RUNTIME": "gpu"},
            "fallback: FALLBACK_RUNTIME='gpu': must be one of auto, tf, float32, int8",
        ),
        # bounded as the lookup's: 0 would spin the upkeep, or serve nothing
        ({"FALLBACK_WATCH_INTERVAL_S": "0"}, "fallback: FALLBACK_WATCH_INTERVAL_S='0': must be"),
        ({"FALLBACK_THREADS": "0"}, "fallback: FALLBACK_THREADS='0': must be"),
        ({"FALLBACK_RANKING_MAX_BATCH": "0"}, "fallback: FALLBACK_RANKING_MAX_BATCH='0': must"),
        ({"--workers": "0"}, "fallback: --workers=0: must be at least 1"),
    ],
)
def test_the_fallback_refuses_bad_settings_before_serving(env: dict[str, str], line: str) -> None:
    flags = [f"{k}={v}" for k, v in env.items() if k.startswith("--")]
    env = {k: v for k, v in env.items() if not k.startswith("--")}
    done = _start("fallback.serve", env, *flags)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(line) and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_the_fallback_refuses_a_dataset_it_would_not_answer(tmp_path: Path) -> None:
    text = SERVED_CONFIG.read_text().replace(
        "[datasets.colours]\n", "[datasets.colours]\nlive = false\n"
    )
    config = tmp_path / "prescore.toml"
    config.write_text(text)
    done = _start(
        "fallback.serve", {"PRESCORE_CONFIG": str(config), "FALLBACK_DATASETS": "colours"}
    )
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "fallback: FALLBACK_DATASETS: 'colours' is not answered live (it declares live = false)",
    )
