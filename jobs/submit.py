"""The one source of spark-submit arguments, for a local run and for Kubernetes.

    python -m jobs.submit score --target local -- --dataset reco
    python -m jobs.submit score --master spark://127.0.0.1:7077 --exec -- --dataset reco
    python -m jobs.submit score --target k8s --image REG/prescore-jobs:1.0 --namespace ns \\
        --exec -- --dataset tags
    python -m jobs.submit score --target operator -- --dataset reco   # SparkApplication YAML
    python -m jobs.submit score --target operator --schedule '30 2 * * *' -- --dataset reco

``make demo`` calls :func:`local_args`; the CronJobs in k8s/ run this module with
``--target k8s --exec``, so the spark-submit line a cluster runs is built here at run time
and nowhere else; the (Scheduled)SparkApplication manifests in k8s/spark-operator/ are this
module's ``--target operator`` output, and a test fails when they differ. The Spark driver
and executor pod templates are built here too (:func:`pod_template`), once for both: the
k8s target writes them to files for spark-submit, the operator target embeds them. On
Kubernetes, spark-submit in cluster mode can exit 0 although the driver failed, so
``--exec`` then checks the store: the job must have published a new version of its dataset.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prescore.settings import PROJECT_ROOT

K8S_MASTER = "k8s://https://kubernetes.default.svc"
IMAGE_ROOT = "/opt/prescore"  # where docker/jobs.Dockerfile puts the project
SERVICE_ACCOUNT = "prescore-spark"
SPARK_VERSION = "4.3.0"  # the pyspark docker/jobs.Dockerfile installs
RUN_AS = 10001  # the images' user (docker/*.Dockerfile)
CONFIG_MOUNT = "/etc/prescore"  # the datasets ConfigMap (PRESCORE_CONFIG) is mounted here
# The container names the Spark operator gives its pod templates (it sets
# spark.kubernetes.{driver,executor}.podTemplateContainerName to these); the k8s target
# uses the same, so one template serves both.
DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "executor"
SHIPPED_ENV = "environment"  # where an executor unpacks a shipped virtualenv (--archives)
ARCHIVES = (".tar.gz", ".tgz")  # what Spark unpacks with tar, the links in it kept
TTL_S = 7 * 24 * 3600  # finished runs are removed after a week (as the CronJobs' Jobs)

# Spark settings every run gets, locally and on Kubernetes.
COMMON_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",  # the model is loaded once per Python worker
    "spark.log.level": "WARN",  # the jobs print their own progress and summary
    "spark.ui.showConsoleProgress": "false",
    # TensorFlow's start-up banners, once per Python worker, would bury the job's output
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
    # a UTF-8 locale, so that Java spells file names (image keys) outside ASCII
    "spark.executorEnv.LANG": "C.UTF-8",
}

# Only on Kubernetes: identity, lifecycle. Image, namespace, pull policy, pod templates and
# sizes are added per run (k8s_conf, k8s_args).
K8S_CONF = {
    "spark.kubernetes.authenticate.driver.serviceAccountName": SERVICE_ACCOUNT,
    "spark.kubernetes.driver.podTemplateContainerName": DRIVER_CONTAINER,
    "spark.kubernetes.executor.podTemplateContainerName": EXECUTOR_CONTAINER,
    "spark.kubernetes.submission.waitAppCompletion": "true",
    "spark.kubernetes.executor.deleteOnTermination": "true",
    "spark.kubernetes.driverEnv.PYSPARK_PYTHON": "python3",
    "spark.executorEnv.PYSPARK_PYTHON": "python3",
}


@dataclass(frozen=True)
class JobSpec:
    """A bulk job: its script, the flags a run needs, and its size on a cluster."""

    name: str
    script: str  # relative to the project root
    required: tuple[str, ...]  # job flags a run must pass (without the leading --)
    executors: int = 2
    executor_cores: int = 2
    # An executor pod's memory is the sum of these three. The JVM heap only reads the
    # inputs and hands Arrow batches over; the model runs in the Python workers, which
    # Spark counts only through spark.executor.pyspark.memory: left unset, TensorFlow's
    # memory comes out of the overhead, and a Python worker that outgrows it gets the
    # whole pod OOMKilled (exit 137, no Python error). Set, Spark adds it to the pod's
    # memory and caps each Python worker's address space at its share (this divided by
    # the executor cores), so a worker that outgrows it fails its task with a MemoryError
    # in the log instead.
    executor_memory: str = "3g"  # JVM heap
    executor_memory_overhead: str = "1g"  # JVM off-heap: Arrow buffers, netty, metaspace
    executor_pyspark_memory: str = "6g"  # the Python workers: TensorFlow, decoded images
    driver_memory: str = "2g"
    # The driver's Python (plans the run, holds the candidate items, loads the model's
    # signature) has no pyspark.memory of its own: it lives in the overhead.
    driver_memory_overhead: str = "2g"
    conf: Mapping[str, str] = field(default_factory=dict)

    def app_name(self, job_args: Sequence[str] = ()) -> str:
        """``prescore-score-reco``: the job and, where the flags name one, its dataset."""
        dataset = _dataset_flag(job_args)
        return "-".join(p for p in ("prescore", self.name.replace("_", "-"), dataset) if p)


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="score",
            script="jobs/score.py",
            required=("dataset",),
            executors=4,
            # many small image files: pack them by size, not at Spark's 4 MB cost per file
            conf={
                "spark.sql.files.maxPartitionBytes": "16m",
                "spark.sql.files.openCostInBytes": "64k",
            },
        ),
    )
}


def _dataset_flag(job_args: Sequence[str]) -> str:
    for i, arg in enumerate(job_args):
        if arg == "--dataset" and i + 1 < len(job_args):
            return job_args[i + 1]
        if arg.startswith("--dataset="):
            return arg.split("=", 1)[1]
    return ""


def dataset_of(job_args: Sequence[str]) -> str:
    """The ``--dataset`` a run's flags name."""
    dataset = _dataset_flag(job_args)
    if not dataset:
        raise SystemExit("the job's flags name no --dataset")
    return dataset


def spec(name: str) -> JobSpec:
    try:
        return JOBS[name]
    except KeyError:
        raise SystemExit(f"unknown job {name!r}; known: {', '.join(sorted(JOBS))}") from None


def job_flags(params: Mapping[str, Any]) -> list[str]:
    """``{"top_k": 10}`` -> ``["--top-k", "10"]``; None values are left out."""
    out: list[str] = []
    for key, value in params.items():
        if value is not None:
            out += ["--" + key.replace("_", "-"), str(value)]
    return out


def _check_required(job: JobSpec, job_args: Sequence[str]) -> None:
    given = {a.split("=", 1)[0] for a in job_args}
    missing = [r for r in job.required if "--" + r.replace("_", "-") not in given]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise SystemExit(f"{job.name}: missing job flag(s): {flags}")


def _conf(conf: Mapping[str, str]) -> list[str]:
    return [a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]


def standalone_conf(master: str, executor_cores: int | str, executor_memory: str) -> dict[str, str]:
    """A ``spark://`` master's executor sizes (none for local mode, whose one JVM runs
    every task). Its executors run this interpreter, as local mode's workers do."""
    if not master.startswith("spark://"):
        return {}
    return {"spark.executor.cores": str(executor_cores), "spark.executor.memory": executor_memory}


def shipped_env(archive: str) -> tuple[list[str], dict[str, str]]:
    """spark-submit's arguments and settings that run the executors' Python from the
    packed virtualenv ``archive`` (venv-pack's ``.tar.gz``), unpacked beside each
    executor as Spark documents for its cluster managers, instead of a Python installed
    at the same path on every worker. The driver, here, keeps this interpreter. No
    archive: neither; a local file that is not there, or one Spark would unpack without
    its links: ValueError."""
    if not archive:
        return [], {}
    if not archive.endswith(ARCHIVES):
        raise ValueError(
            f"--python-env: {archive}: pack it as .tar.gz (venv-pack -o env.tar.gz): Spark "
            "unpacks a .tar in Java and a zip holds no links, and the virtualenv's python is one"
        )
    if "://" not in archive and not os.path.isfile(archive):
        raise ValueError(f"--python-env: no file {archive} (make one: venv-pack -o env.tar.gz)")
    path = archive if "://" in archive else os.path.abspath(archive)
    return ["--archives", f"{path}#{SHIPPED_ENV}"], {
        "spark.pyspark.python": f"./{SHIPPED_ENV}/bin/python",
        "spark.pyspark.driver.python": sys.executable,
    }


def local_args(
    job: str,
    *,
    master: str = "local[*]",
    driver_memory: str = "2g",
    executor_cores: int | str = 1,
    executor_memory: str = "1g",
    python_env: str = "",
    extra: Sequence[str] = (),
    **params: Any,
) -> list[str]:
    """The arguments after ``spark-submit`` for a run of ``job`` from this machine: in
    local mode, or on a standalone cluster (``spark://``, e.g. jobs.standalone's) with
    executors of ``executor_cores`` and ``executor_memory``, their Python the packed
    virtualenv ``python_env`` where one is given (:func:`shipped_env`)."""
    s = spec(job)
    job_args = [*job_flags(params), *extra]
    _check_required(s, job_args)
    sizes = standalone_conf(master, executor_cores, executor_memory)
    archives, python = shipped_env(python_env)
    return [
        "--master",
        master,
        "--name",
        s.app_name(job_args),
        "--driver-memory",
        driver_memory,
        *archives,
        *_conf({**COMMON_CONF, **s.conf, **sizes, **python}),
        str(PROJECT_ROOT / s.script),
        *job_args,
    ]


# -- Kubernetes ------------------------------------------------------------------------------


def pull_policy(image: str) -> str:
    """``IfNotPresent`` for an image pinned by digest, else ``Always``: a node that has a
    mutable tag cached would otherwise run last release's code under this release's tag."""
    return "IfNotPresent" if "@sha256:" in image else "Always"


@dataclass(frozen=True)
class Names:
    """The objects the Spark pods take their configuration from.

    kustomize adds a content hash to the ConfigMaps' names (a change rolls the services);
    the CronJobs pass the hashed names in these variables (k8s/base/kustomizeconfig.yaml
    makes kustomize rewrite them), the operator manifests get them rewritten in place.
    """

    config: str = "prescore-config"  # settings (env vars)
    datasets: str = "prescore-datasets"  # the dataset declarations (PRESCORE_CONFIG's file)
    secret: str = "prescore-secrets"  # REDIS_URL with its password

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Names:
        return cls(
            config=env.get("PRESCORE_CONFIGMAP") or cls.config,
            datasets=env.get("PRESCORE_DATASETS_CONFIGMAP") or cls.datasets,
            secret=env.get("PRESCORE_SECRET_NAME") or cls.secret,
        )


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_template(
    role: str, names: Names = Names(), owner: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Spark driver's or executors' pod template (a Pod; Spark adds image, command,
    resources and its own volumes). Everything PodSecurity ``restricted`` asks for is set
    here, because Spark sets none of it.

    ``owner`` (``{"name": ..., "uid": ...}`` of the pod running spark-submit) makes that
    pod the driver's owner: when the Job's deadline or a ``kubectl delete job`` removes
    the submitting pod, Kubernetes' garbage collector deletes the driver, and with it the
    executors (which Spark makes the driver's dependents), instead of leaving a driver
    running with nobody waiting for it. Executors need no owner of ours.
    """
    if role not in ("driver", "executor"):
        raise ValueError(role)
    driver = role == "driver"
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": names.config}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        # driver: scratch space; executors: the model cache (PRESCORE_MODEL_CACHE) too
        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi" if driver else "8Gi"}}
    ]
    if driver:  # the executors get Redis and the model store from the driver, as values
        env_from.append({"secretRef": {"name": names.secret}})
        mounts.append({"name": "datasets", "mountPath": CONFIG_MOUNT, "readOnly": True})
        volumes.append({"name": "datasets", "configMap": {"name": names.datasets}})
    # Security-scan waivers (checkov reads them from the pods' annotations), with reasons.
    annotations = {
        "checkov.io/skip1": "CKV_K8S_8=a batch pod: Spark itself watches driver and executors",
        "checkov.io/skip2": "CKV_K8S_9=a batch pod: no Service routes requests to it",
    }
    if driver:
        annotations["checkov.io/skip3"] = "CKV_K8S_38=the driver creates its executors via the API"
    metadata: dict[str, Any] = {
        "labels": {
            "app.kubernetes.io/part-of": "prescore",
            "app.kubernetes.io/component": "spark-job",
            "app.kubernetes.io/name": f"prescore-spark-{role}",
        },
        "annotations": annotations,
    }
    if driver and owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": owner["name"], "uid": owner["uid"]}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            # only the driver talks to the Kubernetes API (it creates the executors)
            "automountServiceAccountToken": driver,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": DRIVER_CONTAINER if driver else EXECUTOR_CONTAINER,
                    "envFrom": env_from,
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": _restricted_container(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


def _owner(env: Mapping[str, str]) -> dict[str, str] | None:
    """The submitting pod (POD_NAME and POD_UID from the downward API), if known."""
    name, uid = env.get("POD_NAME", ""), env.get("POD_UID", "")
    return {"name": name, "uid": uid} if name and uid else None


def write_pod_templates(
    directory: str | os.PathLike[str], names: Names, owner: Mapping[str, str] | None
) -> dict[str, str]:
    """Write driver.yaml and executor.yaml into ``directory``; their Spark settings."""
    import yaml

    out = {}
    for role in ("driver", "executor"):
        path = Path(directory) / f"{role}.yaml"
        path.write_text(yaml.safe_dump(pod_template(role, names, owner), sort_keys=False))
        out[f"spark.kubernetes.{role}.podTemplateFile"] = str(path)
    return out


def k8s_conf(s: JobSpec, *, image: str, namespace: str) -> dict[str, str]:
    """Every Spark setting of a run on Kubernetes (the pod template files aside)."""
    return {
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.container.image.pullPolicy": pull_policy(image),
        "spark.kubernetes.namespace": namespace,
        **K8S_CONF,
        "spark.executor.instances": str(s.executors),
        "spark.executor.cores": str(s.executor_cores),
        # CPU limits as large as the cores Spark schedules on a pod: TensorFlow runs one
        # thread per Python worker (jobs/bulk.py), one worker per core
        "spark.kubernetes.executor.limit.cores": str(s.executor_cores),
        "spark.kubernetes.driver.limit.cores": "1",
        "spark.executor.memory": s.executor_memory,
        "spark.executor.memoryOverhead": s.executor_memory_overhead,
        "spark.executor.pyspark.memory": s.executor_pyspark_memory,
        "spark.driver.memory": s.driver_memory,
        "spark.driver.memoryOverhead": s.driver_memory_overhead,
        **COMMON_CONF,
        **s.conf,
    }


def parse_conf(text: str) -> dict[str, str]:
    """``"a.b=1 c.d=x"`` (spaces or newlines) -> ``{"a.b": "1", "c.d": "x"}``."""
    out: dict[str, str] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bad Spark setting {item!r}: expected key=value")
        out[key] = value
    return out


def k8s_args(
    job: str,
    *,
    image: str,
    namespace: str,
    conf: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
    template_dir: str | None = None,
    **params: Any,
) -> list[str]:
    """The arguments after ``spark-submit`` for a cluster-mode run on Kubernetes, from
    this process's environment (see :func:`k8s_args_in`). ``conf`` adds or overrides
    Spark settings for one deployment (volumes, sizes); the overlays pass it through
    ``PRESCORE_SPARK_CONF``."""
    return k8s_args_in(
        os.environ,
        job,
        image=image,
        namespace=namespace,
        conf=conf,
        job_args=[*job_flags(params), *extra],
        template_dir=template_dir,
    )


def k8s_args_in(
    env: Mapping[str, str],
    job: str,
    *,
    image: str,
    namespace: str,
    job_args: Sequence[str],
    conf: Mapping[str, str] | None = None,
    template_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """:func:`k8s_args` with the environment given.

    Writes the run's pod templates (:func:`pod_template`) into ``template_dir`` (default:
    a new temporary folder), naming the ConfigMaps and Secret ``env`` names (see
    :class:`Names`) and, when ``env`` has POD_NAME and POD_UID (the downward API's, in
    the CronJobs), that pod as the driver's owner.
    """
    s = spec(job)
    _check_required(s, job_args)
    directory = template_dir or tempfile.mkdtemp(prefix="prescore-spark-")
    templates = write_pod_templates(directory, Names.from_env(env), _owner(env))
    return [
        "--master",
        K8S_MASTER,
        "--deploy-mode",
        "cluster",
        "--name",
        s.app_name(job_args),
        *_conf({**k8s_conf(s, image=image, namespace=namespace), **templates, **(conf or {})}),
        f"local://{IMAGE_ROOT}/{s.script}",
        *job_args,
    ]


def operator_manifest(
    job: str,
    *,
    image: str,
    namespace: str,
    extra: Sequence[str] = (),
    schedule: str | None = None,
    names: Names = Names(),
) -> dict[str, Any]:
    """The same run as a SparkApplication for the Spark operator (sparkoperator.k8s.io,
    v2), or with ``schedule`` (cron, UTC) as a ScheduledSparkApplication. The pod
    templates are :func:`pod_template`'s; with a driver template the operator lets Spark
    apply it and needs no mutating webhook."""
    s = spec(job)
    _check_required(s, extra)
    conf = k8s_conf(s, image=image, namespace=namespace)
    for key in (  # the operator sets these from the typed fields below
        "spark.kubernetes.container.image",
        "spark.kubernetes.container.image.pullPolicy",
        "spark.kubernetes.namespace",
        "spark.kubernetes.driver.podTemplateContainerName",
        "spark.kubernetes.executor.podTemplateContainerName",
        "spark.kubernetes.authenticate.driver.serviceAccountName",
        "spark.kubernetes.submission.waitAppCompletion",
        "spark.executor.instances",
        "spark.executor.cores",
        "spark.kubernetes.executor.limit.cores",
        "spark.kubernetes.driver.limit.cores",
        "spark.executor.memory",
        "spark.executor.memoryOverhead",
        "spark.driver.memory",
        "spark.driver.memoryOverhead",
    ):
        conf.pop(key)

    def template(role: str) -> dict[str, Any]:  # a PodTemplateSpec: the Pod less its type
        pod = pod_template(role, names)
        return {"metadata": pod["metadata"], "spec": pod["spec"]}

    app_spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": image,
        "imagePullPolicy": pull_policy(image),
        "mainApplicationFile": f"local://{IMAGE_ROOT}/{s.script}",
        "arguments": list(extra),
        "sparkVersion": SPARK_VERSION,
        "sparkConf": conf,
        # one retry of a failed run, as the CronJobs' backoffLimit: a failed run never
        # moves the live version, so a retry is safe
        "restartPolicy": {
            "type": "OnFailure",
            "onFailureRetries": 1,
            "onFailureRetryInterval": 300,
            "onSubmissionFailureRetries": 2,
            "onSubmissionFailureRetryInterval": 60,
        },
        "timeToLiveSeconds": TTL_S,  # the operator deletes a finished run (and its pods)
        "driver": {
            "cores": 1,
            "coreLimit": "1",
            "memory": s.driver_memory,
            "memoryOverhead": s.driver_memory_overhead,
            "serviceAccount": SERVICE_ACCOUNT,
            "template": template("driver"),
        },
        "executor": {
            "instances": s.executors,
            "cores": s.executor_cores,
            "coreLimit": str(s.executor_cores),
            "memory": s.executor_memory,
            "memoryOverhead": s.executor_memory_overhead,
            "template": template("executor"),
        },
    }
    metadata = {
        "name": s.app_name(extra),
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/part-of": "prescore",
            "app.kubernetes.io/component": "spark-job",
        },
    }
    if schedule is None:
        return {
            "apiVersion": "sparkoperator.k8s.io/v1beta2",
            "kind": "SparkApplication",
            "metadata": metadata,
            "spec": app_spec,
        }
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "ScheduledSparkApplication",
        "metadata": metadata,
        "spec": {
            "schedule": schedule,
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": "Forbid",  # never two runs of one dataset
            "successfulRunHistoryLimit": 3,
            "failedRunHistoryLimit": 3,
            "template": app_spec,
        },
    }


# -- running ---------------------------------------------------------------------------------


def spark_submit_bin() -> str:
    """spark-submit beside this interpreter (the pyspark wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    return beside if os.path.exists(beside) else "spark-submit"


def spark_env(env: Mapping[str, str] | None = None, *, local: bool = True) -> dict[str, str]:
    """The environment spark-submit needs when started from this interpreter, activated
    virtualenv or not: SPARK_HOME of the pyspark wheel beside it (spark-submit's own
    search asks whatever ``python3`` is on PATH), the driver and, for a local run, the
    workers on this interpreter, TensorFlow's banners off. Set values are kept."""
    import pyspark

    out = dict(os.environ if env is None else env)
    out.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))
    out.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if local:
        out.setdefault("PYSPARK_PYTHON", sys.executable)
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return utf8_locale(out)


def utf8_locale(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with a UTF-8 locale (``LC_ALL=C.UTF-8`` unless it has one): Java spells
    file names, an images dataset's keys, in the locale's encoding."""
    out = dict(env)
    if not re.search(r"utf-?8", out.get("LC_ALL") or out.get("LANG", ""), re.IGNORECASE):
        out["LC_ALL"] = "C.UTF-8"
    return out


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, *, local: bool = True) -> None:
    """Run ``spark-submit argv``; a non-zero exit raises (CalledProcessError)."""
    cmd = [spark_submit_bin(), *argv]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=spark_env(env, local=local), check=True)


INCREMENTAL = ("--keys", "--where", "--from-miss-log")  # a job's flags that make a delta
STAGE = "--stage"  # a job's flag that keeps its version beside the live one (a canary's)


def published_since(dataset: str, since: str, env: Mapping[str, str], made: str = "version") -> str:
    """The version of ``dataset`` published at or after ``since``: ``made`` "version"
    (switched to), "delta" (an incremental run's, attached to the live version) or
    "staged" (gated and kept beside the live one); raises when there is none (a driver
    that failed may still have exited 0)."""
    from prescore.settings import Settings
    from prescore.store.redis_client import connect
    from prescore.store.versions import Versions

    settings = Settings.from_env(env)
    versions = Versions(connect(settings.redis), dataset, settings.store)
    wanted = {"version": "published"}.get(made, made)
    for info in versions.all():
        if info.status == wanted and (info.published_at or info.finished_at or "") >= since:
            return info.version
    if made == "delta":
        raise SystemExit(
            f"{dataset}: spark-submit returned but no delta was attached since {since} (a run "
            "that chose no rows attaches none; its driver's log says which)"
        )
    raise SystemExit(f"{dataset}: spark-submit returned but no version was {wanted} since {since}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything after -- is passed to the job itself.",
    )
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--target", choices=("local", "k8s", "operator"), default="local")
    parser.add_argument(
        "--master", default="local[*]", help="local target only: local[N] or spark://HOST:PORT"
    )
    parser.add_argument("--driver-memory", default="2g", help="local target only")
    parser.add_argument(
        "--executor-cores", type=int, default=1, help="local target, spark:// master only"
    )
    parser.add_argument("--executor-memory", default="1g", help="local target, spark:// only")
    parser.add_argument(
        "--python-env",
        default="",
        metavar="ARCHIVE",
        help="local target: the executors' Python from this packed virtualenv (venv-pack "
        "-o env.tar.gz), shipped with --archives; default: the workers' own",
    )
    parser.add_argument("--image", help="jobs image (default: $PRESCORE_JOBS_IMAGE)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: $POD_NAMESPACE)")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="extra Spark setting key=value for the k8s target (also $PRESCORE_SPARK_CONF)",
    )
    parser.add_argument(
        "--schedule", help="operator target: a ScheduledSparkApplication on this cron (UTC)"
    )
    parser.add_argument("--exec", action="store_true", help="run spark-submit, not print")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    extra = argv[cut + 1 :]  # the job's own flags, passed through as they are
    env = os.environ
    image = args.image or env.get("PRESCORE_JOBS_IMAGE", "prescore-jobs:latest")
    namespace = args.namespace or env.get("POD_NAMESPACE", "prescore")

    if args.target == "operator":
        import yaml

        manifest = operator_manifest(
            args.job, image=image, namespace=namespace, extra=extra, schedule=args.schedule
        )
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
        return 0
    if args.target == "local":
        try:
            argv_ = local_args(
                args.job,
                master=args.master,
                driver_memory=args.driver_memory,
                executor_cores=args.executor_cores,
                executor_memory=args.executor_memory,
                python_env=args.python_env,
                extra=extra,
            )
        except ValueError as exc:  # an archive Spark could not use
            parser.error(str(exc))
    else:
        if args.python_env:
            parser.error("--python-env: local target only (the jobs image holds the k8s one)")
        conf = parse_conf(" ".join([env.get("PRESCORE_SPARK_CONF", ""), *args.conf]))
        argv_ = k8s_args(args.job, image=image, namespace=namespace, conf=conf, extra=extra)
    if not args.exec:
        print(shlex.join([spark_submit_bin(), *argv_]))
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        run(argv_, local=args.target == "local")
    except subprocess.CalledProcessError as exc:
        print(f"{args.job}: spark-submit exited with {exc.returncode}", file=sys.stderr)
        return exc.returncode or 1
    except FileNotFoundError:
        print(f"{args.job}: no spark-submit: install prescore[jobs] (pyspark)", file=sys.stderr)
        return 1
    if args.target == "k8s" and "--dry-run" not in extra:  # a dry run publishes nothing
        dataset = dataset_of(extra)
        made = "delta" if any(flag in extra for flag in INCREMENTAL) else "version"
        made = "staged" if STAGE in extra else made
        version = published_since(dataset, started, env, made)
        print(f"{args.job}: published {dataset} {made} {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
