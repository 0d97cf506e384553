"""``--start paced``: a real ``loragate serve`` (remote mode) in front of a paced fake
replica, with a key per scenario tenant, for the reliability scenarios.

The replica answers every request in ``tokens x token_delay_s`` whatever the load, so
the gateway's ``admission.max_concurrency`` is the engine's capacity: fairness,
overload shedding and drain are the gateway's doing, measured without a model's noise.
While it runs, the gateway's resident memory is sampled once a second
(``memory.csv``: seconds, RSS MiB) for the report's "memory stays flat".
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from gateway.settings.keys import generate_key, hash_secret, parse_key
from loadtests.scenario import PacedTarget, Scenario
from loadtests.target import ServerProcess, free_port

BASE_NAME = "paced-base"
MEMORY_FILE = "memory.csv"


def export_keys(scenario_path: Path) -> dict[str, dict[str, str]]:
    """A key per tenant naming ``api_key_env`` (made unless the variable is set), put in
    the environment; returns each tenant's ``{id, hash}`` for the gateway's config."""
    raw = yaml.safe_load(scenario_path.read_text(encoding="utf-8")) or {}
    entries: dict[str, dict[str, str]] = {}
    for tenant in raw.get("tenants") or []:
        var = tenant.get("api_key_env")
        if not var:
            continue
        if not os.environ.get(var):
            os.environ[var] = generate_key().key
        parsed = parse_key(os.environ[var])
        if parsed is None:
            raise ValueError(f"{var} does not hold a loragate key (lg-<id>-<secret>)")
        key_id, secret = parsed
        entries[tenant["name"]] = {"id": key_id, "hash": hash_secret(secret)}
    return entries


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def gateway_config(
    scenario: Scenario, keys: dict[str, dict[str, str]], model_dir: Path, out: Path, replica: str
) -> dict[str, Any]:
    tenants = {
        name: {"keys": [key], "models": ["*"], "max_in_flight": 1000} for name, key in keys.items()
    }
    config: dict[str, Any] = {
        "model": {"path": str(model_dir), "name": BASE_NAME},
        "registry": {"data_dir": str(out / "paced-registry")},
        "engine": {"kind": "remote", "replicas": [replica], "health_interval": 1},
        "server": {"host": "127.0.0.1", "log_level": "warning"},
        "tenants": tenants,
    }
    assert scenario.paced is not None
    return _merged(config, scenario.paced.gateway)


def _sample_memory(pid: int, path: Path, stop: threading.Event) -> None:
    started = time.monotonic()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("t_s", "rss_mib"))
        while not stop.wait(1.0):
            try:
                rss = psutil.Process(pid).memory_info().rss / 2**20
            except psutil.Error:
                return
            writer.writerow((round(time.monotonic() - started, 1), round(rss, 1)))
            handle.flush()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the paced replica exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the paced replica did not answer {url}")


def start_paced_replica(paced: PacedTarget) -> tuple[subprocess.Popen[bytes], str]:
    """A ``loadtests.paced_replica`` process on a free loopback port, and its base URL
    (started, not yet answering: wait on ``/health``)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "loadtests.paced_replica", "--port", str(port)),
            *("--token-delay", str(paced.token_delay_s), "--tokens", str(paced.tokens)),
            *("--first-delay", str(paced.first_token_s)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


@contextmanager
def paced_gateway(
    scenario: Scenario,
    keys: dict[str, dict[str, str]],
    model_dir: Path,
    out: Path,
    ready_timeout_s: float,
) -> Iterator[str]:
    """The gateway's URL while it and its replica run."""
    paced = scenario.paced
    if paced is None:
        raise ValueError("--start paced needs the scenario's `paced:` section")
    replica, replica_url = start_paced_replica(paced)
    try:
        _wait_healthy(f"{replica_url}/health", replica, ready_timeout_s)
        config = gateway_config(scenario, keys, model_dir, out, replica_url)
        path = out / "paced-gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        loragate = str(Path(sys.executable).with_name("loragate"))
        server = ServerProcess(
            [loragate, "serve", "--config", str(path), "--port", "{port}"],
            port=free_port(),
            ready_path="/ready",
            log_path=out / "server.log",
            ready_timeout_s=ready_timeout_s,
        )
        with server as url:
            stop = threading.Event()
            process = server.process  # the gateway's pid, for its memory
            sampler = threading.Thread(
                target=_sample_memory,
                args=(process.pid if process else 0, out / MEMORY_FILE, stop),
                daemon=True,
            )
            sampler.start()
            try:
                yield url
            finally:
                stop.set()
                sampler.join(5)
    finally:
        replica.terminate()
        replica.wait(10)
