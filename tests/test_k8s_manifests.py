"""The Kubernetes manifests: each build validates as a cluster would validate it (the
Kubernetes schemas, the Spark operator's CRD schemas, PodSecurity `restricted`), the
security scan passes, and the objects say what they must."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from prescore.data.datasets import load as load_datasets
from tests.k8s_tools import (
    BUILDS,
    CRD_FILES,
    K8S,
    MONITORING_CRDS,
    OVERLAYS,
    ROOT,
    SCHEMAS,
    checkov,
    crd_schema,
    find,
    generated,
    kustomize,
    of_kind,
    pod_spec,
    pod_specs,
    render,
    restricted_violations,
    spark_pods,
    validate,
)

WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
SERVICES = {"prescore-lookup": 8080, "prescore-fallback": 8081}
NAMESPACE = {
    "overlays/dev": "prescore-dev",
    "overlays/prod": "prescore",
    "spark-operator": "prescore",
    "spark-operator-gpu": "prescore",
}


@pytest.mark.parametrize("build", BUILDS)
def test_build_validates_as_a_cluster_would(build: str) -> None:
    objs = render(build)
    assert len(objs) > 20
    for obj in objs:
        validate(obj)
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {NAMESPACE[build]}


@pytest.mark.parametrize("build", BUILDS)
def test_every_pod_passes_pod_security_restricted(build: str) -> None:
    objs = render(build)
    ns = next(o for o in objs if o["kind"] == "Namespace")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"
    checked = 0
    for where, spec in pod_specs(objs):
        assert restricted_violations(spec) == [], where
        checked += 1
    assert checked >= 5
    for pod in spark_pods(build):  # the pods the bulk runs create, as Spark creates them
        assert restricted_violations(pod["spec"]) == [], pod["metadata"]["name"]
        validate(pod)


def test_the_restricted_check_refuses_what_the_profile_refuses() -> None:
    spec = pod_spec(find(render("overlays/prod"), "Deployment", "prescore-lookup"))
    assert restricted_violations(spec) == []
    for change in (
        lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
        lambda s: s["securityContext"].pop("seccompProfile"),
        lambda s: s["securityContext"].pop("runAsNonRoot"),
        lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        lambda s: s.update(hostNetwork=True),
    ):
        broken = json.loads(json.dumps(spec))
        change(broken)
        assert restricted_violations(broken), change


def test_vendored_crds_are_the_published_files() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    sums = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    assert set(sums) == set(CRD_FILES.values()) | set(MONITORING_CRDS.values())
    for name, digest in sums.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (SCHEMAS / "LICENSE.spark-operator").read_text()
    assert "Apache License" in (SCHEMAS / "LICENSE.prometheus-operator").read_text()
    assert "kubeflow/spark-operator" in readme and "v2.5.2" in readme


@pytest.mark.parametrize("build", ["spark-operator", "spark-operator-gpu"])
def test_spark_applications_match_the_operator_crd(build: str) -> None:
    apps = of_kind(render(build), "ScheduledSparkApplication")
    assert {a["metadata"]["name"] for a in apps} == {"prescore-score-reco", "prescore-score-tags"}
    for app in apps:
        jsonschema.validate(app, crd_schema("ScheduledSparkApplication"))
        # each run the operator makes from it is a SparkApplication with this spec
        run = {
            "apiVersion": app["apiVersion"],
            "kind": "SparkApplication",
            "metadata": {"name": "run"},
            "spec": app["spec"]["template"],
        }
        jsonschema.validate(run, crd_schema("SparkApplication"))
        spec = app["spec"]["template"]
        assert spec["timeToLiveSeconds"] > 0
        assert spec["restartPolicy"]["type"] in ("Never", "OnFailure")
        assert app["spec"]["concurrencyPolicy"] == "Forbid"
        for role in ("driver", "executor"):
            assert "template" in spec[role]  # no mutating webhook needed
        broken: dict[str, Any] = json.loads(json.dumps(run))
        broken["spec"]["mode"] = "yarn"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, crd_schema("SparkApplication"))
        typo: dict[str, Any] = json.loads(json.dumps(run))
        typo["spec"]["driver"]["serviceAcount"] = "x"  # the API server would prune it
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(typo, crd_schema("SparkApplication"))


def test_the_gpu_build_puts_only_the_tagging_executors_on_a_gpu() -> None:
    plain, gpu = render("spark-operator"), render("spark-operator-gpu")
    tags = find(gpu, "ScheduledSparkApplication", "prescore-score-tags")["spec"]["template"]
    conf = tags["sparkConf"]
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert conf["spark.executor.resource.gpu.vendor"] == "nvidia.com"  # Spark sets the limit
    cores = tags["executor"]["cores"]
    assert float(conf["spark.task.resource.gpu.amount"]) * cores == 1  # its tasks share it
    assert conf["spark.executorEnv.TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    script = conf["spark.executor.resource.gpu.discoveryScript"]
    dockerfile = (ROOT / "docker" / "jobs.Dockerfile").read_text()
    assert f"COPY docker/{Path(script).name} {script}" in dockerfile
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tags[
        "executor"
    ]["template"]["spec"]["tolerations"]
    for name in ("prescore-score-tags", "prescore-score-reco"):
        before = find(plain, "ScheduledSparkApplication", name)["spec"]["template"]
        after = find(gpu, "ScheduledSparkApplication", name)["spec"]["template"]
        for role in ("driver", "executor"):  # the pods are the same otherwise
            spec = dict(after[role]["template"]["spec"])
            if name.endswith("tags") and role == "executor":
                del spec["tolerations"]
            assert spec == before[role]["template"]["spec"], (name, role)
        extra = {k: v for k, v in after["sparkConf"].items() if before["sparkConf"].get(k) != v}
        assert bool(extra) == name.endswith("tags"), extra


def test_the_gpu_discovery_script_says_gpu_and_no_address_without_a_gpu() -> None:
    out = subprocess.run(
        [str(ROOT / "docker" / "getGpusResources.sh")],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout) == {"name": "gpu", "addresses": []}  # this machine has none


def test_the_operator_build_replaces_the_bulk_cronjobs_and_keeps_the_release_image() -> None:
    prod, operator = render("overlays/prod"), render("spark-operator")
    assert {c["metadata"]["name"] for c in of_kind(operator, "CronJob")} == {"prescore-retrain"}
    jobs_image = pod_spec(find(prod, "CronJob", "prescore-score-reco"))["containers"][0]["image"]
    config = generated(operator, "ConfigMap", "prescore-config")["metadata"]["name"]
    datasets = generated(operator, "ConfigMap", "prescore-datasets")["metadata"]["name"]
    for app in of_kind(operator, "ScheduledSparkApplication"):
        assert app["spec"]["template"]["image"] == jobs_image
        cron = find(prod, "CronJob", app["metadata"]["name"])
        assert app["spec"]["schedule"] == cron["spec"]["schedule"]  # the same nightly slot
        assert app["spec"]["timeZone"] == cron["spec"]["timeZone"]
        driver = app["spec"]["template"]["driver"]["template"]["spec"]
        assert {"configMapRef": {"name": config}} in driver["containers"][0]["envFrom"]
        assert {"name": "datasets", "configMap": {"name": datasets}} in driver["volumes"]


@pytest.mark.slow  # checkov, installed on first use
@pytest.mark.parametrize("build", BUILDS)
def test_security_scan_passes(build: str, tmp_path: Path) -> None:
    """checkov over the rendered build; waivers (with reasons) in the config files."""
    config = K8S / "overlays" / "dev" / "checkov.yaml" if "dev" in build else K8S / "checkov.yaml"
    rendered = tmp_path / "rendered.yaml"
    # the build, and the Spark pods its bulk runs create (which no manifest spells out)
    rendered.write_text(yaml.safe_dump_all([*render(build), *spark_pods(build)], sort_keys=False))
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


def test_every_checkov_waiver_says_why() -> None:
    for path in (K8S / "checkov.yaml", K8S / "overlays" / "dev" / "checkov.yaml"):
        lines = path.read_text().splitlines()
        skips = [i for i, ln in enumerate(lines) if re.match(r"\s*- CKV_", ln)]
        assert skips
        for i in skips:
            inline = "#" in lines[i]
            above = lines[i - 1].strip().startswith("#")
            assert inline or above, f"{path}: {lines[i].strip()} has no reason"
    for build in BUILDS:  # and every waiver on an object: checkov.io/skipN: CHECK=reason
        for obj in [*render(build), *spark_pods(build)]:
            for meta in _metadata_in(obj):
                for key, value in meta.get("annotations", {}).items():
                    if key.startswith("checkov.io/skip"):
                        check, _, reason = value.partition("=")
                        assert re.fullmatch(r"CKV2?_K8S_\d+", check), value
                        assert len(reason.split()) >= 4, f"{build}: {value} gives no reason"


def _metadata_in(obj: Any) -> list[dict[str, Any]]:
    """Every metadata block in an object (its own, its pod templates')."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if isinstance(obj.get("metadata"), dict):
            found.append(obj["metadata"])
        for value in obj.values():
            found += _metadata_in(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _metadata_in(value)
    return found


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
    config = generated(objs, "ConfigMap", "prescore-config")["metadata"]["name"]
    for name, port in SERVICES.items():
        deploy = find(objs, "Deployment", name)
        spec = pod_spec(deploy)
        (c,) = spec["containers"]
        # readiness and liveness are different questions; liveness never asks Redis
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        ready = c["readinessProbe"]
        assert ready["periodSeconds"] * ready["failureThreshold"] >= 15  # rides a short blip
        sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep > 0 and sleep + 10 < spec["terminationGracePeriodSeconds"]  # + graceful stop
        assert c["ports"][0]["containerPort"] == port
        assert {"configMapRef": {"name": config}} in c["envFrom"]
        assert {"secretRef": {"name": _secret_name(objs)}} in c["envFrom"]
        annotations = deploy["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9090"  # metrics apart from the API
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        bind = "LOOKUP_METRICS_BIND" if name == "prescore-lookup" else "FALLBACK_METRICS_BIND"
        assert env[bind] == "0.0.0.0:9090"
        assert {"name": "metrics", "containerPort": 9090} in c["ports"]
        hpa = find(objs, "HorizontalPodAutoscaler", name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        find(objs, "PodDisruptionBudget", name)
        assert find(objs, "Service", name)["spec"]["ports"][0]["port"] == port


def _secret_name(objs: tuple[dict[str, Any], ...]) -> str:
    secrets = of_kind(objs, "Secret")
    return secrets[0]["metadata"]["name"] if secrets else "prescore-secrets"


def _mount_of(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume ``path`` lies on in ``container`` (the deepest mount holding it)."""
    mounts = [m for m in container["volumeMounts"] if (path + "/").startswith(m["mountPath"] + "/")]
    assert mounts, f"{path} is on the read-only root filesystem"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return next(v for v in spec["volumes"] if v["name"] == mount["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_services_run_their_images_command_and_user(overlay: str) -> None:
    """What tests/test_images.py runs is what the Deployments run: the image's CMD on the
    port its ENV names (the containerPort), as the image's USER."""
    objs = render(f"overlays/{overlay}")
    for name, port in SERVICES.items():
        service = name.removeprefix("prescore-")
        text = (ROOT / "docker" / f"{service}.Dockerfile").read_text()
        cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
        user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
        bind = re.search(rf"^ +{service.upper()}_BIND=\S+:(\d+)", text, re.M)
        spec = pod_spec(find(objs, "Deployment", name))
        (c,) = spec["containers"]
        repo = c["image"].split("@")[0].rsplit(":", 1)[0]  # registry/.../NAME
        assert repo.split("/")[-1] in (name, service), c["image"]
        assert c["args"] == cmd and bind and int(bind[1]) == port
        assert str(spec["securityContext"]["runAsUser"]) == user


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_services_keep_multiprocess_metrics_on_their_own_empty_dir(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    for name in SERVICES:
        spec = pod_spec(find(objs, "Deployment", name))
        (c,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        path = env["PROMETHEUS_MULTIPROC_DIR"]
        volume = _mount_of(spec, c, path)
        assert volume["emptyDir"]["medium"] == "Memory", name  # mmap'ed files, small
        # the folder itself is made by the service at start (the mount is its parent)
        assert all(m["mountPath"] != path for m in c["volumeMounts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_and_datasets_are_hashed_so_a_change_rolls_the_pods(
    overlay: str, tmp_path: Path
) -> None:
    objs = render(f"overlays/{overlay}")
    for name in ("prescore-config", "prescore-datasets"):
        assert generated(objs, "ConfigMap", name)["metadata"]["name"] != name
    # the same overlay with one setting changed: new ConfigMap name in every pod template
    change = {"name": "prescore-config", "behavior": "merge", "literals": ["PRESCORE_LIVE_TTL_S=6"]}
    resources = [os.path.relpath(K8S / "overlays" / overlay, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": resources, "configMapGenerator": [change]})
    )
    changed = kustomize(tmp_path)
    for name in SERVICES:
        before = pod_spec(find(objs, "Deployment", name))["containers"][0]["envFrom"]
        after = pod_spec(find(changed, "Deployment", name))["containers"][0]["envFrom"]
        assert before != after


@pytest.mark.parametrize("build", BUILDS)
def test_every_pod_that_reads_settings_mounts_the_dataset_declarations(build: str) -> None:
    objs = render(build)
    config = generated(objs, "ConfigMap", "prescore-config")
    datasets = generated(objs, "ConfigMap", "prescore-datasets")
    path = config["data"]["PRESCORE_CONFIG"]
    key = Path(path).name
    assert key in datasets["data"]
    for obj in objs:
        if obj["kind"] not in WORKLOADS:
            continue
        spec = pod_spec(obj)
        for c in spec["containers"] + spec.get("initContainers", []):
            refs = [s.get("configMapRef", {}).get("name") for s in c.get("envFrom", [])]
            if config["metadata"]["name"] not in refs:
                continue
            volume = _mount_of(spec, c, path)
            assert volume["configMap"]["name"] == datasets["metadata"]["name"], c["name"]


def _toml_skeleton(doc: Any) -> Any:
    """A declaration with its paths and commands left out (they differ per deployment)."""
    if isinstance(doc, dict):
        return {k: _toml_skeleton(v) for k, v in doc.items() if k not in ("path", "command")}
    return doc


@pytest.mark.parametrize("build", BUILDS)
def test_the_deployed_datasets_are_the_demos_with_the_deployments_paths(
    build: str, tmp_path: Path
) -> None:
    objs = render(build)
    data = generated(objs, "ConfigMap", "prescore-datasets")["data"]
    config = generated(objs, "ConfigMap", "prescore-config")["data"]
    text = data[Path(config["PRESCORE_CONFIG"]).name]
    demo = tomllib.loads((ROOT / "examples" / "hotels" / "prescore.toml").read_text())
    assert _toml_skeleton(tomllib.loads(text)) == _toml_skeleton(demo)
    file = tmp_path / "prescore.toml"
    file.write_text(text)
    catalog = load_datasets(file, config)  # loads with exactly the pods' settings
    assert catalog.names() == ["reco", "tags"]
    reco, tags = catalog.get("reco"), catalog.get("tags")
    assert reco.entities is not None and reco.training is not None
    data_path = config["PRESCORE_DATA_URI"].split("://")[-1]
    assert reco.entities.path.endswith(data_path + "/users.parquet")  # file:// or hdfs://
    assert tags.images.endswith(config["PRESCORE_IMAGES_URI"].split("://")[-1])
    assert reco.training.command[2] == "examples.hotels.train_reco"


def test_the_base_knows_no_dataset_and_the_demos_come_as_a_component() -> None:
    """A team builds on k8s/base with its own datasets: the base declares none and runs
    no bulk job; the demo's declarations and CronJobs are its component's, which the dev
    and prod overlays include."""
    objs = render("base")
    text = generated(objs, "ConfigMap", "prescore-datasets")["data"]["prescore.toml"]
    assert tomllib.loads(text) == {}
    assert not of_kind(objs, "CronJob")
    base_files = " ".join(p.read_text() for p in (K8S / "base").iterdir())
    base_files = base_files.replace("components/hotels-demo", "")  # pointers to the demo
    assert not re.search(r"\b(reco|tags|hotels?)\b", base_files)
    for overlay in OVERLAYS:
        names = {o["metadata"]["name"] for o in of_kind(render(f"overlays/{overlay}"), "CronJob")}
        assert names == {"prescore-score-reco", "prescore-score-tags", "prescore-retrain"}


def _code_text() -> str:
    return "\n".join(
        p.read_text()
        for pkg in ("prescore", "lookup", "fallback", "jobs")
        for p in (ROOT / pkg).rglob("*.py")
    )


@pytest.mark.parametrize("build", BUILDS)
def test_every_setting_is_one_the_code_or_the_dataset_declarations_read(build: str) -> None:
    objs = render(build)
    code = _code_text()
    declarations = "\n".join(generated(objs, "ConfigMap", "prescore-datasets")["data"].values())
    for key in generated(objs, "ConfigMap", "prescore-config")["data"]:
        if key == "TF_CPP_MIN_LOG_LEVEL":  # TensorFlow's own
            continue
        assert f'"{key}"' in code or f"${{{key}}}" in declarations, f"nothing reads {key}"


def test_dev_runs_redis_and_prod_uses_an_external_cluster() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    redis = find(dev, "StatefulSet", "redis")
    assert find(dev, "Service", redis["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    secret = generated(dev, "Secret", "prescore-secrets")
    assert {"REDIS_URL", "REDIS_PASSWORD"} <= set(secret["data"])
    env = pod_spec(redis)["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert not of_kind(prod, "StatefulSet") and not of_kind(prod, "Secret")
    config = generated(prod, "ConfigMap", "prescore-config")["data"]
    assert config["PRESCORE_REDIS_CLUSTER"] == "1"
    assert config["PRESCORE_MODEL_STORE"].startswith("hdfs://")
    assert config["FALLBACK_WEBHDFS_URL"].startswith("http://")  # hdfs:// tables and images
    assert generated(dev, "ConfigMap", "prescore-config")["data"]["PRESCORE_REDIS_CLUSTER"] == "0"


def test_only_the_dev_demo_jobs_run_the_demo_image() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")

    def images(objs: tuple[dict[str, Any], ...]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for obj in objs:
            if obj["kind"] in WORKLOADS:
                spec = pod_spec(obj)
                out[obj["metadata"]["name"]] = {
                    c["image"] for c in spec["containers"] + spec.get("initContainers", [])
                }
        return out

    demo = {name for name, imgs in images(dev).items() if any("demo" in i for i in imgs)}
    assert demo == {"prescore-seed-demo-data", "prescore-retrain"}
    assert not any("demo" in i for imgs in images(prod).values() for i in imgs)
    for cron in of_kind(dev, "CronJob"):  # the Spark pods' image is the jobs image
        (c,) = pod_spec(cron)["containers"]
        jobs_image = next(e["value"] for e in c["env"] if e["name"] == "PRESCORE_JOBS_IMAGE")
        assert "demo" not in jobs_image and "jobs" in jobs_image


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _ingress_allowed(
    objs: tuple[dict[str, Any], ...],
    src: str,
    dst: str,
    port: int,
    src_namespace: dict[str, str] | None = None,
) -> bool:
    """Does some NetworkPolicy let pods of component ``src`` (in the policies' namespace,
    or in one labelled ``src_namespace``) into ``dst`` on ``port``?"""
    src_labels = {"app.kubernetes.io/component": src}
    for pol in of_kind(objs, "NetworkPolicy"):
        if not _selects(pol["spec"].get("podSelector", {}), {"app.kubernetes.io/component": dst}):
            continue
        for rule in pol["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "namespaceSelector" in peer:
                    if src_namespace is None or not _selects(
                        peer["namespaceSelector"], src_namespace
                    ):
                        continue
                elif src_namespace is not None:
                    continue  # a bare podSelector means this namespace
                if _selects(peer.get("podSelector", {}), src_labels):
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_may_scrape_both_services(overlay: str) -> None:
    objs = render(f"overlays/{overlay}")
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    other = {"kubernetes.io/metadata.name": "elsewhere"}
    for dst in ("lookup", "fallback"):
        assert _ingress_allowed(objs, "prometheus", dst, 9090, src_namespace=monitoring), dst
        assert not _ingress_allowed(objs, "prometheus", dst, 9090, src_namespace=other), dst
        assert not _ingress_allowed(objs, "unknown", dst, 9090), dst  # nor the namespace's pods
    assert not _ingress_allowed(objs, "prometheus", "fallback", 8081, src_namespace=monitoring)
    assert not _ingress_allowed(objs, "prometheus", "redis", 6379, src_namespace=monitoring)


def test_spark_rbac_covers_what_spark_on_kubernetes_creates() -> None:
    objs = render("overlays/prod")
    role = find(objs, "Role", "prescore-spark")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"pods", "services", "configmaps", "persistentvolumeclaims"} <= resources
    binding = find(objs, "RoleBinding", "prescore-spark")
    assert binding["subjects"][0]["name"] == "prescore-spark"
    find(objs, "ServiceAccount", "prescore-spark")
