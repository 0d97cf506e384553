"""deploy/: every file parses, and the files agree with the gateway and with each other.

The dashboard and the alerts may only name series that ``GatewayMetrics`` exports (with
the suffixes Prometheus adds: ``_total``, ``_bucket``, ``_sum``, ``_count``) and only
their labels; the Kubernetes probes hit ``/health`` and ``/ready``; the example configs
validate against the gateway's own config models.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from gateway.settings.tenancy import TenancyConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "loragate.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
K8S = DEPLOY / "kubernetes" / "base"
# deploy/models and deploy/secrets hold the operator's own files (compose mounts them).
LOCAL = (DEPLOY / "models", DEPLOY / "secrets")


def deploy_files(*patterns: str) -> list[Path]:
    found = {p for pattern in patterns for p in DEPLOY.rglob(pattern)}
    return sorted(p for p in found if not any(p.is_relative_to(d) for d in LOCAL))


YAML_FILES = deploy_files("*.yaml", "*.yml")
JSON_FILES = deploy_files("*.json")

# Series that Prometheus itself attaches or creates for every target.
TARGET_LABELS = frozenset({"instance", "job"})
PROMETHEUS_SERIES = {"up": TARGET_LABELS}
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "inf", "nan"}
)
IDENT = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Sample name -> label names, for every series a gateway exports."""
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.labels.update(tenants=["t"], models=["m"], adapters=["a"])
    # Labelled families export samples only once a child exists.
    metrics.request_done(
        tenant="t", model="m", adapter="a", endpoint="chat", status=200, duration=0.1
    )
    labels = metrics.series(tenant="t", adapter="a")
    metrics.tokens(labels, prompt=1, completion=1)
    metrics.spend(labels, "m", cost=0.5, engine_seconds=0.5)
    metrics.first_token(labels, 0.1)
    metrics.per_token(labels, 0.01)
    metrics.in_flight.labels("t").set(1)
    metrics.fair_queue_waited("t", 0.1)
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) for name, labels in series.items()}


def known_series() -> dict[str, frozenset[str]]:
    return {**exported_series(), **PROMETHEUS_SERIES}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<selector>, <label>): check the selector as an expression.
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
            assert match, var["query"]["query"]
            selector, label = match.groups()
            name = IDENT.search(selector)
            assert name and label in known_series()[name.group(0)] | TARGET_LABELS, var["name"]
            exprs.append(selector)
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)[0]["groups"] for rule in group["rules"]]


def check_promql(expr: str) -> set[str]:
    """Metric names in ``expr``; fails on unknown series or labels. Returns the names."""
    series = known_series()
    used: set[str] = set()
    for name, matchers in SELECTOR.findall(expr):
        labels = set(MATCHER.findall(matchers))
        assert name in series, f"unknown series {name} in {expr}"
        assert labels <= series[name] | TARGET_LABELS, f"{name}: labels {labels} in {expr}"
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and regexes
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)  # matchers and ranges
    grouping = {label.strip() for labels in GROUPING.findall(bare) for label in labels.split(",")}
    bare = GROUPING.sub(" ", bare)
    for match in IDENT.finditer(bare):
        word = match.group(0)
        if word in PROMQL_WORDS or bare[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function
        assert word in series, f"unknown series {word} in {expr}"
        used.add(word)
    allowed = set().union(*(series[n] for n in used)) | TARGET_LABELS
    assert grouping - {""} <= allowed, f"grouping by {grouping - allowed} in {expr}"
    if "histogram_quantile" in expr:
        assert "_bucket" in expr and re.search(r"by \([^)]*\ble\b", expr), expr
    return used


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert load_yaml(path)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text())


def test_dashboard_names_only_exported_series_and_shows_them_all() -> None:
    used = set().union(*(check_promql(expr) for expr in dashboard_exprs()))
    suffixes = re.compile(r"_(total|bucket|sum|count|created)$")
    families = {suffixes.sub("", name) for name in exported_series()}
    shown = {suffixes.sub("", name) for name in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


def test_dashboard_structure() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"DS_PROMETHEUS", "tenant", "adapter"} <= set(variables)
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert board["uid"] and board["schemaVersion"] >= 36
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, f"{panel['title']} overlaps another panel"
        cells |= area
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_alerts_name_only_exported_series() -> None:
    rules = alert_rules()
    assert len(rules) >= 4
    for rule in rules:
        check_promql(rule["expr"])
        assert rule["labels"]["severity"] and rule["annotations"]["summary"], rule["alert"]


def test_prometheus_rule_equals_alerts_file() -> None:
    (rule,) = load_yaml(K8S / "prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load_yaml(ALERTS)[0]["groups"]


def test_kubernetes_probes_and_mounts() -> None:
    (deployment,) = load_yaml(K8S / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert container["resources"]["limits"]["memory"]
    # Service links would inject LORAGATE_* variables for a Service named loragate.
    assert pod["enableServiceLinks"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" in volumes["data"]
    assert volumes["config"]["configMap"]["name"] == "loragate-config"
    (monitor,) = load_yaml(K8S / "servicemonitor.yaml")
    credentials = monitor["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert credentials["name"] and credentials["key"]


def test_images_check_health() -> None:
    for name in ("Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.gateway"):
        text = (DEPLOY / "docker" / name).read_text()
        assert re.search(r"HEALTHCHECK .*\n.*/health", text), name
        assert re.search(r"^USER 10001", text, re.MULTILINE), name


def test_prometheus_reads_the_compose_secret() -> None:
    (compose,) = load_yaml(DEPLOY / "compose.yaml")
    (prometheus,) = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "loragate"]
    secret = job["bearer_token_file"].removeprefix("/run/secrets/")
    assert secret in compose["secrets"] and secret in compose["services"]["prometheus"]["secrets"]
    (provider,) = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "loragate.yaml")
    path = provider["providers"][0]["options"]["path"]
    assert any(v.endswith(f":{path}:ro") for v in compose["services"]["grafana"]["volumes"])


@pytest.mark.parametrize(
    "config",
    [
        load_yaml(DEPLOY / "config" / "loragate.yaml")[0],
        yaml.safe_load(load_yaml(K8S / "configmap.yaml")[0]["data"]["loragate.yaml"]),
    ],
    ids=["compose", "configmap"],
)
def test_example_configs_validate(config: dict[str, Any]) -> None:
    settings = Settings.load(None, **config)
    assert settings.tenancy().enabled
    assert isinstance(settings.tenancy(), TenancyConfig)
    assert settings.server.host == "0.0.0.0"
