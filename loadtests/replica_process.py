"""``ReplicaProcess``: one ``python -m vllm.entrypoints.openai.api_server`` on loopback.

Used by the remote-mode tests (``tests/support/remote_fixtures.py``) and the remote benchmarks
(``bench_remote``, ``bench_affinity``). Each replica runs in its own process group, with
LoRA and runtime adapter loading on, its engine's OpenMP threads bound to one core
(vLLM's automatic binding would put two engines on the same core), float32 (bf16 is
~4x slower on CPUs without native bf16, DESIGN.md).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench_serving import wait_ready
from loadtests.target import free_port

LOADED_LINE = re.compile(r"Loaded new LoRA adapter: name '([^']+)'")
"""What a replica logs for each successful ``/v1/load_lora_adapter``."""
SERVED_LINE = re.compile(r'"POST /v1/completions HTTP/1\.1" 200')
"""uvicorn's access-log line for a completion the replica answered."""


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``timeout``, a CI cancel) into ``SystemExit`` so that the caller's
    ``finally``/``ExitStack`` kills the replicas it started instead of orphaning them."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


@dataclass
class ReplicaProcess:
    """One vLLM OpenAI server. ``start`` returns at once; ``wait_ready`` waits for
    ``/health``. ``kill`` SIGKILLs its process group (the server and its engine core):
    it stands for a crash, and leaves nothing behind."""

    model: Path
    core: int
    log: Path
    port: int = 0
    served_model_name: str | None = None
    max_model_len: int = 512
    max_loras: int = 3
    max_cpu_loras: int | None = None
    max_lora_rank: int = 8
    kv_cache_bytes: int = 64 * 1024 * 1024
    extra_args: list[str] = field(default_factory=list)
    dtype: str = "float32"
    env: dict[str, str] = field(default_factory=dict)
    """Added to the replica's environment (e.g. vLLM's ``VLLM_PLUGINS``)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", self.dtype, "--max-model-len", str(self.max_model_len),
            "--enable-lora", "--max-loras", str(self.max_loras),
            "--max-lora-rank", str(self.max_lora_rank),
            "--kv-cache-memory-bytes", str(self.kv_cache_bytes),
            "--enforce-eager", "--enable-prompt-tokens-details", "--seed", "0",
            # As the deploy files start replicas (= the in-process engine's compact_json):
            # without it a weak model fills a constrained answer with blanks.
            "--structured-outputs-config",
            '{"backend": "xgrammar", "disable_any_whitespace": true}',
        ]  # fmt: skip
        if self.served_model_name:
            args += ["--served-model-name", self.served_model_name]
        if self.max_cpu_loras:
            args += ["--max-cpu-loras", str(self.max_cpu_loras)]
        return args + self.extra_args

    def start(self) -> None:
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
            "VLLM_CPU_OMP_THREADS_BIND": str(self.core),
            "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_OFFLINE": "1",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 600) -> None:
        if self.proc is None:
            raise RuntimeError("replica not started")
        wait_ready(self.url + "/health", self.proc, timeout, interval=0.5, log=self.log)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def adapter_loads(self) -> list[str]:
        """The adapter names this replica logged as loaded, in order (its own count of
        ``/v1/load_lora_adapter`` calls that succeeded)."""
        if not self.log.exists():
            return []
        return LOADED_LINE.findall(self.log.read_text(errors="replace"))

    def completions_served(self) -> int:
        """``/v1/completions`` calls answered 200 (needs the access log, vLLM's default)."""
        if not self.log.exists():
            return 0
        return len(SERVED_LINE.findall(self.log.read_text(errors="replace")))
