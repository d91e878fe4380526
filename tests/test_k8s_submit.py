"""The spark-submit line a CronJob runs comes from jobs/submit.py and the same table of jobs
the local run (make demo) uses (jobs/job_specs.py); the Spark pod templates and the
(Scheduled)SparkApplications from jobs/spark_k8s.py."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from jobs import job_specs, spark_k8s, submit
from tests.k8s_tools import (
    K8S,
    K8S_VERSION,
    OVERLAYS,
    POD_STAND_INS,
    container_env,
    find,
    generated,
    of_kind,
    pod_spec,
    render,
    restricted_violations,
)

# The datasets the demo deployment declares (k8s/components/hotels-demo/datasets.toml):
# one bulk run each.
DEMO = K8S / "components" / "hotels-demo" / "datasets.toml"
DATASETS = sorted(tomllib.loads(DEMO.read_text())["datasets"])
POD = {"POD_NAME": POD_STAND_INS["metadata.name"], "POD_UID": POD_STAND_INS["metadata.uid"]}


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of container args."""
    return [re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], a) for a in args]


def _confs(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


def _check_templates(conf: dict[str, str], objs: tuple[dict[str, Any], ...]) -> None:
    """The pod templates a k8s argv names: valid Pods, PodSecurity restricted, configured
    from the objects the build really has (hashed names), the driver owned by the pod."""
    config = generated(objs, "ConfigMap", "prescore-config")["metadata"]["name"]
    datasets = generated(objs, "ConfigMap", "prescore-datasets")["metadata"]["name"]
    secrets = [o["metadata"]["name"] for o in of_kind(objs, "Secret")] or ["prescore-secrets"]
    for role in ("driver", "executor"):
        with open(conf[f"spark.kubernetes.{role}.podTemplateFile"]) as f:
            template = yaml.safe_load(f)
        (c,) = template["spec"]["containers"]
        assert c["name"] == conf[f"spark.kubernetes.{role}.podTemplateContainerName"]
        assert restricted_violations(template["spec"]) == [], role
        pod = {**template, "metadata": {**template["metadata"], "name": "p"}}
        pod["spec"]["containers"] = [{**c, "image": "prescore-jobs:test"}]
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert {"configMapRef": {"name": config}} in c["envFrom"]
        if role == "driver":
            assert {"secretRef": {"name": secrets[0]}} in c["envFrom"]
            assert {"name": "datasets", "configMap": {"name": datasets}} in template["spec"][
                "volumes"
            ]
            (owner,) = template["metadata"]["ownerReferences"]
            assert owner == {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": POD["POD_NAME"],
                "uid": POD["POD_UID"],
            }
            assert template["spec"]["automountServiceAccountToken"] is True
        else:
            assert "ownerReferences" not in template["metadata"]  # the driver owns them
            assert template["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjobs_run_jobs_submit_and_its_argv_fits_the_cluster(
    overlay: str, tmp_path: Path
) -> None:
    objs = render(f"overlays/{overlay}")
    accounts = {o["metadata"]["name"] for o in of_kind(objs, "ServiceAccount")}
    for dataset in DATASETS:
        cron = find(objs, "CronJob", f"prescore-score-{dataset}")
        spec = pod_spec(cron)
        (container,) = spec["containers"]
        args = container["args"]
        assert "command" not in container  # the image's entrypoint stays in charge
        assert args == [
            "python",
            "-m",
            "jobs.submit",
            "score",
            "--target",
            "k8s",
            "--exec",
            "--",
            "--dataset",
            dataset,
        ]
        env = container_env(container, objs)
        assert env["PRESCORE_JOBS_IMAGE"] == container["image"]  # kustomize replacement
        expanded = _expand(args, env)
        printed = subprocess.run(  # the same command, printing instead of running
            [sys.executable, *expanded[1:6], *expanded[7:]],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env, "TMPDIR": str(tmp_path)},  # where the templates go
        ).stdout
        argv = shlex.split(printed)
        conf = _confs(argv)
        assert argv[1:5] == ["--master", spark_k8s.K8S_MASTER, "--deploy-mode", "cluster"]
        assert argv[argv.index("--name") + 1] == cron["metadata"]["name"]
        assert conf["spark.kubernetes.container.image"] == container["image"]
        assert conf["spark.kubernetes.namespace"] == "the-namespace"
        assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] in accounts
        assert spec["serviceAccountName"] in accounts
        _check_templates(conf, objs)
        script = job_specs.JOBS["score"].script
        assert argv[-3:] == [f"local://{spark_k8s.IMAGE_ROOT}/{script}", "--dataset", dataset]
        for key, value in spark_k8s.parse_conf(env["PRESCORE_SPARK_CONF"]).items():
            assert conf[key] == value  # the overlay's own Spark settings win
        # the driver's templates are written where the read-only pod can write
        tmp = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "tmp")
        assert conf["spark.kubernetes.driver.podTemplateFile"].startswith(tmp + "/")


def test_spark_pods_pull_mutable_tags_always_and_digests_once(tmp_path: Path) -> None:
    args = {"namespace": "ns", "job_args": ["--dataset", "r"], "template_dir": tmp_path}
    tag = spark_k8s.k8s_args_in({}, "score", image="reg/jobs:1.0", **args)  # type: ignore[arg-type]
    digest = "reg/jobs@sha256:" + "0" * 64
    pinned = spark_k8s.k8s_args_in({}, "score", image=digest, **args)  # type: ignore[arg-type]
    assert _confs(tag)["spark.kubernetes.container.image.pullPolicy"] == "Always"
    assert _confs(pinned)["spark.kubernetes.container.image.pullPolicy"] == "IfNotPresent"
    prod = render("overlays/prod")
    env = container_env(
        pod_spec(find(prod, "CronJob", "prescore-score-reco"))["containers"][0], prod
    )
    assert "pullPolicy" not in env["PRESCORE_SPARK_CONF"]  # prod keeps the rule above


def test_python_workers_memory_is_sized_apart_from_the_jvm() -> None:
    s = job_specs.JOBS["score"]
    conf = spark_k8s.k8s_conf(s, image="i", namespace="n")
    assert conf["spark.executor.pyspark.memory"] == s.executor_pyspark_memory
    assert conf["spark.executor.memoryOverhead"] and conf["spark.driver.memoryOverhead"]
    source = (submit.PROJECT_ROOT / "jobs" / "job_specs.py").read_text()
    assert "OOMKilled" in source  # the reason stays next to the setting


def test_without_its_pod_the_driver_has_no_owner(tmp_path: Path) -> None:
    argv = spark_k8s.k8s_args_in(
        {}, "score", image="i", namespace="n", template_dir=tmp_path, job_args=["--dataset", "reco"]
    )
    driver = yaml.safe_load((tmp_path / "driver.yaml").read_text())
    assert "ownerReferences" not in driver["metadata"]
    assert _confs(argv)["spark.kubernetes.driver.podTemplateFile"] == str(tmp_path / "driver.yaml")
    names = spark_k8s.Names.from_env({"PRESCORE_CONFIGMAP": "cfg-abc"})
    assert spark_k8s.pod_template("executor", names)["spec"]["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "cfg-abc"}}
    ]


def test_local_and_k8s_runs_share_the_table(tmp_path: Path) -> None:
    for job, spec in job_specs.JOBS.items():
        flag = "--" + spec.required[0].replace("_", "-")
        local = submit.local_args(job, master="local[2]", extra=[flag, "x"])
        k8s = spark_k8s.k8s_args_in(
            {}, job, image="img", namespace="ns", job_args=[flag, "x"], template_dir=tmp_path
        )
        assert local[local.index("--name") + 1] == k8s[k8s.index("--name") + 1]
        assert local[-3].endswith(spec.script) and k8s[-3].endswith(spec.script)
        for key, value in {**job_specs.COMMON_CONF, **spec.conf}.items():
            assert f"{key}={value}" in local and f"{key}={value}" in k8s
        with pytest.raises(SystemExit, match="missing job flag"):
            submit.local_args(job)


@pytest.mark.parametrize("dataset", DATASETS)
def test_spark_applications_are_jobs_submit_output(dataset: str) -> None:
    path = K8S / "spark-operator" / f"score-{dataset}.yaml"
    text = path.read_text()
    command = text.splitlines()[0].removeprefix("# Generated by: ")
    generated_ = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert yaml.safe_load(generated_) == yaml.safe_load(text), f"regenerate {path}: {command}"
    app = yaml.safe_load(text)
    assert app["spec"]["template"]["arguments"] == ["--dataset", dataset]
    # its pod templates are the very ones the CronJob runs write
    for role in ("driver", "executor"):
        template = spark_k8s.pod_template(role)
        embedded = app["spec"]["template"][role]["template"]
        assert embedded == {"metadata": template["metadata"], "spec": template["spec"]}
    plain = spark_k8s.operator_manifest(
        "score", image="i", namespace="n", extra=["--dataset", dataset]
    )
    assert plain["kind"] == "SparkApplication"
    assert plain["spec"]["arguments"] == app["spec"]["template"]["arguments"]


@pytest.mark.slow  # a Spark job
def test_a_real_local_submit_runs_a_spark_job(tmp_path: Path) -> None:
    """The local argv is a working spark-submit line (with a stand-in script of the table)."""
    script = tmp_path / "count.py"
    script.write_text(
        "import sys\nfrom pyspark.sql import SparkSession\n"
        "s = SparkSession.builder.getOrCreate()\n"
        "print('ROWS', s.range(int(sys.argv[2])).count(), s.conf.get('spark.app.name'))\n"
    )
    argv = submit.local_args("score", master="local[1]", driver_memory="1g", dataset="5")
    argv[argv.index(str(submit.PROJECT_ROOT / job_specs.JOBS["score"].script))] = str(script)
    out = subprocess.run(
        [submit.spark_submit_bin(), *argv], capture_output=True, text=True, timeout=300, check=True
    )
    assert "ROWS 5 prescore-score-5" in out.stdout


def test_submit_exec_runs_without_an_activated_venv_and_exits_with_spark_submits_code(
    tmp_path: Path,
) -> None:
    """``.venv/bin/python -m jobs.submit ... --exec`` with no venv on PATH and no SPARK_HOME
    finds spark-submit and Spark beside its interpreter; the job's failure (a dataset that
    is not declared: 2) is spark-submit's exit code, told in one line, not a traceback."""
    config = tmp_path / "prescore.toml"
    config.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PRESCORE_CONFIG": str(config),
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.submit",
            "score",
            "--master",
            "local[1]",
            "--driver-memory",
            "1g",
            "--exec",
            "--",
            "--dataset",
            "nope",
        ],
        cwd=submit.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "SPARK_HOME" not in done.stderr
    # spark-submit hands the Python driver's stderr to its stdout
    assert done.stdout.rstrip().splitlines()[-1] == f"score: {config}: datasets: missing"
    assert done.stderr.rstrip().splitlines()[-1] == "score: spark-submit exited with 2"
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retrain_cronjob_runs_the_pipeline_with_a_durable_run_record(
    overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from jobs.retrain import build_parser

    objs = render(f"overlays/{overlay}")
    cron = find(objs, "CronJob", "prescore-retrain")
    spec = pod_spec(cron)
    (container,) = spec["containers"]
    env = container_env(container, objs)
    env["PRESCORE_RUN_ID"] = "prescore-retrain-29000000"
    args = _expand(container["args"], env)
    assert args[:3] == ["python", "-m", "jobs.retrain"]
    parsed = build_parser().parse_args(args[3:])
    assert parsed.dataset == "reco"
    assert parsed.target == "k8s" and parsed.run_id == "prescore-retrain-29000000"
    train_data = env["PRESCORE_TRAIN_DATA"]
    assert not train_data.startswith("hdfs://")  # the training command reads a local folder
    mounted = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(train_data.startswith(m + "/") or train_data == m for m in mounted)
    run_id_src = next(e for e in container["env"] if e["name"] == "PRESCORE_RUN_ID")
    assert "job-name" in run_id_src["valueFrom"]["fieldRef"]["fieldPath"]  # stable per Job
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    state_mount = next(p for p in mounts if parsed.state_dir.startswith(p + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[state_mount])
    claim = volume["persistentVolumeClaim"]["claimName"]
    find(objs, "PersistentVolumeClaim", claim)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # its scoring step is jobs.submit's k8s line (called as jobs/retrain.py calls it), from
    # this pod's environment: the same templates
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    argv = spark_k8s.k8s_args(
        "score",
        image=env["PRESCORE_JOBS_IMAGE"],
        namespace="ns",
        conf=spark_k8s.parse_conf(env["PRESCORE_SPARK_CONF"]),
        dataset="reco",
        model_version="3",
    )
    assert argv[-4:] == ["--dataset", "reco", "--model-version", "3"]
    _check_templates(_confs(argv), objs)


def test_exec_on_kubernetes_requires_a_new_published_version(redis_url: str, rclient: Any) -> None:
    """spark-submit on Kubernetes may exit 0 for a failed driver: the store decides."""
    from prescore.settings import StoreSettings
    from prescore.store.versions import Versions, utcnow_iso, write_payloads

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
    # an incremental run's (--keys, --where, --from-miss-log): the delta it attached
    with pytest.raises(SystemExit, match="no delta was attached"):
        submit.published_since("reco", before, env, "delta")
    d = v.begin("reco", "1", expected_keys=1, extra={"delta_of": info.version})
    write_payloads(rclient, "reco", d.version, [("u2", b"{}")])
    v.attach(d.version, 1, {})
    assert submit.published_since("reco", before, env, "delta") == d.version
    # a staged run's (--stage): the version it kept beside the live one
    with pytest.raises(SystemExit, match="no version was staged"):
        submit.published_since("reco", before, env, "staged")
    staged = v.begin("reco", "2")
    write_payloads(rclient, "reco", staged.version, [("u1", b"{}")])
    v.publish(staged.version, 1, stage=True)
    assert submit.published_since("reco", before, env, "staged") == staged.version
    assert submit.published_since("reco", before, env) == info.version
