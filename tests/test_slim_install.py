"""The base install is the gateway alone: a gateway in remote mode (retrieval off)
starts, serves a chat completion and answers ``/ready`` without importing an ML
framework or the retrieval stack (they are extras, ``pyproject.toml``), and asking for
a part whose extra is missing names the extra instead of raising an ``ImportError``.

The first test runs the gateway in a fresh interpreter (``sys.modules`` of this one
holds torch already): its answer lists the heavy modules it imported, which must be
none. Importing ``torch`` at the top of any module the gateway loads turns it red.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.extras import ENGINE, RAG, MissingExtraError, require
from tests.support.engine_fixtures import free_port

pytestmark = pytest.mark.integration  # runs the CLI in subprocesses

REPO = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "vllm",
    "transformers",
    "peft",
    "gguf",
    "faiss",
    "onnxruntime",
    "sentence_transformers",
    "tiktoken",
    "Stemmer",
)
"""What the base install does not have: a gateway in remote mode with retrieval off
must not import any of it."""

PROBE = """
import asyncio, json, sys
import httpx
from gateway.app import create_app
from gateway.settings.keys import generate_key

from gateway.settings import Settings
key = generate_key()
settings = Settings.load(
    None,
    model={"path": sys.argv[1], "name": "bench-base"},
    engine={"kind": "remote", "replicas": [sys.argv[2]]},
    registry={"data_dir": sys.argv[3]},
    tenants={"t": {"keys": [{"id": key.key_id, "hash": key.hash}], "models": ["bench-base"]}},
)
app = create_app(settings)

async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            chat = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key.key}"},
                json={"model": "bench-base", "messages": [{"role": "user", "content": "Hi"}]},
            )
            ready = await client.get("/ready")
    heavy = [m for m in sys.argv[4].split(",") if m in sys.modules]
    print(json.dumps({"chat": chat.status_code, "ready": ready.status_code, "heavy": heavy}))

asyncio.run(main())
"""


def entry_point() -> str:
    """``module:function`` of the ``loragate`` script, as ``pyproject.toml`` names it."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return str(scripts["loragate"])


@pytest.fixture(scope="module")
def instant_replica() -> Iterator[str]:
    """``loadtests.instant_backend``: a replica that answers at once."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.instant_backend", "--port", str(port)], cwd=REPO
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the instant backend exited")
            subprocess.run(["sleep", "0.05"], check=True)
        yield url
    finally:
        proc.kill()
        proc.wait()


def run_probe(
    script: str, heavy: tuple[str, ...], base: Path, replica: str, tmp_path: Path
) -> dict[str, Any]:
    """``script`` in a fresh interpreter (model folder, replica URL, data folder, the
    modules it must not import); its last output line, parsed."""
    probe = subprocess.run(
        [sys.executable, "-c", script, str(base), replica, str(tmp_path / "data"), ",".join(heavy)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    answer: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return answer


def test_a_remote_gateway_serves_without_ml_frameworks(
    instant_replica: str, fake_kit: Any, tmp_path: Path
) -> None:
    """``fake_kit.base``: the test models' tiny Llama folder (config, weights, tokenizer)."""
    answer = run_probe(PROBE, HEAVY, fake_kit.base, instant_replica, tmp_path)
    assert answer == {"chat": 200, "ready": 200, "heavy": []}, answer


RAG_HEAVY = ("torch", "vllm", "transformers", "sentence_transformers", "peft", "gguf")
"""What the rag extra does not have: a remote gateway searching a collection with the
default embedder (dual) must not import any of it."""

RAG_PROBE = r"""
import asyncio, json, sys
import httpx
from gateway.app import create_app
from gateway.settings import Settings
from gateway.settings.keys import generate_key

model, replica, data, heavy_names = sys.argv[1:5]
key, admin = generate_key(), generate_key()
settings = Settings.load(
    None,
    model={"path": model, "name": "bench-base"},
    engine={"kind": "remote", "replicas": [replica]},
    registry={"data_dir": data},
    retrieval={"embedder": "dual", "preload": True},
    admin={"keys": [{"id": admin.key_id, "hash": admin.hash}]},
    tenants={
        "t": {
            "keys": [{"id": key.key_id, "hash": key.hash}],
            "models": ["bench-base"],
            "collections": ["manual"],
        }
    },
)
app = create_app(settings)
MANUAL = (
    "# Router manual\n\n## Resetting the password\n\nHold the reset button on the back "
    "for ten seconds: the admin password returns to the factory default.\n\n"
    "## Firmware\n\nUpload new firmware on the maintenance page.\n"
)

async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            ingest = await client.post(
                "/admin/collections/manual/documents",
                headers={"Authorization": f"Bearer {admin.key}"},
                files={"file": ("manual.md", MANUAL.encode(), "text/markdown")},
            )
            search = await client.post(
                "/v1/retrieval/search",
                headers={"Authorization": f"Bearer {key.key}"},
                json={"collection": "manual", "query": "How do I reset the admin password?",
                      "mode": "dense", "top_k": 1},
            )
            chat = await client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key.key}"},
                json={"model": "bench-base", "messages": [{"role": "user", "content": "Hi"}]},
            )
            ready = await client.get("/ready")
    heavy = [m for m in heavy_names.split(",") if m in sys.modules]
    hits = search.json().get("data", []) if search.status_code == 200 else search.text
    print(json.dumps({
        "ingest": ingest.status_code, "search": search.status_code, "chat": chat.status_code,
        "ready": ready.status_code, "heavy": heavy,
        "top": hits[0]["heading_path"] if isinstance(hits, list) and hits else hits,
    }))

asyncio.run(main())
"""


def test_a_remote_gateway_searches_a_collection_without_torch(
    instant_replica: str, fake_kit: Any, tmp_path: Path
) -> None:
    """The rag extra's default embedder (dual: int8 MiniLM on ONNX Runtime, USE in numpy)
    ingests and searches a collection in a fresh interpreter that never imports torch,
    transformers, sentence-transformers or vLLM (writing the int8 graph without them:
    ``tests/test_bert_onnx.py``). About 10 s on 2 busy cores: both embedders load."""
    answer = run_probe(RAG_PROBE, RAG_HEAVY, fake_kit.base, instant_replica, tmp_path)
    assert answer["heavy"] == [], answer
    assert (answer["ingest"], answer["search"], answer["chat"], answer["ready"]) == (
        200,
        200,
        200,
        200,
    ), answer
    assert answer["top"] == ["Router manual", "Resetting the password"], answer


def test_the_float_embedder_names_its_extra_when_sentence_transformers_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from retrieval.embedding import MissingEmbedderPackageError, embedder_from_name

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)

    with pytest.raises(MissingEmbedderPackageError) as missing:
        embedder_from_name("minilm")

    assert "pip install 'loragate[rag,rag-torch]'" in str(missing.value)


def run_cli(args: list[str], blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``loragate ARGS`` in a fresh interpreter where the ``blocked`` modules cannot be
    found (as in an install without their extra)."""
    module, _, function = entry_point().partition(":")
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        f"from {module} import {function}\n"
        f"sys.exit({function}(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_serve_names_the_engine_extra_when_vllm_is_missing(tokenizer_dir: Path) -> None:
    done = run_cli(["serve", "--model", str(tokenizer_dir)], blocked=("vllm",))

    assert done.returncode == 2, done.stderr
    assert "pip install 'loragate[cpu]'" in done.stderr
    assert "'loragate[gpu]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_names_the_rag_extra_when_collections_load_at_start(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "loragate.yaml"
    config.write_text(
        json.dumps(
            {
                "model": {"path": str(tokenizer_dir), "name": "m"},
                "engine": {"kind": "remote", "replicas": ["http://127.0.0.1:9"]},
                "registry": {"data_dir": str(tmp_path / "data")},
                "retrieval": {"preload": True},
            }
        )
    )

    done = run_cli(["serve", "--config", str(config)], blocked=("faiss",))

    assert done.returncode == 2, done.stderr
    assert "pip install 'loragate[rag]'" in done.stderr
    assert "missing: faiss" in done.stderr


def test_serve_names_rag_torch_when_the_float_embedder_loads_at_start(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "loragate.yaml"
    config.write_text(
        json.dumps(
            {
                "model": {"path": str(tokenizer_dir), "name": "m"},
                "engine": {"kind": "remote", "replicas": ["http://127.0.0.1:9"]},
                "registry": {"data_dir": str(tmp_path / "data")},
                "retrieval": {"preload": True, "embedder": "minilm"},
            }
        )
    )

    done = run_cli(["serve", "--config", str(config)], blocked=("sentence_transformers",))

    assert done.returncode == 2, done.stderr
    assert "pip install 'loragate[rag-torch]'" in done.stderr
    assert "missing: sentence_transformers" in done.stderr


def test_rag_commands_name_the_rag_extra(tmp_path: Path) -> None:
    done = run_cli(["rag", "list", "--data-dir", str(tmp_path)], blocked=("tiktoken",))

    assert done.returncode == 2, done.stderr
    assert "pip install 'loragate[rag]'" in done.stderr
    assert "missing: tiktoken" in done.stderr


def test_require_passes_when_installed_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require(RAG)  # the dev install has it
    monkeypatch.setitem(sys.modules, "vllm", None)

    with pytest.raises(MissingExtraError) as missing:
        require(ENGINE)

    assert missing.value.missing == ["vllm"]
    assert "the in-process vLLM engine" in str(missing.value)
