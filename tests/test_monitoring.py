"""k8s/monitoring: the alert rules pass promtool's check and its unit tests; the
ServiceMonitors and the PrometheusRule fit the Prometheus Operator's CRD schemas and find
the services' metrics ports; the Grafana dashboard loads and its queries parse; every
metric named anywhere there is one the services export; every alert has its runbook."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_tools import K8S, ROOT, find, generated, kustomize, of_kind, render, validate

MONITORING = K8S / "monitoring"
DASHBOARD = MONITORING / "dashboards" / "prescore.json"
RULES_TEST = Path(__file__).parent / "promtool" / "prescore_rules_test.yaml"
SOURCES = [*ROOT.glob("lookup/*.py"), *ROOT.glob("fallback/*.py")]


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool from PATH, else Debian's package unpacked by k8s/tools/install-promtool.sh."""
    done = subprocess.run(
        [str(K8S / "tools" / "install-promtool.sh")], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.skip(f"promtool cannot be had here: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()


def _objects() -> tuple[dict[str, Any], ...]:
    return kustomize(MONITORING)


def _rules() -> dict[str, Any]:
    return dict(find(_objects(), "PrometheusRule", "prescore")["spec"])


def _run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_pass_promtool_check_and_its_unit_tests(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "prescore.rules.yaml").write_text(yaml.safe_dump(_rules()))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    out = _run([promtool, "check", "rules", "prescore.rules.yaml"], tmp_path)
    assert "SUCCESS" in out
    assert "SUCCESS" in _run([promtool, "test", "rules", RULES_TEST.name], tmp_path)
    # the unit tests cover every alert
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == set(_alerts())


def test_a_broken_rule_fails_promtool(promtool: str, tmp_path: Path) -> None:
    rules = _rules()
    rules["groups"][1]["rules"][0]["expr"] = "max by (dataset) (prescore_dataset_age_seconds > "
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", "bad.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in _rules()["groups"] for r in g["rules"] if "alert" in r}


def test_the_manifests_fit_the_operators_crds_and_find_the_metrics_ports() -> None:
    objs = _objects()
    for obj in objs:
        validate(obj)
    services = {s["metadata"]["name"]: s for s in of_kind(render("overlays/dev"), "Service")}
    for monitor in of_kind(objs, "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        labels = {n: s["metadata"]["labels"].items() for n, s in services.items()}
        matched = [services[n] for n, have in labels.items() if wanted.items() <= have]
        assert len(matched) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in matched[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        assert "metrics" in ports
    dashboard = generated(objs, "ConfigMap", "prescore-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["prescore.json"]) == json.loads(DASHBOARD.read_text())


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_the_dashboard_loads_and_every_query_parses(promtool: str, tmp_path: Path) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "prescore" and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24 and box["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    names = {v["name"] for v in doc["templating"]["list"]}
    assert names == {"datasource", "dataset"}
    # each query as a recording rule: promtool parses it (the variables substituted)
    rules = [
        {"record": f"prescore:dashboard_query_{i}", "expr": e.replace("$dataset", ".*")}
        for i, e in enumerate(_dashboard_exprs())
    ]
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))
    assert "SUCCESS" in _run([promtool, "check", "rules", "q.yaml"], tmp_path)


def _exported() -> set[str]:
    """Every metric name the lookup and the fallback define, with the series names
    prometheus_client derives (counters' _total, histograms' _bucket, _sum, _count)."""
    names: set[str] = set()
    for path in SOURCES:
        for name in re.findall(r'"(prescore_[a-z_]+)"', path.read_text()):
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_every_metric_the_rules_and_the_dashboard_name_is_exported() -> None:
    exprs = [r["expr"] for g in _rules()["groups"] for r in g["rules"]] + _dashboard_exprs()
    used = {m for e in exprs for m in re.findall(r"(?<![:\w])(prescore_[a-z_]+)", e)}
    assert used and used <= _exported(), used - _exported()
    recorded = {r["record"] for g in _rules()["groups"] for r in g["rules"] if "record" in r}
    for e in _dashboard_exprs():  # a recording rule a panel reads is one the rules make
        assert set(re.findall(r"prescore:[a-z0-9_:]+", e)) <= recorded, e


def test_every_alert_has_a_runbook_in_the_deploy_guide() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", guide, re.M)
    }
    for name, rule in _alerts().items():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert rule["annotations"]["runbook"].startswith("docs/deploy.md#")
        assert anchor == name.lower() and anchor in headings, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
