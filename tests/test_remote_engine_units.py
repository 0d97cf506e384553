"""``engine.kind: remote`` against fake vLLM replicas: field mapping, placement, faults.

Each fake replica is a small Starlette app mimicking vLLM's OpenAI server (streamed
/v1/completions with token ids and usage, runtime LoRA load/unload, /v1/models,
/health) with failure injection. They are served by uvicorn on loopback, because
httpx's ``ASGITransport`` buffers a whole response: it can neither stream nor show the
app a client that hangs up, and both are what these tests are about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.engine.interface import (
    AdapterRef,
    Engine,
    GenerationOutput,
    GenerationParams,
    StructuredOutput,
)
from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.placement import BoundedLoad, ranking
from gateway.engine.remote.startup import build_remote_engine, discover_base, start_remote_engine
from gateway.errors import EngineFailureError, EngineUnavailableError, InvalidRequestError
from gateway.settings import RemoteEngineSettings, Settings
from tests.conftest import ADMIN_KEY, FakeKit, fake_settings, run_fake_gateway
from tests.support.engine_fixtures import free_port
from tests.support.fake_replica import (
    BASE,
    MAX_LEN,
    FakeReplica,
    ServedReplica,
    adapter,
    collect,
    gen_request,
    remote_settings,
)


@pytest.fixture(scope="module")
def served() -> Iterator[list[FakeReplica]]:
    replicas = [ServedReplica() for _ in range(3)]
    yield [r.fake for r in replicas]
    for r in replicas:
        r.stop()


@pytest.fixture
def fakes(served: list[FakeReplica]) -> list[FakeReplica]:
    for fake in served:
        fake.reset()
    return served


@pytest.fixture
async def engine(fakes: list[FakeReplica]) -> AsyncIterator[RemoteEngine]:
    settings = remote_settings(fakes)
    remote = build_remote_engine(settings)
    await discover_base(remote, settings)
    yield remote
    await remote.shutdown()


def served_by(fakes: list[FakeReplica]) -> list[int]:
    return [len(f.bodies) for f in fakes]


# ------------------------------------------------------------------- mapping


async def test_every_field_reaches_the_replica(engine: RemoteEngine, fakes: list[FakeReplica]):
    params = GenerationParams(
        max_tokens=3,
        n=2,
        temperature=0.7,
        top_p=0.9,
        stop=("END", "STOP"),
        seed=42,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logprobs=2,
        structured_output=StructuredOutput("json_schema", {"type": "object"}),
        top_k=5,
        min_p=0.05,
        repetition_penalty=1.1,
        min_tokens=1,
        ignore_eos=True,
    )
    await collect(engine, gen_request(params, lora=adapter(), salt="ab" * 16))
    [body] = [b for f in fakes for b in f.bodies]
    assert body == {
        "model": "pirate@v1",
        "prompt": [1, 2, 3],
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "n": 2,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 3,
        "stop": ["END", "STOP"],
        "seed": 42,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logprobs": 2,
        "top_k": 5,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "min_tokens": 1,
        "ignore_eos": True,
        "add_special_tokens": False,
        "request_id": "req-1",
        "cache_salt": "ab" * 16,
        "structured_outputs": {"json": {"type": "object"}},
    }


async def test_json_object_and_base_model_name(engine: RemoteEngine, fakes: list[FakeReplica]):
    params = GenerationParams(max_tokens=2, structured_output=StructuredOutput("json_object"))
    await collect(engine, gen_request(params))
    [body] = [b for f in fakes for b in f.bodies]
    assert body["model"] == BASE
    assert body["structured_outputs"] == {"json_object": True}
    assert "cache_salt" not in body


async def test_stream_becomes_token_deltas(engine: RemoteEngine):
    outs = await collect(engine, gen_request(GenerationParams(max_tokens=3, logprobs=1)))
    choices = [c for o in outs for c in o.choices]
    assert [c.token_ids for c in choices] == [(1000,), (1001,), (1002,)]
    assert [c.finish_reason for c in choices] == [None, None, "length"]
    assert "".join(c.text for c in choices) == "fake-base:0:0 fake-base:0:1 fake-base:0:2 "
    # The final output carries the prefix-cache hits from the usage event.
    assert [o.cached_tokens for o in outs] == [0, 0, 3]
    first = choices[0].logprobs
    assert first is not None and first[0].logprob == -0.5
    assert first[0].top == (("fake-base:0:0 ", -0.5),)


async def test_greedy_n_is_one_generation_copied(engine: RemoteEngine, fakes: list[FakeReplica]):
    outs = await collect(engine, gen_request(GenerationParams(max_tokens=2, n=3, temperature=0)))
    [body] = [b for f in fakes for b in f.bodies]
    assert body["n"] == 1
    last = outs[-1].choices
    assert [c.index for c in last] == [0, 1, 2]
    assert {c.token_ids for c in last} == {(1001,)}


async def test_upstream_400_is_an_invalid_request_whose_detail_goes_to_the_log_only(
    engine: RemoteEngine, caplog: pytest.LogCaptureFixture
):
    with pytest.raises(InvalidRequestError) as caught:
        await collect(engine, gen_request(GenerationParams(max_tokens=5000)))
    assert caught.value.message == "The inference server refused the request."
    assert "max_tokens is too large" in caplog.text


# ----------------------------------------------------------------- placement


def test_rendezvous_moves_only_the_adapters_of_a_leaving_replica():
    replicas = [f"http://r{i}:8000" for i in range(4)]
    keys = [f"adapter{i}@v1" for i in range(200)]
    before = {k: ranking(k, replicas)[0] for k in keys}
    after = {k: ranking(k, replicas[:3])[0] for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == replicas[3]}
    assert 30 < len(moved) < 70  # about a quarter


def test_bounded_load_spills_in_ranking_order_and_stops_at_the_cap():
    replicas = ["a", "b", "c"]
    order = ranking("x@1", replicas)
    rule = BoundedLoad(max_replicas=2, spill_threshold=2, balance_factor=100)
    load = dict.fromkeys(replicas, 0)
    picks = []
    for _ in range(7):
        pick = rule.for_adapter("x@1", replicas, load.__getitem__, load.__getitem__)
        assert pick is not None
        load[pick] += 1
        picks.append(pick)
    assert picks[:4] == [order[0], order[0], order[1], order[1]]
    assert set(picks) == set(order[:2])  # never the third
    assert load[order[0]] + load[order[1]] == 7


def test_a_home_replica_past_the_balance_bound_spills_to_the_next():
    """Hashing can home the popular adapters on one replica: once it holds more than
    balance_factor x the average (and at least balance_floor), an adapter's new request
    goes to its next replica; below the floor every request stays home."""
    replicas = ["a", "b"]
    key = "x@1"
    home, other = ranking(key, replicas)
    rule = BoundedLoad(max_replicas=2, spill_threshold=8, balance_factor=1.25, balance_floor=0)
    mine = dict.fromkeys(replicas, 0)
    load = dict.fromkeys(replicas, 0)
    assert rule.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == home
    load[home] = 5  # other adapters' requests, all homed there too
    assert rule.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == other
    load[other] = 4  # bound ceil(1.25 x 10 / 2) = 7: home is under it again
    assert rule.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == home
    only_locality = BoundedLoad(max_replicas=2, spill_threshold=8, balance_factor=100)
    load = {home: 7, other: 0}
    assert only_locality.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == home
    floored = BoundedLoad(max_replicas=2, spill_threshold=8, balance_factor=1.25)
    assert floored.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == home
    load = {home: 8, other: 0}  # busy now: past the floor and the bound
    assert floored.for_adapter(key, replicas, mine.__getitem__, load.__getitem__) == other


async def test_adapter_requests_stay_on_the_home_replica(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    lora = adapter()
    for _ in range(4):
        await collect(engine, gen_request(lora=lora))
    home = ranking("pirate@v1", sorted(f.url for f in fakes))[0]
    assert [len(f.bodies) for f in fakes] == [4 if f.url == home else 0 for f in fakes]
    assert [f.load_calls for f in fakes] == [["pirate@v1"] if f.url == home else [] for f in fakes]


async def test_busy_adapter_spreads_to_at_most_two_replicas(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    for fake in fakes:
        fake.token_delay = 0.05
    lora = adapter()
    await asyncio.gather(*(collect(engine, gen_request(lora=lora)) for _ in range(8)))
    order = ranking("pirate@v1", sorted(f.url for f in fakes))
    by_url = {f.url: len(f.bodies) for f in fakes}
    assert by_url[order[2]] == 0
    assert by_url[order[0]] >= 2 and by_url[order[1]] >= 2
    assert sum(len(f.load_calls) for f in fakes) == 2  # once per replica it reached


async def test_base_requests_go_to_the_least_loaded_replica(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    for fake in fakes:
        fake.token_delay = 0.05
    await asyncio.gather(*(collect(engine, gen_request()) for _ in range(6)))
    assert served_by(fakes) == [2, 2, 2]


# -------------------------------------------------------------------- faults


def home_fake(fakes: list[FakeReplica], name: str = "pirate@v1") -> FakeReplica:
    home = ranking(name, sorted(f.url for f in fakes))[0]
    return next(f for f in fakes if f.url == home)


async def test_failure_before_the_first_token_is_retried_elsewhere(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    home = home_fake(fakes)
    home.fail_before_first = 500
    outs = await collect(engine, gen_request(lora=adapter()))
    assert outs[-1].choices[0].finish_reason == "length"
    assert len(home.bodies) == 1 and sum(served_by(fakes)) == 2


async def test_two_failures_before_the_first_token_are_unavailable(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    for fake in fakes:
        fake.fail_before_first = 503
    with pytest.raises(EngineUnavailableError):
        await collect(engine, gen_request())
    assert sum(served_by(fakes)) == 2  # one retry, not more


async def test_failure_after_the_first_token_raises(engine: RemoteEngine, fakes: list[FakeReplica]):
    home = home_fake(fakes)
    home.error_event_after = 2
    outs: list[GenerationOutput] = []
    with pytest.raises(EngineFailureError):
        async for out in engine.generate(gen_request(lora=adapter())):
            outs.append(out)
    assert len(outs) == 2
    assert sum(served_by(fakes)) == 1  # no retry once tokens went out


async def test_first_token_deadline(fakes: list[FakeReplica]):
    for fake in fakes:
        fake.first_delay = 2.0
    settings = remote_settings(fakes, first_token_timeout=0.3)
    remote = build_remote_engine(settings)
    await discover_base(remote, settings)
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError):
        await collect(remote, gen_request())
    assert time.monotonic() - started < 1.5
    assert len(remote.pool.healthy()) == 3  # slow is not down
    await remote.shutdown()


async def test_closing_the_stream_closes_the_upstream_request(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    for fake in fakes:
        fake.token_delay = 0.2
        fake.tokens = 50
    stream = engine.generate(gen_request(GenerationParams(max_tokens=50)))
    await anext(stream)
    assert sum(f.open_streams for f in fakes) == 1
    await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if sum(f.disconnected for f in fakes) == 1:
            break
        await asyncio.sleep(0.02)
    assert sum(f.disconnected for f in fakes) == 1
    assert engine.figures().running == 0


async def test_failing_replica_is_ejected_and_rejoins(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    fakes[0].down = True
    await engine.pool.refresh()
    assert sorted(r.url for r in engine.pool.healthy()) == sorted(f.url for f in fakes[1:])
    for _ in range(3):
        await collect(engine, gen_request())
    assert len(fakes[0].bodies) == 0
    for fake in fakes:
        fake.down = True
    await engine.pool.refresh()
    with pytest.raises(EngineUnavailableError):
        await engine.check_health()
    with pytest.raises(EngineUnavailableError):
        await collect(engine, gen_request())
    for fake in fakes:
        fake.down = False
    await engine.pool.refresh()
    await engine.check_health()
    assert len(engine.pool.healthy()) == 3


async def test_restarted_replica_is_detected_and_adapters_reload(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    lora = adapter()
    await collect(engine, gen_request(lora=lora))
    home = home_fake(fakes)
    assert (await engine.residency()).loaded == {7}
    home.restart()
    await engine.pool.refresh()
    assert (await engine.residency()).loaded == frozenset()
    await collect(engine, gen_request(lora=lora))
    assert home.load_calls == ["pirate@v1", "pirate@v1"]


async def test_restart_between_probes_reloads_on_the_404(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    lora = adapter()
    await collect(engine, gen_request(lora=lora))
    home = home_fake(fakes)
    home.restart()
    outs = await collect(engine, gen_request(lora=lora))
    assert outs[-1].choices[0].finish_reason == "length"
    assert home.load_calls == ["pirate@v1", "pirate@v1"]
    assert len(home.bodies) == 3  # served, refused (404), served again


# ------------------------------------------------------------------ adapters


async def test_load_pin_unload_and_residency(engine: RemoteEngine, fakes: list[FakeReplica]):
    lora = adapter()
    home = home_fake(fakes)
    assert await engine.load(lora) is True
    assert await engine.load(lora) is False
    assert home.load_calls == ["pirate@v1"]
    assert await engine.pin(lora) is True
    assert list(engine.pool.replicas[home.url].adapters) == ["pirate@v1"]
    # A pinned adapter is loaded again as soon as a probe sees its replica restarted.
    home.restart()
    await engine.pool.refresh()
    assert home.load_calls == ["pirate@v1", "pirate@v1"]
    assert await engine.unload(lora) is True
    assert home.unload_calls == ["pirate@v1"] and "pirate@v1" not in home.adapters
    assert (await engine.residency()).loaded == frozenset()


async def test_name_already_on_the_replica_is_adopted_not_reloaded(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    home = home_fake(fakes)
    home.adapters["pirate@v1"] = "/adapters/pirate"  # loaded by another gateway
    assert await engine.load(adapter()) is False
    assert home.load_calls == []
    await collect(engine, gen_request(lora=adapter()))
    assert len(home.bodies) == 1


async def test_adapter_the_replica_cannot_load(engine: RemoteEngine, fakes: list[FakeReplica]):
    broken = AdapterRef(name="broken", lora_id=9, path="/missing/broken", version="v1")
    with pytest.raises(ValueError, match="could not load broken@v1"):
        await engine.load(broken)
    with pytest.raises(EngineUnavailableError):  # tried on two replicas
        await collect(engine, gen_request(lora=broken))


async def test_retired_name_found_after_a_rejoin_is_unloaded(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    lora = adapter()
    home = home_fake(fakes)
    await engine.load(lora)
    home.down = True
    await engine.pool.refresh()
    await engine.unload(lora)  # the replica is down: the name stays there
    home.down = False
    await engine.pool.refresh()
    assert "pirate@v1" not in home.adapters


# ------------------------------------------------------- membership, keys, start


async def test_dns_name_members_join_and_leave(fakes: list[FakeReplica]):
    answers = {"replicas.local": ["127.0.0.1"]}

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    port = int(fakes[1].url.rsplit(":", 1)[1])
    refresh = 0.05
    settings = remote_settings(
        fakes[:1], dns_name="replicas.local", port=port, dns_refresh_seconds=refresh
    )
    remote = build_remote_engine(settings, resolver=resolve)
    await discover_base(remote, settings)
    assert sorted(remote.pool.replicas) == sorted([fakes[0].url, fakes[1].url])
    answers["replicas.local"] = []
    await asyncio.sleep(refresh * 1.5)  # the name is due to be resolved again
    await remote.pool.refresh()
    assert list(remote.pool.replicas) == [fakes[0].url]
    await remote.shutdown()


async def test_per_replica_api_keys(
    fakes: list[FakeReplica], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("REPLICA_KEY", "key-from-env")
    key_file = tmp_path / "key"
    key_file.write_text("key-from-file\n")
    fakes[0].api_key, fakes[1].api_key = "key-from-env", "key-from-file"
    settings = remote_settings(
        fakes[:2],
        replicas=[fakes[0].url, {"url": fakes[1].url, "api_key_file": key_file}],
        api_key_env="REPLICA_KEY",
    )
    assert "key-from" not in repr(settings)
    remote = build_remote_engine(settings)
    await discover_base(remote, settings)
    assert len(remote.pool.healthy()) == 2
    await remote.shutdown()


async def test_start_reads_the_base_model_from_a_replica(
    fakes: list[FakeReplica], fake_kit: FakeKit
):
    from gateway.engine.factory import start_engine
    from gateway.settings import ModelSettings

    remote = start_engine(ModelSettings(path=fake_kit.base), remote_settings(fakes))
    assert isinstance(remote, RemoteEngine) and isinstance(remote, Engine)
    assert (remote.base_model, remote.max_model_len) == (BASE, MAX_LEN)
    await remote.check_health()
    await remote.shutdown()


async def test_start_without_replicas_needs_the_model_configured(fake_kit: FakeKit):
    from gateway.settings import ModelSettings

    dead = RemoteEngineSettings(replicas=[f"http://127.0.0.1:{free_port()}"], connect_timeout=0.5)
    with pytest.raises(EngineUnavailableError, match="served_model_name"):
        start_remote_engine(ModelSettings(path=fake_kit.base), dead)
    configured = dead.model_copy(update={"served_model_name": BASE, "max_model_len": 128})
    remote = start_remote_engine(ModelSettings(path=fake_kit.base), configured)
    with pytest.raises(EngineUnavailableError):
        await remote.check_health()
    await remote.shutdown()


def test_settings_validation(monkeypatch: pytest.MonkeyPatch, fake_kit: FakeKit, tmp_path: Path):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    bad: list[dict[str, Any]] = [
        {},
        {"replicas": ["ftp://x:1"]},
        {"replicas": ["http://x:8000/v1"]},
        {"replicas": ["http://x:1", "http://x:1/"]},
        {"replicas": ["http://x:1"], "api_key_env": "NOT_SET_KEY"},
        {"replicas": ["http://x:1"], "api_key_file": tmp_path / "none"},
        {"replicas": ["http://x:1"], "max_loras": 4, "max_cpu_loras": 2},
        {"replicas": ["http://x:1"], "max_lora_rank": 7},
    ]
    for fields in bad:
        with pytest.raises(ValidationError):
            RemoteEngineSettings(**fields)
    settings = Settings.load(
        None,
        model={"path": fake_kit.base},
        engine={"kind": "remote", "dns_name": "vllm.default.svc", "port": 8000},
    )
    assert isinstance(settings.engine, RemoteEngineSettings)
    assert settings.engine.dns_name == "vllm.default.svc"


# ------------------------------------------------------------- through the app


async def test_gateway_in_remote_mode_serves_chat_and_ready(
    fakes: list[FakeReplica], fake_kit: FakeKit, tmp_path: Path, renderer: Any
):
    settings = fake_settings(fake_kit, tmp_path / "registry")
    remote_cfg = remote_settings(fakes)
    remote = build_remote_engine(remote_cfg)
    await discover_base(remote, remote_cfg)
    async with run_fake_gateway(settings, renderer, engine=remote) as gateway:  # type: ignore[arg-type]
        assert (await gateway.client.get("/ready")).status_code == 200
        response = await gateway.client.post(
            "/v1/chat/completions",
            json={"model": "pirate", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["completion_tokens"] == 4
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
        [sent] = [b for f in fakes for b in f.bodies]
        assert sent["model"].startswith("pirate@")
        adapters = await gateway.client.get(
            "/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        [pirate] = [a for a in adapters.json()["data"] if a["name"] == "pirate"]
        home = [f.url for f in fakes if any(n.startswith("pirate@") for n in f.load_calls)]
        assert [v["replicas"] for v in pirate["versions"]] == [home]
        for fake in fakes:
            fake.down = True
        await remote.pool.refresh()
        assert (await gateway.client.get("/ready")).status_code == 503


async def test_a_wrong_replica_key_is_never_the_clients_fault(
    engine: RemoteEngine, fakes: list[FakeReplica]
):
    home = home_fake(fakes)
    home.api_key = "the-replicas-real-key"  # the gateway sends none
    outs = await collect(engine, gen_request(lora=adapter()))  # 401 on load: tried elsewhere
    assert outs[-1].choices[0].finish_reason == "length"
    await engine.pool.refresh()
    assert home.url not in {r.url for r in engine.pool.healthy()}


def test_config_check_validates_remote_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    import yaml

    from gateway.cli.main import main

    monkeypatch.delenv("MISSING_REPLICA_KEY", raising=False)
    path = tmp_path / "remote.yaml"
    engine = {"kind": "remote", "replicas": ["http://10.0.0.5:8000"], "max_lora_rank": 8}
    path.write_text(yaml.safe_dump({"model": {"path": str(tmp_path)}, "engine": engine}))
    assert main(["config", "check", str(path)]) == 0
    engine["api_key_env"] = "MISSING_REPLICA_KEY"
    engine["max_lora_rank"] = 7
    path.write_text(yaml.safe_dump({"model": {"path": str(tmp_path)}, "engine": engine}))
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "engine.max_lora_rank" in err
