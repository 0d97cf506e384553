"""Where an adapter's first fetch spends its time before the engine sees it.

The gateway's cold path from a tenant's S3 source, phase by phase, outside the engine
(``bench_fleet`` measures the whole, engine load included, as the gateway's
``loragate_adapter_fetch_seconds``): random adapters like ``bench_fleet``'s (ranks 8-16,
q_proj and v_proj, bf16) on a moto S3 server in a child process, then for each one, one
at a time:

- ``list``: ``S3Namespace.lookup`` (one ``ListObjectsV2``);
- ``get``: ``S3AdapterSource.materialize`` into a scratch folder (one ``GetObject`` per file);
- ``register``: ``AdapterRegistry.register`` of that downloaded folder (listing checks,
  the staged copy with its sha256, safetensors validation, commit into the data folder);
- ``fetch+register``: ``register`` straight from the S3 source, as the gateway calls it.

    python -m loadtests.profile_fleet_fetch [--adapters 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from adapters.base_model import BaseModelSpec
from adapters.limits import AdapterLimits
from adapters.namespace_sources import AdapterSourceSpec, S3Namespace
from adapters.registry import AdapterRegistry
from adapters.sources import LocalDirectorySource
from adapters.tooling.random_lora import write_random_fleet
from loadtests.bench_cold_start import cpu_name
from loadtests.bench_fleet import BUCKET, PREFIX, S3_ENV, start_s3, stop, upload
from loadtests.bench_serving import MODEL_ID

PHASES = ("list", "get", "register", "fetch+register")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--adapters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from loadtests.bench_responses import demo_base

    base = demo_base()
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    with tempfile.TemporaryDirectory(prefix="profile-fleet-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        fleet = write_random_fleet(base, work / "fleet", args.adapters, seed=args.seed)
        proc, endpoint = start_s3(work / "s3.log")
        stack.callback(stop, proc)
        size = upload(endpoint, work / "fleet", list(fleet))
        spec = AdapterSourceSpec.model_validate(
            {
                "kind": "s3",
                "endpoint": endpoint,
                "bucket": BUCKET,
                "prefix": PREFIX,
                "access_key_env": "BENCH_S3_KEY",
                "secret_key_env": "BENCH_S3_SECRET",
            }
        )
        namespace = S3Namespace(spec, {**os.environ, **S3_ENV})
        registry = AdapterRegistry.open(
            work / "registry",
            BaseModelSpec.from_directory(base, name=MODEL_ID),
            AdapterLimits(max_lora_rank=16),
        )
        stack.callback(registry.close)
        limits = AdapterLimits(max_lora_rank=16)
        for name in fleet:
            started = time.perf_counter()
            source = namespace.lookup(name)
            assert source is not None
            listed = time.perf_counter()
            scratch = Path(tempfile.mkdtemp(dir=work))
            folder = source.materialize(scratch, limits)
            got = time.perf_counter()
            registry.register(f"{name}-local", LocalDirectorySource(folder, [work]))
            registered = time.perf_counter()
            registry.register(name, namespace.lookup(name) or source)
            whole = time.perf_counter()
            times["list"].append(listed - started)
            times["get"].append(got - listed)
            times["register"].append(registered - got)
            times["fetch+register"].append(whole - registered)
    print(
        "| phase | p50 ms | max ms |\n|---|---:|---:|\n"
        + "\n".join(
            f"| {p} | {statistics.median(v) * 1000:.1f} | {max(v) * 1000:.1f} |"
            for p, v in times.items()
        )
    )
    print(
        f"\n# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {cpu_name()}, "
        f"{os.cpu_count()} cores; {args.adapters} adapters, {size / 2**20 / len(fleet):.2f} MiB "
        f"each on average; load average (1 min) {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
