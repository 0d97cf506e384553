"""``PUT``/``DELETE /admin/adapters/{name}/split`` and the CLI, on one gateway with a fake
engine: validation (400s name the field, one 404 for unknown and tenant-owned names),
the listing's ``split``, the audit log, routing by ``user`` then key, and the metrics
labelled by version."""

from __future__ import annotations

import argparse
import io
from collections import Counter
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from adapters.sources import LocalDirectorySource
from gateway.adapter_runtime.on_demand import TenantSource, scoped_name
from gateway.cli.admin import run_admin_command
from gateway.cli.main import build_parser
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, chat, new_adapter, register


async def two_versions(gw: FakeGateway, kit: FakeKit) -> None:
    """``pirate`` v1 (from the config) plus v2; v1 stays active."""
    r = await register(gw.client, "pirate", new_adapter(kit, seed=21), activate=False)
    assert r.status_code == 201, r.text


async def put_split(client: httpx.AsyncClient, name: str, weights: Any) -> httpx.Response:
    return await client.put(
        f"/admin/adapters/{name}/split", json={"weights": weights}, headers=ADMIN
    )


def served_version(gw: FakeGateway) -> str:
    adapter = gw.engine.requests[-1].adapter
    assert adapter is not None and adapter.version is not None
    return adapter.version


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"v1": 60, "v2": 30}, "sum to 100"),
        ({"v1": 50, "v9": 50}, "pirate@v9 does not exist"),
        ({"v1": 100}, "between 2 and"),
        ({"v1": 50, "v2": "fifty"}, None),  # pydantic: not an integer
    ],
)
async def test_bad_splits_are_400s_naming_weights(
    fake_gateway: FakeGateway, fake_kit: FakeKit, weights: Any, message: str | None
) -> None:
    await two_versions(fake_gateway, fake_kit)
    r = await put_split(fake_gateway.client, "pirate", weights)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith("weights")
    if message is not None:
        assert message in error["message"] and error["code"] == "invalid_split"
    listing = (await fake_gateway.client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert listing["split"] is None


async def test_unknown_and_tenant_owned_names_get_the_same_404(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    # An adapter fetched from tenant acme's source, as on-demand loading registers it.
    registry = fake_gateway.app.state.gateway.registry
    folder = new_adapter(fake_kit, seed=22)
    owned = scoped_name("acme", "secret")
    registry.register(
        owned, TenantSource("acme", LocalDirectorySource(folder, [fake_kit.adapter_root]))
    )
    registry.register(
        owned, TenantSource("acme", LocalDirectorySource(folder, [fake_kit.adapter_root]))
    )
    answers = []
    for name in ("nope", owned):
        r = await put_split(fake_gateway.client, name, {"v1": 50, "v2": 50})
        body = r.json()
        body["error"]["message"] = body["error"]["message"].replace(repr(name), "NAME")
        answers.append((r.status_code, body))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404 and answers[0][1]["error"]["param"] == "name"
    cleared = await fake_gateway.client.delete("/admin/adapters/nope/split", headers=ADMIN)
    assert cleared.status_code == 404


async def test_split_routes_by_user_then_key_and_labels_metrics_by_version(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    gw, client = fake_gateway, fake_gateway.client
    await two_versions(gw, fake_kit)
    r = await put_split(client, "pirate", {"v1": 50, "v2": 50})
    assert r.status_code == 200, r.text
    assert r.json()["split"] == {"v1": 50, "v2": 50}
    listing = (await client.get("/admin/adapters", headers=ADMIN)).json()
    by_name = {a["name"]: a for a in listing["data"]}
    assert by_name["pirate"]["split"] == {"v1": 50, "v2": 50}
    assert by_name["robot"]["split"] is None

    seen: dict[str, str] = {}
    for i in range(24):
        user = f"user-{i}"
        reply = await chat(client, "pirate", user=user)
        assert reply.status_code == 200 and reply.json()["model"] == "pirate"
        seen[user] = served_version(gw)
    assert set(seen.values()) == {"v1", "v2"}
    for user, version in list(seen.items())[:8]:  # sticky
        await chat(client, "pirate", user=user)
        assert served_version(gw) == version
    # Without `user`, the key decides (open mode: one caller, one version).
    without_user: Counter[str] = Counter()
    for _ in range(4):
        await chat(client, "pirate")
        without_user[served_version(gw)] += 1
    assert len(without_user) == 1
    # name@version ignores the split.
    await chat(client, "pirate@v2", user="user-0")
    assert served_version(gw) == "v2"

    metrics: CollectorRegistry = gw.app.state.gateway.metrics.registry
    per_version = {
        v: metrics.get_sample_value(
            "loragate_completion_tokens_total", {"tenant": "none", "adapter": f"pirate@{v}"}
        )
        for v in ("v1", "v2")
    }
    assert all(n is not None and n > 0 for n in per_version.values()), per_version
    for version in ("v1", "v2"):
        labels = {"tenant": "none", "model": "pirate", "adapter": f"pirate@{version}"}
        requests = metrics.get_sample_value(
            "loragate_requests_total", {**labels, "endpoint": "chat", "status_class": "2xx"}
        )
        assert requests is not None and requests > 0

    cleared = await client.delete("/admin/adapters/pirate/split", headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["split"] is None
    for user in list(seen)[:6]:
        await chat(client, "pirate", user=user)
        assert served_version(gw) == "v1"  # the active version serves everyone again

    audit = (await client.get("/admin/audit", headers=ADMIN)).json()["data"]
    actions = [(e["action"], e["target"], e["detail"]) for e in audit[:2]]
    assert actions == [
        ("adapter.split.clear", "pirate", {"weights": {"v1": 50, "v2": 50}}),
        ("adapter.split", "pirate", {"weights": {"v1": 50, "v2": 50}}),
    ]


async def cli(gw: FakeGateway, *argv: str) -> tuple[int, str, str]:
    args: argparse.Namespace = build_parser().parse_args(
        ["adapters", *argv, "--url", "http://gw", "--admin-key", ADMIN_KEY]
    )
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.ASGITransport(app=gw.app)
    code = await run_admin_command(args, transport=transport, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_cli_sets_and_clears_a_split(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    await two_versions(fake_gateway, fake_kit)
    code, out, _ = await cli(fake_gateway, "split", "pirate", "v1=90", "v2=10")
    assert code == 0 and '"v1": 90' in out and '"v2": 10' in out
    code, _, err = await cli(fake_gateway, "split", "pirate", "v1=90", "v2=20")
    assert code == 1 and "sum to 100" in err
    code, _, err = await cli(fake_gateway, "split", "pirate")
    assert code == 1 and "--clear" in err
    code, out, _ = await cli(fake_gateway, "split", "pirate", "--clear")
    assert code == 0 and '"split": null' in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["adapters", "split", "pirate", "v1:90"])


async def test_split_routes_need_the_admin_key(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    await two_versions(fake_gateway, fake_kit)
    client = fake_gateway.client
    body = {"weights": {"v1": 50, "v2": 50}}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        put = await client.put("/admin/adapters/pirate/split", json=body, headers=headers)
        delete = await client.delete("/admin/adapters/pirate/split", headers=headers)
        for r in (put, delete):
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    listing = (await client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert listing["split"] is None
