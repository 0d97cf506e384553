"""deploy/: the scale-out topology's manifests hold together, as far as a file can tell.

Kubernetes (``kubernetes/scaleout`` and its InferencePool variant): each kustomization is
resolved here the way kustomize does (resources, strategic-merge patches, namespace), and
then every reference must land: selectors on pod labels, Service ports on named container
ports, volumes on PVCs and ConfigMap keys, the gateway config (validated by
``gateway.settings.Settings``) on the replicas' headless Service, their flags and Redis; the
NetworkPolicy admits only gateway pods to the replicas' API port. Where ``kubectl`` is
installed, its own ``kubectl kustomize`` must build the same objects. Compose
(``compose.scaleout.yaml``): mounted files exist, volumes and secrets are declared, the
gateways' config names the replica services, and HAProxy and Prometheus reach them all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.settings import RemoteEngineSettings, Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SCALEOUT = DEPLOY / "kubernetes" / "scaleout"
POOL = DEPLOY / "kubernetes" / "scaleout-inferencepool"
COMPOSE = DEPLOY / "compose.scaleout.yaml"
GATEWAY = {"app.kubernetes.io/name": "loragate", "app.kubernetes.io/component": "gateway"}
REPLICA = {"app.kubernetes.io/name": "loragate-vllm", "app.kubernetes.io/component": "replica"}
WORKLOADS = ("Deployment", "StatefulSet")
# The replicas' flags that the gateway's engine section must repeat.
MIRRORED_FLAGS = {
    "--max-loras": "max_loras",
    "--max-cpu-loras": "max_cpu_loras",
    "--max-lora-rank": "max_lora_rank",
    "--max-model-len": "max_model_len",
}
REQUIRED_FLAGS = ("--enable-lora", "--enable-prompt-tokens-details", *MIRRORED_FLAGS)

Object = dict[str, Any]


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# ------------------------------------------------------------------ a small kustomize


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these files: maps merge key by key, lists
    of named maps merge by name, other lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(i, dict) and "name" in i for i in [*base, *patch]):
        merged_list = list(base)
        index = {item["name"]: n for n, item in enumerate(base)}
        for item in patch:
            if item["name"] in index:
                merged_list[index[item["name"]]] = merge(base[index[item["name"]]], item)
            else:
                merged_list.append(item)
        return merged_list
    return patch


def key(obj: Object) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def build(folder: Path) -> dict[tuple[str, str], Object]:
    """The objects ``kubectl kustomize folder`` emits, by (kind, name)."""
    (kustomization,) = load_yaml(folder / "kustomization.yaml")
    objects: dict[tuple[str, str], Object] = {}
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        found = build(path).values() if path.is_dir() else load_yaml(path)
        for obj in found:
            assert key(obj) not in objects, f"{key(obj)} defined twice under {folder}"
            objects[key(obj)] = obj
    for patch in kustomization.get("patches", []):
        for obj in load_yaml(folder / patch["path"]):
            assert key(obj) in objects, f"{folder.name}: patch for missing {key(obj)}"
            objects[key(obj)] = merge(objects[key(obj)], obj)
    if "namespace" in kustomization:
        for obj in objects.values():
            if obj["kind"] != "Namespace":
                obj["metadata"] = {**obj["metadata"], "namespace": kustomization["namespace"]}
    return objects


SCALEOUT_OBJECTS = build(SCALEOUT)
POOL_OBJECTS = build(POOL)


def of_kind(objects: dict[tuple[str, str], Object], kind: str) -> list[Object]:
    return [obj for (k, _), obj in objects.items() if k == kind]


def pod_templates(objects: dict[tuple[str, str], Object]) -> list[Object]:
    return [o["spec"]["template"] for kind in WORKLOADS for o in of_kind(objects, kind)]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pods_selected(objects: dict[tuple[str, str], Object], selector: dict[str, str]) -> list[Object]:
    return [t for t in pod_templates(objects) if selects(selector, t["metadata"]["labels"])]


def workload(objects: dict[tuple[str, str], Object], kind: str, name: str) -> Object:
    return objects[(kind, name)]["spec"]["template"]["spec"]


def gateway_config(objects: dict[tuple[str, str], Object]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        objects[("ConfigMap", "loragate-config")]["data"]["loragate.yaml"]
    )
    return config


def validated(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    engine = config["engine"]
    if engine.get("api_key_env"):
        monkeypatch.setenv(engine["api_key_env"], "test-key")
    url_env = config.get("shared_store", {}).get("url_env")
    if url_env:
        monkeypatch.setenv(url_env, "postgresql://loragate:test@db:5432/loragate")
    return Settings.load(None, **config)


def flags(args: list[Any]) -> dict[str, str | None]:
    """``--name=value`` / ``--name value`` / ``--switch`` -> {name: value or None}."""
    assert all(isinstance(a, str) for a in args), f"a flag parsed as YAML, not a string: {args}"
    parsed: dict[str, str | None] = {}
    for n, arg in enumerate(args):
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            following = args[n + 1] if n + 1 < len(args) else "--"
            parsed[name] = value if eq else (None if following.startswith("--") else following)
    return parsed


# ------------------------------------------------------------------ Kubernetes


@pytest.mark.integration  # runs kubectl
@pytest.mark.parametrize("folder", [SCALEOUT, POOL], ids=lambda p: p.name)
def test_kubectl_kustomize_builds_the_same_objects(folder: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    built = {key(obj): obj for obj in yaml.safe_load_all(out) if obj}
    ours = build(folder)
    assert set(built) == set(ours)
    for name, obj in ours.items():
        assert built[name].get("data") == obj.get("data"), name
        assert built[name]["metadata"].get("namespace") == obj["metadata"].get("namespace")


def check_workload(obj: Object, objects: dict[tuple[str, str], Object]) -> None:
    """A Deployment or StatefulSet: its selector, volumes and probes resolve."""
    labels = obj["spec"]["template"]["metadata"]["labels"]
    assert selects(obj["spec"]["selector"]["matchLabels"], labels), key(obj)
    pod = obj["spec"]["template"]["spec"]
    mounts = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claimed = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
    assert mounts <= set(volumes) | claimed, key(obj)
    for volume in volumes.values():
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in objects, claim
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in objects
    for container in pod["containers"]:
        ports = {p["name"] for p in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            action = container.get(probe, {})
            port = (action.get("httpGet") or action.get("tcpSocket") or {}).get("port")
            assert port is None or port in ports, (key(obj), probe)


def check_selectors(objects: dict[tuple[str, str], Object]) -> None:
    """Services, PodDisruptionBudgets and ServiceMonitors select something that exists."""
    for service in of_kind(objects, "Service"):
        pods = pods_selected(objects, service["spec"]["selector"])
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        named = {p["name"] for t in pods for c in t["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named, (service["metadata"]["name"], port)
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        assert pods_selected(objects, pdb["spec"]["selector"]["matchLabels"]), pdb
    for monitor in of_kind(objects, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s for s in of_kind(objects, "Service") if selects(selector, s["metadata"]["labels"])
        ]
        assert services, monitor["metadata"]["name"]
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


@pytest.mark.parametrize("objects", [SCALEOUT_OBJECTS, POOL_OBJECTS], ids=["scaleout", "pool"])
def test_references_resolve(objects: dict[tuple[str, str], Object]) -> None:
    for kind in WORKLOADS:
        for obj in of_kind(objects, kind):
            check_workload(obj, objects)
    for obj in of_kind(objects, "StatefulSet"):
        service = objects[("Service", obj["spec"]["serviceName"])]
        assert service["spec"]["clusterIP"] == "None", "serviceName must be headless"
    check_selectors(objects)
    for obj in objects.values():
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "loragate", key(obj)


def test_gateway_config_points_at_the_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = SCALEOUT_OBJECTS
    settings = validated(gateway_config(objects), monkeypatch)
    engine = settings.engine
    assert isinstance(engine, RemoteEngineSettings)
    assert settings.tenancy().enabled and settings.server.host == "0.0.0.0"
    # dns_name is the headless Service of the replicas, port its API port.
    headless = objects[("Service", engine.dns_name or "")]
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(headless["spec"]["selector"], REPLICA)
    assert engine.port in {p["port"] for p in headless["spec"]["ports"] if p["name"] == "http"}
    # The replicas run with the flags the config repeats, and the key it reads.
    (vllm,) = [
        c
        for c in workload(objects, "StatefulSet", "loragate-vllm")["containers"]
        if c["name"] == "vllm"
    ]
    args = flags(vllm["args"])
    assert set(REQUIRED_FLAGS) <= set(args)
    for flag, field in MIRRORED_FLAGS.items():
        assert args[flag] == str(getattr(engine, field)), flag
    assert args["--port"] == str(engine.port)
    env = {e["name"]: e for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "1"
    gateway_pod = workload(objects, "Deployment", "loragate")
    (gateway,) = gateway_pod["containers"]
    gateway_env = {e["name"]: e for e in gateway["env"]}
    assert engine.api_key_env in gateway_env
    assert gateway_env[engine.api_key_env]["valueFrom"] == env["VLLM_API_KEY"]["valueFrom"]
    # Redis: the URL names the Redis Service and its port.
    assert settings.limits_store.kind == "redis"
    match = re.fullmatch(
        r"redis://([^:/]+):(\d+)/\d+", settings.limits_store.url.get_secret_value()
    )
    assert match, "limits_store.url"
    redis = objects[("Service", match.group(1))]
    assert int(match.group(2)) in {p["port"] for p in redis["spec"]["ports"]}
    assert pods_selected(objects, redis["spec"]["selector"])


def test_gateway_deployment_scales_out() -> None:
    deployment = SCALEOUT_OBJECTS[("Deployment", "loragate")]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    (container,) = pod["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "loragate-config"
    assert "loragate.yaml" in SCALEOUT_OBJECTS[("ConfigMap", "loragate-config")]["data"]
    assert container["args"][:3] == ["serve", "--config", "/etc/loragate/loragate.yaml"]


def test_replicas_read_the_gateways_adapters_at_the_same_path() -> None:
    objects = SCALEOUT_OBJECTS
    gateway_pod = workload(objects, "Deployment", "loragate")
    replica_pod = workload(objects, "StatefulSet", "loragate-vllm")

    def mounts(pod: Object, container: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """claim -> (mount path, mount), for the PVC mounts of ``container``."""
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        (c,) = [c for c in pod["containers"] if c["name"] == container]
        return {
            claims[m["name"]]: (m["mountPath"], m) for m in c["volumeMounts"] if m["name"] in claims
        }

    gateway, replica = mounts(gateway_pod, "gateway"), mounts(replica_pod, "vllm")
    shared = objects[("PersistentVolumeClaim", "loragate-shared")]
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]
    assert gateway["loragate-shared"][0] == replica["loragate-shared"][0]
    assert not gateway["loragate-shared"][1].get("readOnly")
    assert replica["loragate-shared"][1]["readOnly"] is True
    assert replica["loragate-models"][1]["readOnly"] is True
    # One registry folder for every gateway (its document in PostgreSQL), on the shared
    # volume: no pod sets its own.
    (container,) = gateway_pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "LORAGATE_REGISTRY__DATA_DIR" not in env and "LORAGATE_USAGE_DB" not in env
    config = gateway_config(objects)
    data_dir = PurePosixPath(config["registry"]["data_dir"])
    assert data_dir.is_relative_to(gateway["loragate-shared"][0])
    assert config["shared_store"]["kind"] == "postgres"
    # The replicas serve the model folder the gateway tokenizes with.
    (vllm,) = [c for c in replica_pod["containers"] if c["name"] == "vllm"]
    assert vllm["args"][0] == config["model"]["path"]
    assert flags(vllm["args"])["--served-model-name"] == config["model"]["name"]
    resources = vllm["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"


def test_only_gateways_reach_the_replicas_api_port() -> None:
    objects = SCALEOUT_OBJECTS
    policy = objects[("NetworkPolicy", "loragate-vllm")]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], REPLICA)
    assert pods_selected(objects, policy["podSelector"]["matchLabels"])
    assert policy["policyTypes"] == ["Ingress"]
    replica_pod = workload(objects, "StatefulSet", "loragate-vllm")
    ports = {p["name"]: p["containerPort"] for c in replica_pod["containers"] for p in c["ports"]}
    api = {"http", ports["http"]}
    reaching_api = [rule for rule in policy["ingress"] if {p["port"] for p in rule["ports"]} & api]
    assert reaching_api, "no rule for the API port"
    for rule in reaching_api:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "only pods of this namespace"
            assert selects(peer["podSelector"]["matchLabels"], GATEWAY)
            assert pods_selected(objects, peer["podSelector"]["matchLabels"])
    for rule in policy["ingress"]:
        assert rule.get("ports"), "every rule names its ports"
    # The metrics port serves GET /metrics only (the sidecar's nginx config).
    conf = objects[("ConfigMap", "loragate-vllm-metrics-proxy")]["data"]["metrics.conf"]
    assert f"listen {ports['metrics']};" in conf
    assert f"proxy_pass http://127.0.0.1:{ports['http']}/metrics;" in conf
    assert re.search(r"location / \{\s*return 404;", conf)
    redis = objects[("NetworkPolicy", "loragate-redis")]["spec"]
    (rule,) = redis["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [GATEWAY]


def test_gateways_share_registry_and_usage_through_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = SCALEOUT_OBJECTS
    settings = validated(gateway_config(objects), monkeypatch)
    assert settings.shared_store.kind == "postgres" and settings.shared_store.url_env
    (gateway,) = workload(objects, "Deployment", "loragate")["containers"]
    url = {e["name"]: e for e in gateway["env"]}[settings.shared_store.url_env]
    secret = url["valueFrom"]["secretKeyRef"]  # the URL holds a password: from a Secret
    assert secret["key"] == "url"
    postgres = objects[("StatefulSet", "loragate-postgres")]
    pod = postgres["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    password = {e["name"]: e for e in server["env"]}["POSTGRES_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == secret["name"]
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # durable, not the NFS volume
    data = [m for m in server["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert data and data[0]["mountPath"] == "/var/lib/postgresql/data"
    service = objects[("Service", postgres["spec"]["serviceName"])]
    assert pods_selected(objects, service["spec"]["selector"]) == [postgres["spec"]["template"]]
    assert {p["port"] for p in service["spec"]["ports"]} == {5432}
    guard = objects[("NetworkPolicy", "loragate-postgres")]["spec"]
    assert selects(guard["podSelector"]["matchLabels"], pod_labels(postgres))
    (rule,) = guard["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [GATEWAY]
    # Usage is in PostgreSQL too: no per-pod SQLite left behind.
    assert "usage" not in {
        v["name"] for v in workload(objects, "Deployment", "loragate")["volumes"]
    }


def pod_labels(obj: Object) -> dict[str, str]:
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def test_prometheus_rule_equals_alerts_file() -> None:
    alerts = load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"]
    assert SCALEOUT_OBJECTS[("PrometheusRule", "loragate")]["spec"]["groups"] == alerts


def test_inference_pool_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = POOL_OBJECTS
    (pool,) = of_kind(objects, "InferencePool")
    assert pool["apiVersion"].startswith("inference.networking.k8s.io/")
    assert selects(pool["spec"]["selector"]["matchLabels"], REPLICA)
    replica_pod = workload(objects, "StatefulSet", "loragate-vllm")
    ports = {p["containerPort"] for c in replica_pod["containers"] for p in c["ports"]}
    assert {p["number"] for p in pool["spec"]["targetPorts"]} <= ports
    assert pool["spec"]["endpointPickerRef"]["name"]
    (route,) = of_kind(objects, "HTTPRoute")
    (gateway,) = of_kind(objects, "Gateway")
    assert [r["name"] for r in route["spec"]["parentRefs"]] == [gateway["metadata"]["name"]]
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert [(b["kind"], b["name"]) for b in backends] == [
        ("InferencePool", pool["metadata"]["name"])
    ]
    # The gateways send to the pool as ONE replica; all else is the scale-out config.
    pool_config, config = gateway_config(objects), gateway_config(SCALEOUT_OBJECTS)
    engine = validated(pool_config, monkeypatch).engine
    assert isinstance(engine, RemoteEngineSettings)
    assert len(engine.replicas) == 1 and engine.dns_name is None
    assert engine.max_replicas_per_adapter == 1
    assert {k: v for k, v in pool_config.items() if k != "engine"} == {
        k: v for k, v in config.items() if k != "engine"
    }
    (listener,) = gateway["spec"]["listeners"]
    assert engine.replicas[0].url.endswith(f":{listener['port']}")
    # The pool's proxy is for the gateways alone.
    guard = objects[("NetworkPolicy", "loragate-pool")]["spec"]
    assert guard["podSelector"]["matchLabels"] == {
        "gateway.networking.k8s.io/gateway-name": gateway["metadata"]["name"]
    }
    assert [p["podSelector"]["matchLabels"] for r in guard["ingress"] for p in r["from"]] == [
        GATEWAY
    ]
    added = objects[("NetworkPolicy", "loragate-vllm-pool")]["spec"]
    assert selects(added["podSelector"]["matchLabels"], REPLICA)
    peers = [p["podSelector"]["matchLabels"] for r in added["ingress"] for p in r["from"]]
    assert guard["podSelector"]["matchLabels"] in peers
    epp = pool["spec"]["endpointPickerRef"]["name"]
    assert {"inferencepool": epp} in peers


# ------------------------------------------------------------------ Compose


def compose() -> dict[str, Any]:
    (doc,) = load_yaml(COMPOSE)
    return doc


def test_compose_references_resolve() -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            # ${VAR:-default} -> default, then source:target[:mode]
            source = re.sub(r"\$\{[^:}]+:-([^}]+)\}", r"\1", volume).split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in doc["volumes"], f"{name}: volume {source}"
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], f"{name}: secret {secret}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name}: depends on {dependency}"
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    images = {s["image"] for s in services.values() if "build" in s}
    for name, service in services.items():
        if service.get("image") in images:
            continue
        assert "image" in service, name


def test_compose_gateways_use_both_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    gateways = {n: s for n, s in services.items() if n.startswith("gateway-")}
    replicas = {n: s for n, s in services.items() if n.startswith("vllm-")}
    assert len(gateways) >= 2 and len(replicas) >= 2
    config_files = set()
    for service in gateways.values():
        (mount,) = [v for v in service["volumes"] if v.endswith(":/etc/loragate/loragate.yaml:ro")]
        config_files.add(mount.split(":")[0])
    (config_file,) = config_files
    config = load_yaml(DEPLOY / config_file)[0]
    settings = validated(config, monkeypatch)
    engine = settings.engine
    assert isinstance(engine, RemoteEngineSettings)
    urls = {r.url for r in engine.replicas}
    for name, service in replicas.items():
        args = flags(service["command"])
        assert f"http://{name}:{args['--port']}" in urls
        assert set(REQUIRED_FLAGS) <= set(args)
        for flag, field in MIRRORED_FLAGS.items():
            assert args[flag] == str(getattr(engine, field)), (name, flag)
        assert args["--served-model-name"] == settings.model.served_name
        assert args["--model"] == str(settings.model.path)
        assert service["entrypoint"] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
        assert service["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
        assert any(v.endswith(":/data:ro") for v in service["volumes"])
    binds = [s["environment"]["VLLM_CPU_OMP_THREADS_BIND"] for s in replicas.values()]
    assert len(set(binds)) == len(binds), "each replica needs its own cores"
    # One registry for both: its folder on the shared volume, its document in PostgreSQL.
    assert PurePosixPath(settings.registry.data_dir).is_relative_to("/data")
    for service in gateways.values():
        assert "LORAGATE_REGISTRY__DATA_DIR" not in service["environment"]
        (shared,) = [v for v in service["volumes"] if v.split(":")[1] == "/data"]
        assert not shared.endswith(":ro")
        assert "postgres" in service["depends_on"]
        url = service["environment"][settings.shared_store.url_env or ""]
        assert re.fullmatch(
            r"postgresql://loragate:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres:5432/loragate", url
        )
    postgres = services["postgres"]
    assert settings.shared_store.kind == "postgres"
    assert "ports" not in postgres, "only the gateways reach PostgreSQL"
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    match = re.fullmatch(r"redis://([^:/]+):6379/\d+", settings.limits_store.url.get_secret_value())
    assert settings.limits_store.kind == "redis" and match and match.group(1) in services
    # Only the engine, the shared stores and the folders differ from compose's config.
    plain = load_yaml(DEPLOY / "config" / "loragate.yaml")[0]
    differing = {"engine", "limits_store", "shared_store", "registry", "retrieval"}
    assert {k: v for k, v in config.items() if k not in differing} == {
        k: v for k, v in plain.items() if k not in differing
    }


def test_compose_load_balancer_and_prometheus_reach_everything() -> None:
    services = compose()["services"]
    gateways = sorted(n for n in services if n.startswith("gateway-"))
    replicas = sorted(n for n in services if n.startswith("vllm-"))
    (cfg_mount,) = services["lb"]["volumes"]
    haproxy = (DEPLOY / cfg_mount.split(":")[0]).read_text()
    assert re.search(r"http-check send meth GET uri /ready\b", haproxy)
    assert re.search(r"http-check expect status 200\b", haproxy)
    assert sorted(re.findall(r"^\s*server \S+ ([\w-]+):8000\b", haproxy, re.MULTILINE)) == gateways
    assert re.search(r"^\s*bind :8000$", haproxy, re.MULTILINE)
    assert "8000:8000" in services["lb"]["ports"]
    assert not any("ports" in services[n] for n in gateways + replicas), "only the lb is published"
    (prom_mount,) = [
        v
        for v in services["prometheus"]["volumes"]
        if v.endswith(":/etc/prometheus/prometheus.yml:ro")
    ]
    prometheus = load_yaml(DEPLOY / prom_mount.split(":")[0])[0]
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    targets = {
        job: {t for c in j["static_configs"] for t in c["targets"]} for job, j in jobs.items()
    }
    assert targets["loragate"] == {f"{n}:8000" for n in gateways}
    assert targets["vllm"] == {f"{n}:8000" for n in replicas}
    secret = jobs["loragate"]["bearer_token_file"].removeprefix("/run/secrets/")
    assert secret in services["prometheus"]["secrets"]
