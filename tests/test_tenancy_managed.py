"""Unit tests of how the admin API's tenants and keys join the config file's
(``gateway.tenancy.managed.merge``) and what the directory does with them."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import AuthenticationError, ModelNotFoundError
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.settings.keys import generate_key
from gateway.settings.tenancy import TenancyConfig
from gateway.tenancy.directory import TenantDirectory
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.managed import KeyUses, ManagedKey, ManagedTenancy, ManagedTenant, merge
from gateway.tenancy.sqlite_tenant_store import SqliteTenantStore
from gateway.tenancy.tenant_admin import TenantAdmin
from gateway.tenancy.usage import UsageStore

FILE_KEY = generate_key()
FILE = TenancyConfig.model_validate(
    {
        "prompts": {"tone": {"v1": "Be brief."}},
        "tenants": {
            "acme": {
                "keys": [{"id": FILE_KEY.key_id, "hash": FILE_KEY.hash}],
                "models": ["base", "pirate"],
            }
        },
    }
)


def managed_key(tenant: str, **fields: Any) -> tuple[ManagedKey, str]:
    new = generate_key()
    return ManagedKey(new.key_id, tenant, "k", new.hash, 0, **fields), new.key


def resolve(model: str) -> ServedModel:
    return ServedModel(id=model)


def test_the_file_wins_and_invalid_api_tenants_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    snapshot = ManagedTenancy(
        generation=3,
        tenants={
            "acme": ManagedTenant("acme", {"models": ["*"]}, 1, 0.0),  # the file's name
            "globex": ManagedTenant("globex", {"models": ["robot"]}, 1, 0.0),
            "stale": ManagedTenant("stale", {"policy": {"prompts": ["gone"]}}, 1, 0.0),
        },
    )
    with caplog.at_level(logging.WARNING):
        merged, rules = merge(FILE, snapshot)
    assert merged.tenants["acme"] == FILE.tenants["acme"]
    assert merged.tenants["globex"].models == ["robot"]
    assert "stale" not in merged.tenants and "stale" in caplog.text
    assert rules == {}


def test_api_keys_join_their_tenant_with_their_budget() -> None:
    key, _ = managed_key("acme", budget={"period": "day", "max_tokens": 10}, models=("pirate",))
    orphan, _ = managed_key("gone")
    merged, rules = merge(FILE, ManagedTenancy(generation=1, keys=(key, orphan)))
    ids = [k.id for k in merged.tenants["acme"].keys]
    assert ids == [FILE_KEY.key_id, key.id]
    budget = merged.tenants["acme"].keys[1].budget
    assert budget is not None and budget.max_tokens == 10
    assert set(rules) == {key.id} and rules[key.id].models == frozenset({"pirate"})


def test_expiry_model_subset_and_last_use_in_the_directory() -> None:
    key, secret = managed_key("acme", expires_at=1000, models=("pirate",))
    now = [999.0]
    uses = KeyUses()
    directory = TenantDirectory(
        FILE, ManagedTenancy(generation=1, keys=(key,)), uses, clock=lambda: now[0]
    )
    caller = directory.authenticate(f"Bearer {secret}")
    assert caller.tenant == "acme" and uses.pending(key.id) == 999.0
    assert directory.route(caller, "pirate", resolve).reported_id == "pirate"
    with pytest.raises(ModelNotFoundError):
        directory.route(caller, "base", resolve)  # the tenant's, not the key's
    assert [m for m, _ in directory.visible(caller, ["base", "pirate"])] == ["pirate"]
    assert directory.key(key.id) is not None and directory.key("nobody00") is None
    now[0] = 1000.0
    with pytest.raises(AuthenticationError) as expired:
        directory.authenticate(f"Bearer {secret}")
    assert expired.value.code == "expired_api_key"
    file_caller = directory.authenticate(f"Bearer {FILE_KEY.key}")  # no rule, no record
    assert directory.route(file_caller, "base", resolve).reported_id == "base"
    assert uses.take() == {key.id: 999.0} and uses.take() == {}


def test_a_store_with_records_keeps_keys_required() -> None:
    empty = TenancyConfig()
    assert TenantDirectory(empty).open_mode
    assert TenantDirectory(empty, ManagedTenancy(generation=1)).open_mode
    assert not TenantDirectory(empty, ManagedTenancy(generation=2, has_records=True)).open_mode


def test_a_refused_batch_of_last_uses_is_kept_newest_first() -> None:
    uses = KeyUses()
    uses.record("a", 5.0)
    batch = uses.take()
    uses.record("a", 7.0)
    uses.put_back({**batch, "b": 1.0})
    assert uses.take() == {"a": 7.0, "b": 1.0}


def test_a_key_revoked_elsewhere_is_refused_before_the_rebuild() -> None:
    key, secret = managed_key("acme")
    uses = KeyUses()
    directory = TenantDirectory(FILE, ManagedTenancy(generation=1, keys=(key,)), uses)
    assert directory.authenticate(f"Bearer {secret}").key_id == key.id
    uses.revoked.add({key.id: 2})
    with pytest.raises(AuthenticationError):
        directory.authenticate(f"Bearer {secret}")
    uses.revoked.served_up_to(1)  # a snapshot from before the revocation: still refused
    with pytest.raises(AuthenticationError):
        directory.authenticate(f"Bearer {secret}")
    uses.revoked.served_up_to(2)
    assert directory.authenticate(f"Bearer {secret}").key_id == key.id


class BlockedGatekeeper(Gatekeeper):
    """Serves snapshots only once ``release`` is set: a rebuild that takes long."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.release.set()

    def apply_managed(self, managed: ManagedTenancy, uses: KeyUses | None = None) -> Any:
        assert self.release.wait(30)
        return super().apply_managed(managed, uses)


async def test_a_revocation_from_the_store_applies_while_the_rebuild_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tenants.db"
    other = SqliteTenantStore(path)  # another gateway's connection to the store
    gatekeeper = BlockedGatekeeper(FILE, UsageStore(tmp_path / "usage.db"), GatewayMetrics())
    admin = TenantAdmin(SqliteTenantStore(path), gatekeeper)
    try:
        admin.start()
        key, secret = managed_key("acme")
        other.create_key(key, "elsewhere")
        assert await admin.refresh()
        assert gatekeeper.authenticate(f"Bearer {secret}").key_id == key.id
        gatekeeper.release.clear()
        other.revoke_key("acme", key.id, "elsewhere")
        refresh = asyncio.create_task(admin.refresh())
        for _ in range(200):  # the rebuild is held; the revocation is not
            await asyncio.sleep(0.01)
            try:
                gatekeeper.authenticate(f"Bearer {secret}")
            except AuthenticationError:
                break
        else:
            pytest.fail("the revoked key was served until the rebuild")
        assert not refresh.done()
        gatekeeper.release.set()
        assert await refresh
        with pytest.raises(AuthenticationError):
            gatekeeper.authenticate(f"Bearer {secret}")
        assert key.id not in admin.uses.revoked  # the new directory has no such key
    finally:
        gatekeeper.release.set()
        await admin.close()
        other.close()
