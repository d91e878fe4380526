"""The Kubernetes manifests: each overlay builds, every object validates against the
Kubernetes schemas, the security scan passes, and the objects say what they must."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.k8s_tools import (
    K8S,
    K8S_VERSION,
    OVERLAYS,
    checkov,
    find,
    of_kind,
    pod_spec,
    render,
    rendered_text,
)

WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    assert len(objs) > 20
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {f"prescore-{overlay}" if overlay == "dev" else "prescore"}


def test_pod_templates_are_valid_pods() -> None:
    for name in ("driver-template.yaml", "executor-template.yaml"):
        pod = yaml.safe_load((K8S / "base" / "spark" / name).read_text())
        # Spark fills in image and command; give the schema what Spark adds.
        pod["spec"]["containers"][0]["image"] = "prescore-jobs:test"
        pod["metadata"]["name"] = "template"
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_spark_applications_match_their_schema() -> None:
    # kubernetes-validate knows only built-in kinds; the operator's CRD gets a small schema.
    schema = json.loads((K8S / "schemas" / "sparkapplication-v1beta2.json").read_text())
    apps = of_kind(render("spark-operator"), "SparkApplication")
    assert {a["metadata"]["name"] for a in apps} == {
        "prescore-score-recommendations",
        "prescore-tag-images",
    }
    for app in apps:
        jsonschema.validate(app, schema)
    broken: dict[str, Any] = json.loads(json.dumps(apps[0]))
    broken["spec"]["mode"] = "yarn"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_scan_passes(overlay: str, tmp_path: Path) -> None:
    """checkov over the rendered overlay; waivers (with reasons) in the config files."""
    config = K8S / "overlays" / "dev" / "checkov.yaml" if overlay == "dev" else K8S / "checkov.yaml"
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(rendered_text(f"overlays/{overlay}"))
    out = subprocess.run(
        [checkov(), "--config-file", str(config), "-f", str(rendered), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(out.stdout)
    failed = report["results"]["failed_checks"]
    assert not failed, [(f["check_id"], f["resource"]) for f in failed]
    assert report["summary"]["passed"] > 300
    assert out.returncode == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workloads_are_locked_down(overlay: str) -> None:
    for obj in render(f"overlays/{overlay}"):
        if obj["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        needs_api = obj["kind"] == "CronJob"  # spark-submit creates the driver pod
        assert spec["automountServiceAccountToken"] is needs_api, obj["metadata"]["name"]
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_have_probes_autoscaling_and_budgets(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    for name, port in (("prescore-lookup", 8080), ("prescore-fallback", 8081)):
        (c,) = pod_spec(find(objs, "Deployment", name))["containers"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["ports"][0]["containerPort"] == port
        assert {"configMapRef": {"name": "prescore-config"}} in c["envFrom"]
        assert {"secretRef": {"name": "prescore-secrets"}} in c["envFrom"]
        hpa = find(objs, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        find(objs, "PodDisruptionBudget", name)
        assert find(objs, "Service", name)["spec"]["ports"][0]["port"] == port


def test_dev_runs_redis_and_prod_uses_an_external_cluster() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    redis = find(dev, "StatefulSet", "redis")
    assert find(dev, "Service", redis["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    secret = find(dev, "Secret", "prescore-secrets")
    assert {"REDIS_URL", "REDIS_PASSWORD"} <= set(secret["data"])
    assert not of_kind(prod, "StatefulSet") and not of_kind(prod, "Secret")
    config = find(prod, "ConfigMap", "prescore-config")["data"]
    assert config["PRESCORE_REDIS_CLUSTER"] == "1"
    assert config["PRESCORE_MODEL_STORE"].startswith("hdfs://")
    assert find(dev, "ConfigMap", "prescore-config")["data"]["PRESCORE_REDIS_CLUSTER"] == "0"


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = policy.get("podSelector", {})
    for key, value in sel.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in sel.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _ingress_allowed(objs: tuple[dict[str, Any], ...], src: str, dst: str, port: int) -> bool:
    """Does some NetworkPolicy let pods of component ``src`` into ``dst`` on ``port``?"""
    src_labels = {"app.kubernetes.io/component": src}
    for pol in of_kind(objs, "NetworkPolicy"):
        if not _selects(pol["spec"], {"app.kubernetes.io/component": dst}):
            continue
        for rule in pol["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if peers is None or any(_selects(p, src_labels) for p in peers):
                return True
    return False


def test_network_policies_allow_only_the_intended_paths() -> None:
    dev = render("overlays/dev")
    deny = find(dev, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert _ingress_allowed(dev, "lookup", "fallback", 8081)
    for other in ("spark-job", "redis", "seed", "unknown"):
        assert not _ingress_allowed(dev, other, "fallback", 8081), other
    for client in ("lookup", "fallback", "spark-job"):
        assert _ingress_allowed(dev, client, "redis", 6379), client
    for other in ("seed", "unknown"):
        assert not _ingress_allowed(dev, other, "redis", 6379), other
    assert _ingress_allowed(dev, "unknown", "lookup", 8080)  # the public API


def test_spark_rbac_covers_what_spark_on_kubernetes_creates() -> None:
    objs = render("overlays/prod")
    role = find(objs, "Role", "prescore-spark")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"pods", "services", "configmaps", "persistentvolumeclaims"} <= resources
    binding = find(objs, "RoleBinding", "prescore-spark")
    assert binding["subjects"][0]["name"] == "prescore-spark"
    find(objs, "ServiceAccount", "prescore-spark")
