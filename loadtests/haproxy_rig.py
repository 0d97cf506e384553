"""Two (or more) real ``loragate serve`` gateways (remote mode) behind a real HAProxy on
loopback, in front of one paced fake replica: the rolling-restart scenario's rig.

HAProxy health-checks each gateway's ``/ready`` (503 from the moment a gateway drains)
every 250 ms, and sends a request again to another gateway when it met a closed port,
an empty answer or a 503: such a request never started, so that is safe. Its stats page
(``/stats;csv`` on a port of its own) tells the orchestrator how many requests went
through, which gateways HAProxy considers UP and how many streams each one serves;
each gateway's own ``/metrics`` (open on this loopback rig) tells how many of its answers
are mid-body.

The gateways' config is the paced gateway's (``loadtests.paced_target``: a key per
scenario tenant, the scenario's ``paced.gateway`` sections merged in), with a registry
folder and a fixed port of each gateway's own: a restarted gateway comes back on the
same port, the way a rolling deploy replaces a pod behind a service.

Blocking; the processes it starts are its own and are stopped by :meth:`Rig.stop`.
Not thread-safe: one orchestrator drives it.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from loadtests.bench_serving import wait_ready
from loadtests.paced_target import gateway_config, start_paced_replica
from loadtests.scenario import Scenario
from loadtests.target import free_port

HAPROXY_CFG = """\
global
    maxconn 2000
    # One line per request in haproxy.log (with its termination state: SD = the
    # server closed mid-answer), next to HAProxy's own messages.
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    # A check may be slow on a busy machine (2 cores shared): wait for its answer.
    timeout check 5s
    # A request that met a closed port or a draining gateway's 503 goes to the other
    # one: it never started, so it is safe to send again.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
    option http-buffer-request
frontend loragate
    bind 127.0.0.1:{port}
    default_backend gateways
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /ready
    http-check expect status 200
    # Two failed checks take a gateway out: one slow check on a starved machine does not
    # leave HAProxy with no server. Meanwhile a draining gateway's 503s are sent again.
    default-server check inter 250ms fall 2 rise 2
{servers}
"""


@dataclass
class GatewayProcess:
    """One ``loragate serve`` on a fixed loopback port (kept across restarts)."""

    name: str
    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        wait_ready(self.url + "/ready", self.process, timeout, interval=0.1, log=self.log)

    def stop(self, sig: signal.Signals, timeout: float) -> int:
        """Send ``sig`` (SIGTERM: drain; SIGKILL: the abrupt case) and wait for the exit;
        returns the exit code (negative: killed by that signal)."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def streams_mid_body(self) -> int:
        """Answers this gateway has begun and not finished, from its own ``/metrics``:
        first tokens observed less requests done with a 2xx status (a stream's status is
        sent with its first token, and it is counted done when its body ends)."""
        text = httpx.get(self.url + "/metrics", timeout=5, trust_env=False).text
        return mid_body(text)


def mid_body(metrics_text: str) -> int:
    """``loragate_time_to_first_token_seconds_count`` less the 2xx
    ``loragate_requests_total`` of a gateway's Prometheus exposition."""
    begun = done = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "loragate_time_to_first_token_seconds_count":
                begun += sample.value
            elif sample.name == "loragate_requests_total":
                done += sample.value if sample.labels.get("status_class") == "2xx" else 0
    return max(0, round(begun - done))


@dataclass(frozen=True)
class ServerStats:
    """One gateway's row of HAProxy's stats: its check status and the streams it serves
    now (its bytes counters are not used: HAProxy updates them when a stream wakes up,
    which forwarding a body may not do)."""

    status: str
    current: int


def parse_stats(text: str) -> tuple[int, dict[str, ServerStats]]:
    """HAProxy's ``/stats;csv``: requests the ``loragate`` frontend received, and the
    ``gateways`` backend's servers by name."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stats CSV")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    requests = 0
    servers: dict[str, ServerStats] = {}
    for row in rows:
        if row["pxname"] == "loragate" and row["svname"] == "FRONTEND":
            requests = int(row["req_tot"] or 0)
        elif row["pxname"] == "gateways" and row["svname"] not in ("FRONTEND", "BACKEND"):
            servers[row["svname"]] = ServerStats(row["status"], int(row["scur"] or 0))
    return requests, servers


@dataclass
class Rig:
    """The replica, the gateways and HAProxy, all on loopback."""

    workdir: Path
    model_dir: Path
    scenario: Scenario
    keys: dict[str, dict[str, str]]
    ready_timeout: float = 900
    gateways: list[GatewayProcess] = field(default_factory=list)
    port: int = 0
    stats_port: int = 0
    _others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, count: int = 2) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        paced = self.scenario.paced
        if paced is None:
            raise ValueError("the rolling restart needs the scenario's `paced:` section")
        replica, replica_url = start_paced_replica(paced)
        self._others.append(replica)
        wait_ready(replica_url + "/health", replica, 120, interval=0.1)
        for i in range(count):
            config = gateway_config(
                self.scenario, self.keys, self.model_dir, self.workdir, replica_url
            )
            config["registry"] = {"data_dir": str(self.workdir / f"registry-{i}")}
            port = free_port()
            config["server"] = {**config["server"], "port": port}
            # loopback only: the orchestrator reads each gateway's streams from /metrics
            config["metrics"] = {"require_admin": False}
            path = self.workdir / f"gateway-{i}.yaml"
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
            log_path = self.workdir / f"gateway-{i}.log"
            self.gateways.append(GatewayProcess(f"g{i}", path, port, log_path))
        for g in self.gateways:
            g.start()
        for g in self.gateways:
            g.wait_ready(self.ready_timeout)
        self.port, self.stats_port = free_port(), free_port()
        servers = "\n".join(f"    server {g.name} 127.0.0.1:{g.port}" for g in self.gateways)
        cfg = self.workdir / "haproxy.cfg"
        text = HAPROXY_CFG.format(port=self.port, stats_port=self.stats_port, servers=servers)
        cfg.write_text(text, encoding="utf-8")
        with (self.workdir / "haproxy.log").open("ab") as log:
            proxy = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=log, stderr=log)
        self._others.append(proxy)
        wait_ready(self.url + "/ready", proxy, 30, interval=0.1)
        self.wait_up([g.name for g in self.gateways], 30)

    def stats(self) -> tuple[int, dict[str, ServerStats]]:
        """HAProxy's request count and per-gateway stats, now."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        return parse_stats(httpx.get(url, timeout=5, trust_env=False).text)

    def wait_up(self, names: list[str], timeout: float) -> None:
        """Until HAProxy's checks say every gateway in ``names`` is UP (its ``rise``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            servers = self.stats()[1]
            if all(servers[n].status.startswith("UP") for n in names):
                return
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy did not see {names} UP within {timeout:.0f} s")

    def stop(self) -> None:
        for g in self.gateways:
            g.kill()
        for p in reversed(self._others):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
