"""Keys, rate limits, config schema, policies, routing and usage: no server needed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
)
from gateway.model_catalog import ServedModel
from gateway.settings.keys import generate_key, hash_secret, parse_key, verify_secret
from gateway.settings.tenancy import PolicyConfig, TenancyConfig
from gateway.tenancy.admission import InFlightLimiter
from gateway.tenancy.directory import TenantDirectory
from gateway.tenancy.policy import Policy, SamplingRequest
from gateway.tenancy.rate_limit import Limit, RateLimiter, TokenBucket
from gateway.tenancy.usage import UsageStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_verify_only_their_secret() -> None:
    new = generate_key()
    parsed = parse_key(new.key)
    assert parsed is not None and parsed[0] == new.key_id
    assert verify_secret(parsed[1], new.hash)
    assert not verify_secret(parsed[1] + "x", new.hash)
    assert not verify_secret(parsed[1], hash_secret(parsed[1] + "x"))
    assert parse_key("sk-not-ours") is None
    assert new.key not in new.hash and parsed[1] not in new.hash


def test_token_bucket_exact_boundary_and_refill() -> None:
    clock = Clock()
    bucket = TokenBucket(3, period=60, clock=clock)
    assert [bucket.try_take(1) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.try_take(1)
    assert wait == pytest.approx(20.0)  # 3 per minute: one every 20 s
    clock.now += 19.9
    assert bucket.try_take(1) > 0
    clock.now += 0.1
    assert bucket.try_take(1) == 0.0
    assert bucket.try_take(10) == float("inf")  # never fits


def test_rate_limiter_is_all_or_nothing_and_charges_completions() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limits = {"key:a": Limit(requests_per_minute=10), "tenant:t": Limit(tokens_per_minute=100)}
    assert limiter.admit(limits, 60) == 0.0
    assert limiter.admit(limits, 60) > 0  # tenant tokens exhausted...
    assert limiter.admit({"key:a": Limit(requests_per_minute=10)}, 0) == 0.0
    # ...and the refused request took no request slot: 10 - 2 admitted = 8 left
    for _ in range(8):
        assert limiter.admit({"key:a": Limit(requests_per_minute=10)}, 0) == 0.0
    assert limiter.admit({"key:a": Limit(requests_per_minute=10)}, 0) > 0
    limiter.charge_tokens(limits, 200)  # completion tokens after the fact
    clock.now += 60
    assert limiter.admit({"tenant:t": Limit(tokens_per_minute=100)}, 1) > 0


def tenancy(**extra: Any) -> TenancyConfig:
    data: dict[str, Any] = {
        "prompts": {"tone": {"v1": "Be kind to {tenant}.", "v2": "Be very kind to {tenant}."}},
        "tenants": {
            "acme": {
                "keys": [{"id": "acmekey01", "hash": hash_secret("s" * 30)}],
                "models": ["base", "pirate"],
                "aliases": {"support-bot": {"model": "pirate", "policy": {"prompts": ["tone@v1"]}}},
                "policy": {"system_prompt": "Acme policy on {date}."},
            },
            "globex": {
                "keys": [{"id": "globexkey1", "hash": hash_secret("g" * 30)}],
                "models": ["robot"],
            },
        },
    }
    data.update(extra)
    return TenancyConfig.model_validate(data)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as bad_hash:
        TenancyConfig.model_validate(
            {"tenants": {"a": {"keys": [{"id": "abcdefgh", "hash": "plain"}]}}}
        )
    assert bad_hash.value.errors()[0]["loc"] == ("tenants", "a", "keys", 0, "hash")
    with pytest.raises(ValidationError, match="prompt 'nope' is not in the prompt library"):
        TenancyConfig.model_validate({"tenants": {"a": {"policy": {"prompts": ["nope"]}}}})
    with pytest.raises(ValidationError, match="unknown template variables"):
        TenancyConfig.model_validate({"tenants": {"a": {"policy": {"system_prompt": "{secret}"}}}})
    with pytest.raises(ValidationError, match="is used by"):
        h = hash_secret("x" * 30)
        TenancyConfig.model_validate(
            {
                "tenants": {
                    "a": {"keys": [{"id": "samekey01", "hash": h}]},
                    "b": {"keys": [{"id": "samekey01", "hash": h}]},
                }
            }
        )


@pytest.mark.parametrize("name", ["admin", "default"])
def test_the_gateways_own_caller_labels_are_not_tenant_names(name: str) -> None:
    """Usage, limits and metrics label the admin key and open mode's callers with them."""
    with pytest.raises(ValidationError, match="is reserved"):
        TenancyConfig.model_validate({"tenants": {name: {"models": ["*"]}}})


def test_prompt_library_versions() -> None:
    cfg = tenancy()
    assert cfg.prompt("tone") == "Be very kind to {tenant}."  # latest
    assert cfg.prompt("tone@v1") == "Be kind to {tenant}."


@pytest.mark.parametrize(
    ("mode", "expected_roles", "first"),
    [
        ("keep", ["system", "system", "user"], "POLICY"),
        ("merge", ["system", "user"], "POLICY\n\nclient rules"),
        ("drop", ["system", "user"], "POLICY"),
    ],
)
def test_policy_client_system_modes(mode: str, expected_roles: list[str], first: str) -> None:
    policy = Policy(PolicyConfig(system_prompt="POLICY", client_system=mode), tenancy())  # type: ignore[arg-type]
    messages = [{"role": "system", "content": "client rules"}, {"role": "user", "content": "hi"}]
    out = policy.apply_messages(messages, policy.system_text(tenant="acme", model="m"))
    assert [m["role"] for m in out] == expected_roles
    assert out[0]["content"] == first
    if mode == "drop":
        assert all(m["content"] != "client rules" for m in out)


def test_policy_template_variables_and_blocks() -> None:
    policy = Policy(
        PolicyConfig(prompts=["tone@v1"], system_prompt="Today is {date}; model {model}."),
        tenancy(),
    )
    text = policy.system_text(tenant="acme", model="support-bot", today=dt.date(2026, 1, 2))
    assert text == "Be kind to acme.\n\nToday is 2026-01-02; model support-bot."


def test_policy_sampling_bounds_and_caps() -> None:
    policy = Policy(
        PolicyConfig(
            max_tokens=64, max_prompt_tokens=100, temperature={"max": 0.5}, top_p={"min": 0.5}
        ),  # type: ignore[arg-type]
        tenancy(),
    )
    bounded = policy.bound_sampling(SamplingRequest(None, None, None))
    assert (bounded.temperature, bounded.top_p, bounded.max_tokens) == (0.5, 1.0, 64)
    assert policy.bound_sampling(SamplingRequest(0.2, 0.9, 10)).max_tokens == 10
    for fields, param in [
        ((0.9, None, None), "temperature"),
        ((None, 0.1, None), "top_p"),
        ((None, None, 65), "max_tokens"),
    ]:
        with pytest.raises(InvalidRequestError) as err:
            policy.bound_sampling(SamplingRequest(*fields))
        assert err.value.param == param
    with pytest.raises(ContextLengthError):
        policy.check_prompt_tokens(101)


def resolve(model: str) -> ServedModel:
    if model in ("base", "pirate", "robot"):
        return ServedModel(id=model)
    raise ModelNotFoundError(model)


def test_directory_auth_routing_and_identical_404s() -> None:
    directory = TenantDirectory(tenancy())
    acme = directory.authenticate(f"Bearer lg-acmekey01-{'s' * 30}")
    assert acme.tenant == "acme"
    for bad in (
        None,
        "Basic x",
        "Bearer nonsense",
        f"Bearer lg-acmekey01-{'t' * 30}",
        f"Bearer lg-unknown01-{'s' * 30}",
    ):
        with pytest.raises(AuthenticationError):
            directory.authenticate(bad)
    route = directory.route(acme, "support-bot", resolve)
    assert route.served.id == "pirate" and route.reported_id == "support-bot"
    assert route.policy.has_system_prompt and route.cache_salt
    with pytest.raises(ModelNotFoundError) as forbidden:
        directory.route(acme, "robot", resolve)  # globex's
    with pytest.raises(ModelNotFoundError) as unknown:
        directory.route(acme, "robot2", resolve)
    assert forbidden.value.message.replace("robot", "X") == unknown.value.message.replace(
        "robot2", "X"
    )
    globex = directory.authenticate(f"Bearer lg-globexkey1-{'g' * 30}")
    assert directory.route(globex, "robot", resolve).cache_salt != route.cache_salt
    assert [m for m, _ in directory.visible(globex, ["base", "pirate", "robot"])] == ["robot"]
    assert dict(directory.visible(acme, ["base", "pirate", "robot"])) == {
        "base": None,
        "pirate": None,
        "support-bot": "pirate",
    }


def test_in_flight_cap() -> None:
    limiter = InFlightLimiter()
    assert limiter.try_enter("t", 2) and limiter.try_enter("t", 2)
    assert not limiter.try_enter("t", 2)
    assert limiter.try_enter("u", 2)
    limiter.leave("t")
    assert limiter.try_enter("t", 2)


def test_usage_store_aggregates_and_persists(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db")
    for _ in range(3):
        store.record(
            tenant="acme",
            key_id="k1",
            model="support-bot",
            adapter="pirate",
            prompt_tokens=10,
            completion_tokens=5,
            now=60.0,
        )
    store.record(
        tenant="globex",
        key_id="k2",
        model="robot",
        adapter="robot",
        prompt_tokens=1,
        completion_tokens=2,
        now=120.0,
    )
    store.close()
    reopened = UsageStore(tmp_path / "usage.db")
    rows = reopened.query(tenant="acme")
    assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [(3, 30, 15)]
    assert {r.tenant for r in reopened.query()} == {"acme", "globex"}
