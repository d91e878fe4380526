"""A bulk job's run on Kubernetes: the spark-submit line of a cluster-mode run (the CronJobs
run it through ``python -m jobs.submit --target k8s``), the Spark driver and executor pod
templates, built once for both targets (the k8s target writes them to files for
spark-submit, the operator target embeds them), and the (Scheduled)SparkApplication of
the Spark operator (``--target operator``; k8s/spark-operator/ holds its output)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.job_specs import COMMON_CONF, JobSpec, check_required, conf_flags, job_flags, spec

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
TTL_S = 7 * 24 * 3600  # finished runs are removed after a week (as the CronJobs' Jobs)

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
    check_required(s, job_args)
    directory = template_dir or tempfile.mkdtemp(prefix="prescore-spark-")
    templates = write_pod_templates(directory, Names.from_env(env), _owner(env))
    return [
        "--master",
        K8S_MASTER,
        "--deploy-mode",
        "cluster",
        "--name",
        s.app_name(job_args),
        *conf_flags({**k8s_conf(s, image=image, namespace=namespace), **templates, **(conf or {})}),
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
    check_required(s, extra)
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
