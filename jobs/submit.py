"""The one source of spark-submit arguments, for a local run and for Kubernetes.

    python -m jobs.submit score_recommendations --target local -- --data var/data
    python -m jobs.submit tag_images --target k8s --image REG/prescore-jobs:1.0 --namespace ns \\
        --exec -- --images 'hdfs://nn:8020/photos/*'
    python -m jobs.submit score_recommendations --target operator   # SparkApplication YAML

``make demo`` calls :func:`local_args`; the CronJobs in k8s/ run this module with
``--target k8s --exec``, so the spark-submit line a cluster runs is built here at run time
and nowhere else; the SparkApplication manifests in k8s/spark-operator/ are this module's
``--target operator`` output, and a test fails when they differ. On Kubernetes,
spark-submit in cluster mode can exit 0 although the driver failed, so ``--exec`` then
checks the store: the job must have published a new version of its dataset.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prescore.settings import PROJECT_ROOT

K8S_MASTER = "k8s://https://kubernetes.default.svc"
IMAGE_ROOT = "/opt/prescore"  # where docker/jobs.Dockerfile puts the project
POD_TEMPLATES = "/opt/prescore/pod-templates"  # the CronJobs mount the templates here
SERVICE_ACCOUNT = "prescore-spark"
SPARK_VERSION = "4.3.0"  # the pyspark docker/jobs.Dockerfile installs

# Spark settings every run gets, locally and on Kubernetes.
COMMON_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",  # the model is loaded once per Python worker
    "spark.log.level": "WARN",  # the jobs print their own progress and summary
    "spark.ui.showConsoleProgress": "false",
}

# Only on Kubernetes: identity, pod templates, lifecycle. Image and namespace are added per run.
K8S_CONF = {
    "spark.kubernetes.authenticate.driver.serviceAccountName": SERVICE_ACCOUNT,
    "spark.kubernetes.driver.podTemplateFile": f"{POD_TEMPLATES}/driver.yaml",
    "spark.kubernetes.executor.podTemplateFile": f"{POD_TEMPLATES}/executor.yaml",
    "spark.kubernetes.driver.podTemplateContainerName": "spark-driver",
    "spark.kubernetes.executor.podTemplateContainerName": "spark-executor",
    "spark.kubernetes.container.image.pullPolicy": "IfNotPresent",
    "spark.kubernetes.submission.waitAppCompletion": "true",
    "spark.kubernetes.executor.deleteOnTermination": "true",
    "spark.kubernetes.driverEnv.PYSPARK_PYTHON": "python3",
    "spark.executorEnv.PYSPARK_PYTHON": "python3",
}


@dataclass(frozen=True)
class JobSpec:
    """A bulk job: its script, the dataset it publishes, and its size on a cluster."""

    name: str
    script: str  # relative to the project root
    dataset: str  # the Redis dataset a successful run publishes
    required: tuple[str, ...]  # job flags a run must pass (without the leading --)
    executors: int = 2
    executor_cores: int = 2
    executor_memory: str = "4g"
    driver_memory: str = "2g"
    conf: Mapping[str, str] = field(default_factory=dict)

    @property
    def app_name(self) -> str:
        return "prescore-" + self.name.replace("_", "-")


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="score_recommendations",
            script="jobs/score_recommendations.py",
            dataset="reco",
            required=("data",),
            executors=4,
            executor_memory="6g",
        ),
        JobSpec(
            name="tag_images",
            script="jobs/tag_images.py",
            dataset="tags",
            required=("images",),
            executors=4,
            executor_memory="6g",
            # many small photo files: pack them by size, not at Spark's 4 MB cost per file
            conf={
                "spark.sql.files.maxPartitionBytes": "16m",
                "spark.sql.files.openCostInBytes": "64k",
            },
        ),
    )
}


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
    missing = [r for r in job.required if "--" + r.replace("_", "-") not in job_args]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise SystemExit(f"{job.name}: missing job flag(s): {flags}")


def _conf(conf: Mapping[str, str]) -> list[str]:
    return [a for k, v in conf.items() for a in ("--conf", f"{k}={v}")]


def local_args(
    job: str,
    *,
    master: str = "local[*]",
    driver_memory: str = "2g",
    extra: Sequence[str] = (),
    **params: Any,
) -> list[str]:
    """The arguments after ``spark-submit`` for a local run of ``job``."""
    s = spec(job)
    job_args = [*job_flags(params), *extra]
    _check_required(s, job_args)
    return [
        "--master", master,
        "--name", s.app_name,
        "--driver-memory", driver_memory,
        *_conf({**COMMON_CONF, **s.conf}),
        str(PROJECT_ROOT / s.script),
        *job_args,
    ]  # fmt: skip


def k8s_conf(s: JobSpec, *, image: str, namespace: str) -> dict[str, str]:
    """Every Spark setting of a run on Kubernetes."""
    return {
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.namespace": namespace,
        **K8S_CONF,
        "spark.executor.instances": str(s.executors),
        "spark.executor.cores": str(s.executor_cores),
        "spark.executor.memory": s.executor_memory,
        "spark.driver.memory": s.driver_memory,
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
    **params: Any,
) -> list[str]:
    """The arguments after ``spark-submit`` for a cluster-mode run on Kubernetes.

    ``conf`` adds or overrides Spark settings for one deployment (volumes, sizes); the
    overlays pass it through ``PRESCORE_SPARK_CONF``.
    """
    s = spec(job)
    job_args = [*job_flags(params), *extra]
    _check_required(s, job_args)
    return [
        "--master", K8S_MASTER,
        "--deploy-mode", "cluster",
        "--name", s.app_name,
        *_conf({**k8s_conf(s, image=image, namespace=namespace), **(conf or {})}),
        f"local://{IMAGE_ROOT}/{s.script}",
        *job_args,
    ]  # fmt: skip


def operator_manifest(
    job: str, *, image: str, namespace: str, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """The same run as a SparkApplication for the Spark operator (sparkoperator.k8s.io)."""
    s = spec(job)
    conf = k8s_conf(s, image=image, namespace=namespace)
    for key in (  # the operator sets these from the typed fields below
        "spark.kubernetes.container.image",
        "spark.kubernetes.namespace",
        "spark.kubernetes.driver.podTemplateFile",
        "spark.kubernetes.executor.podTemplateFile",
        "spark.kubernetes.driver.podTemplateContainerName",
        "spark.kubernetes.executor.podTemplateContainerName",
        "spark.kubernetes.authenticate.driver.serviceAccountName",
        "spark.kubernetes.container.image.pullPolicy",
        "spark.kubernetes.submission.waitAppCompletion",
        "spark.executor.instances",
        "spark.executor.cores",
        "spark.executor.memory",
        "spark.driver.memory",
    ):
        conf.pop(key)

    def pod(**fields: Any) -> dict[str, Any]:  # fresh dicts: no YAML anchors in the output
        return {
            **fields,
            "labels": {
                "app.kubernetes.io/part-of": "prescore",
                "app.kubernetes.io/component": "spark-job",
            },
            "envFrom": [
                {"configMapRef": {"name": "prescore-config"}},
                {"secretRef": {"name": "prescore-secrets"}},
            ],
            "securityContext": {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }

    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {
            "name": s.app_name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "prescore"},
        },
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": f"local://{IMAGE_ROOT}/{s.script}",
            "arguments": list(extra),
            "sparkVersion": SPARK_VERSION,
            "sparkConf": conf,
            "restartPolicy": {"type": "Never"},
            "driver": pod(cores=1, memory=s.driver_memory, serviceAccount=SERVICE_ACCOUNT),
            "executor": pod(
                instances=s.executors, cores=s.executor_cores, memory=s.executor_memory
            ),
        },
    }


def spark_submit_bin() -> str:
    """spark-submit beside this interpreter (the pyspark wheel's), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "spark-submit")
    return beside if os.path.exists(beside) else "spark-submit"


def run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Run ``spark-submit argv``; a non-zero exit raises (CalledProcessError)."""
    cmd = [spark_submit_bin(), *argv]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, env=dict(env) if env is not None else None, check=True)


def published_since(dataset: str, since: str, env: Mapping[str, str]) -> str:
    """The version of ``dataset`` published at or after ``since``; raises when there is none."""
    from prescore.redis_client import connect
    from prescore.settings import Settings
    from prescore.versions import Versions

    settings = Settings.from_env(env)
    versions = Versions(connect(settings.redis), dataset, settings.store)
    for info in versions.all():
        if info.status == "published" and (info.published_at or "") >= since:
            return info.version
    raise SystemExit(f"{dataset}: spark-submit returned but no version was published since {since}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything after -- is passed to the job itself.",
    )
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--target", choices=("local", "k8s", "operator"), default="local")
    parser.add_argument("--master", default="local[*]", help="local target only")
    parser.add_argument("--driver-memory", default="2g", help="local target only")
    parser.add_argument("--image", help="jobs image (default: $PRESCORE_JOBS_IMAGE)")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: $POD_NAMESPACE)")
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        help="extra Spark setting key=value for the k8s target (also $PRESCORE_SPARK_CONF)",
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

        manifest = operator_manifest(args.job, image=image, namespace=namespace, extra=extra)
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
        return 0
    if args.target == "local":
        argv_ = local_args(
            args.job, master=args.master, driver_memory=args.driver_memory, extra=extra
        )
    else:
        conf = parse_conf(" ".join([env.get("PRESCORE_SPARK_CONF", ""), *args.conf]))
        argv_ = k8s_args(args.job, image=image, namespace=namespace, conf=conf, extra=extra)
    if not args.exec:
        print(shlex.join([spark_submit_bin(), *argv_]))
        return 0
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run(argv_)
    if args.target == "k8s":
        version = published_since(spec(args.job).dataset, started, env)
        print(f"{args.job}: published {spec(args.job).dataset} version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
