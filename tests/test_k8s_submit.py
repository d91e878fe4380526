"""The spark-submit line a CronJob runs comes from jobs/submit.py, the same table the local
run (make demo) uses; the SparkApplications are that module's output."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jobs import submit
from tests.k8s_tools import K8S, OVERLAYS, find, of_kind, pod_spec, render

SUBMITTING = {
    "prescore-score-recommendations": "score_recommendations",
    "prescore-tag-images": "tag_images",
}


def _container_env(container: dict[str, Any], objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The env a container gets: its ConfigMap, then its own literal values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[item["name"]] = "the-namespace"
    return env


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], a) for a in args]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjobs_run_jobs_submit_and_its_argv_fits_the_cluster(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    templates = next(
        o
        for o in of_kind(objs, "ConfigMap")
        if o["metadata"]["name"].startswith("prescore-spark-pod")
    )
    accounts = {o["metadata"]["name"] for o in of_kind(objs, "ServiceAccount")}
    for cron_name, job in SUBMITTING.items():
        cron = find(objs, "CronJob", cron_name)
        spec = pod_spec(cron)
        (container,) = spec["containers"]
        args = container["args"]
        assert "command" not in container  # the image's entrypoint stays in charge
        assert args[:7] == ["python", "-m", "jobs.submit", job, "--target", "k8s", "--exec"]
        env = _container_env(container, objs)
        assert env["PRESCORE_JOBS_IMAGE"] == container["image"]  # kustomize replacement
        expanded = _expand(args, env)
        printed = subprocess.run(  # the same command, printing instead of running
            [sys.executable, *expanded[1:6], *expanded[7:]],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        ).stdout
        argv = shlex.split(printed)
        conf = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
        assert argv[1:5] == ["--master", submit.K8S_MASTER, "--deploy-mode", "cluster"]
        assert conf["spark.kubernetes.container.image"] == container["image"]
        assert conf["spark.kubernetes.namespace"] == "the-namespace"
        assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] in accounts
        assert spec["serviceAccountName"] in accounts
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volume = next(v for v in spec["volumes"] if v["name"] == "pod-templates")
        assert volume["configMap"]["name"] == templates["metadata"]["name"]
        for role in ("driver", "executor"):
            path = conf[f"spark.kubernetes.{role}.podTemplateFile"]
            assert path == f"{mounts['pod-templates']}/{role}.yaml"
            assert f"{role}.yaml" in templates["data"]
            template = yaml.safe_load(templates["data"][f"{role}.yaml"])
            name = conf[f"spark.kubernetes.{role}.podTemplateContainerName"]
            assert template["spec"]["containers"][0]["name"] == name
        script = submit.JOBS[job].script
        assert f"local://{submit.IMAGE_ROOT}/{script}" in argv
        for key, value in submit.parse_conf(env["PRESCORE_SPARK_CONF"]).items():
            assert conf[key] == value  # the overlay's own Spark settings win


def test_local_and_k8s_runs_share_the_table() -> None:
    for job, spec in submit.JOBS.items():
        flag = "--" + spec.required[0].replace("_", "-")
        local = submit.local_args(job, master="local[2]", extra=[flag, "x"])
        k8s = submit.k8s_args(job, image="img", namespace="ns", extra=[flag, "x"])
        assert local[local.index("--name") + 1] == k8s[k8s.index("--name") + 1]
        assert local[-3].endswith(spec.script) and k8s[-3].endswith(spec.script)
        for key, value in {**submit.COMMON_CONF, **spec.conf}.items():
            assert f"{key}={value}" in local and f"{key}={value}" in k8s
        with pytest.raises(SystemExit, match="missing job flag"):
            submit.local_args(job)


@pytest.mark.parametrize("name", ["score-recommendations", "tag-images"])
def test_spark_applications_are_jobs_submit_output(name: str) -> None:
    path = K8S / "spark-operator" / f"{name}.yaml"
    text = path.read_text()
    command = text.splitlines()[0].removeprefix("# Generated by: ")
    generated = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(generated) == yaml.safe_load(text), f"regenerate {path}: {command}"


def test_a_real_local_submit_runs_a_spark_job(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The local argv is a working spark-submit line (with a stand-in script of the table)."""
    script = tmp_path / "count.py"
    script.write_text(
        "import sys\nfrom pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\n"
        "print('ROWS', s.range(int(sys.argv[2])).count(), s.conf.get('spark.app.name'))\n"
    )
    argv = submit.local_args(
        "score_recommendations", master="local[1]", driver_memory="1g", data="5"
    )
    argv[argv.index(str(submit.PROJECT_ROOT / submit.JOBS["score_recommendations"].script))] = str(
        script
    )
    out = subprocess.run(
        [submit.spark_submit_bin(), *argv], capture_output=True, text=True, timeout=300, check=True
    )
    assert "ROWS 5 prescore-score-recommendations" in out.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retrain_cronjob_runs_the_pipeline_with_a_durable_run_record(overlay: str) -> None:
    from jobs.retrain import build_parser

    objs = render(f"overlays/{overlay}")
    cron = find(objs, "CronJob", "prescore-retrain")
    spec = pod_spec(cron)
    (container,) = spec["containers"]
    env = _container_env(container, objs)
    env["PRESCORE_RUN_ID"] = "prescore-retrain-29000000"
    args = _expand(container["args"], env)
    assert args[:3] == ["python", "-m", "jobs.retrain"]
    parsed = build_parser().parse_args(args[3:])
    assert parsed.target == "k8s" and parsed.run_id == "prescore-retrain-29000000"
    assert parsed.score_data == env["PRESCORE_DATA_URI"]
    assert not parsed.data.startswith("hdfs://")  # training reads a local folder
    mounted = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(parsed.data.startswith(m + "/") or parsed.data == m for m in mounted)
    run_id_src = next(e for e in container["env"] if e["name"] == "PRESCORE_RUN_ID")
    assert "job-name" in run_id_src["valueFrom"]["fieldRef"]["fieldPath"]  # stable per Job
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state_mount = next(p for p in mounts if parsed.state_dir.startswith(p + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[state_mount])
    claim = volume["persistentVolumeClaim"]["claimName"]
    find(objs, "PersistentVolumeClaim", claim)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_exec_on_kubernetes_requires_a_new_published_version(redis_url: str, rclient) -> None:  # type: ignore[no-untyped-def]
    """spark-submit on Kubernetes may exit 0 for a failed driver: the store decides."""
    from prescore.settings import StoreSettings
    from prescore.versions import Versions, utcnow_iso, write_payloads

    env = {"REDIS_URL": redis_url}
    before = utcnow_iso()
    with pytest.raises(SystemExit, match="no version was published"):
        submit.published_since("reco", before, env)
    v = Versions(rclient, "reco", StoreSettings())
    info = v.begin("reco", "1")
    write_payloads(rclient, "reco", info.version, [("u1", b"{}")])
    v.publish(info.version, 1)
    assert submit.published_since("reco", before, env) == info.version
    with pytest.raises(SystemExit):
        submit.published_since("tags", before, env)
