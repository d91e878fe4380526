"""``prescore score | retrain | serve | config``: one CLI that hands over to the jobs and
services, with arguments after ``--`` passed on as they are."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from prescore.cli.main import main
from tests.helpers import ROOT, SERVED_CONFIG

CONFIG = ["--config", str(SERVED_CONFIG)]


def test_score_retrain_and_serve_pass_arguments_on(capfd: pytest.CaptureFixture[str]) -> None:
    assert main([*CONFIG, "score", "shop", "--print", "--", "--partitions", "4"]) == 0
    line = capfd.readouterr().out.split()
    assert "spark-submit" in line[0] and line[line.index("--master") + 1] == "'local[*]'"
    assert line[-5:] == [str(ROOT / "jobs" / "score.py"), "--dataset", "shop", "--partitions", "4"]
    assert main([*CONFIG, "score", "shop", "--print", "--dry-run"]) == 0
    assert capfd.readouterr().out.split()[-3:] == ["--dataset", "shop", "--dry-run"]
    chosen = ["--keys", "new.parquet", "--where", "stars>4", "--from-miss-log"]
    assert main([*CONFIG, "score", "shop", "--print", *chosen]) == 0
    assert shlex.split(capfd.readouterr().out)[-7:] == ["--dataset", "shop", *chosen]
    assert main([*CONFIG, "score", "shop", "--print", "--stage"]) == 0
    assert capfd.readouterr().out.split()[-3:] == ["--dataset", "shop", "--stage"]
    assert main([*CONFIG, "retrain", "shop", "--print", "--", "--epochs", "1"]) == 0
    assert capfd.readouterr().out.split()[1:] == [
        "-m",
        "jobs.retrain",
        "--dataset",
        "shop",
        "--epochs",
        "1",
    ]
    assert main(["serve", "fallback", "--print", "--", "--bind", "127.0.0.1:1"]) == 0
    assert capfd.readouterr().out.split()[1:] == ["-m", "fallback.serve", "--bind", "127.0.0.1:1"]


def test_score_ships_a_packed_python_environment_to_the_executors(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")  # what is in it is Spark's to unpack, not the CLI's to read
    master = ["--master", "spark://127.0.0.1:7077"]
    assert main([*CONFIG, "score", "shop", *master, "--python-env", str(archive), "--print"]) == 0
    line = shlex.split(capfd.readouterr().out)
    assert line[line.index("--archives") + 1] == f"{archive}#environment"
    conf = {line[i + 1] for i, a in enumerate(line) if a == "--conf"}
    assert "spark.pyspark.python=./environment/bin/python" in conf
    assert f"spark.pyspark.driver.python={sys.executable}" in conf  # the driver runs here


def test_a_python_environment_spark_cannot_unpack_whole_is_refused_in_one_line(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.tar.gz"
    assert main([*CONFIG, "score", "shop", "--python-env", str(missing), "--print"]) == 2
    assert capfd.readouterr().err.strip() == (
        f"prescore: bad_config: --python-env: no file {missing} (make one: venv-pack -o env.tar.gz)"
    )
    plain = tmp_path / "env.tar"  # Spark unpacks it in Java, without the python link
    plain.write_bytes(b"")
    assert main([*CONFIG, "score", "shop", "--python-env", str(plain), "--print"]) == 2
    err = capfd.readouterr().err
    assert f"--python-env: {plain}: pack it as .tar.gz (venv-pack -o env.tar.gz)" in err
    zipped = tmp_path / "env.zip"  # no links in a zip
    zipped.write_bytes(b"")
    assert main([*CONFIG, "score", "shop", "--python-env", str(zipped), "--print"]) == 2
    assert "pack it as .tar.gz" in capfd.readouterr().err
    assert "Traceback" not in err


def test_undeclared_dataset_and_unknown_service_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*CONFIG, "score", "nope", "--print"]) == 2
    assert "no dataset 'nope' is declared" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["serve", "redis"])
    assert refused.value.code == 2 and "invalid choice: 'redis'" in capsys.readouterr().err


def test_config_shows_the_effective_settings_with_secrets_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "redis://:hunter2@127.0.0.1:1/3"
    assert main([*CONFIG, "--redis-url", url, "config", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["redis"]["url"] == "redis://:***@127.0.0.1:1/3"
    assert doc["catalog"] == {"source": str(SERVED_CONFIG), "datasets": ["colours", "shop"]}
    assert doc["store"]["keep_versions"] >= 1
    by_name = {v["variable"]: v for v in doc["variables"]}
    assert by_name["REDIS_URL"]["value"] == "redis://:***@127.0.0.1:1/3"
    assert by_name["REDIS_URL"]["set"] and not by_name["PRESCORE_KEEP_VERSIONS"]["set"]
    assert by_name["PRESCORE_KEEP_VERSIONS"]["allowed"] == "an integer of at least 1"
    assert main([*CONFIG, "--redis-url", url, "config"]) == 0
    shown = capsys.readouterr().out
    lines = {line[2:].split()[0]: line for line in shown.splitlines() if line[:1] in "* "}
    assert lines["REDIS_URL"].split() == ["*", "REDIS_URL", "redis://:***@127.0.0.1:1/3"]
    assert lines["PRESCORE_KEEP_VERSIONS"].startswith("  ") and "hunter2" not in shown
