"""``/admin/tenants`` (tenants and their keys) and ``/admin/audit``.

Every route needs an admin key (router dependency). Changes are made by ``TenantAdmin``
and recorded in the audit log with the admin key that made them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query

from gateway.admin.tenant_protocol import (
    AuditList,
    AuditRecord,
    KeyCreated,
    KeyCreateRequest,
    KeyInfo,
    KeyList,
    KeyRevoked,
    Spent,
    tenant_info,
)
from gateway.api.deps import StateDep, require_admin
from gateway.errors import InvalidRequestError
from gateway.protocol.common import INT64_MAX
from gateway.tenancy.tenant_admin import TenantAdmin, actor_of

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])

MAX_AUDIT_PAGE = 1000

TenantBody = Annotated[dict[str, Any], Body()]
Authorization = Annotated[str | None, Header()]


async def get_tenant_admin(state: StateDep) -> TenantAdmin:
    return state.tenant_admin


AdminDep = Annotated[TenantAdmin, Depends(get_tenant_admin)]


@router.get("/admin/tenants")
async def list_tenants(admin: AdminDep) -> dict[str, Any]:
    return {"object": "list", "data": [tenant_info(*t) for t in await admin.tenants()]}


@router.post("/admin/tenants", status_code=201)
async def create_tenant(
    body: TenantBody, admin: AdminDep, authorization: Authorization = None
) -> dict[str, Any]:
    definition = dict(body)
    name = definition.pop("name", None)
    if not isinstance(name, str):
        raise InvalidRequestError(
            "Missing required parameter: 'name'.",
            param="name",
            code="missing_required_parameter",
        )
    await admin.create_tenant(name, definition, actor_of(authorization))
    return tenant_info(name, *await admin.tenant(name))


@router.get("/admin/tenants/{tenant}")
async def get_tenant(tenant: str, admin: AdminDep) -> dict[str, Any]:
    return tenant_info(tenant, *await admin.tenant(tenant))


@router.patch("/admin/tenants/{tenant}")
async def update_tenant(
    tenant: str, body: TenantBody, admin: AdminDep, authorization: Authorization = None
) -> dict[str, Any]:
    if "name" in body:
        raise InvalidRequestError(
            "A tenant cannot be renamed.", param="name", code="unknown_parameter"
        )
    await admin.update_tenant(tenant, body, actor_of(authorization))
    return tenant_info(tenant, *await admin.tenant(tenant))


@router.delete("/admin/tenants/{tenant}")
async def delete_tenant(
    tenant: str, admin: AdminDep, authorization: Authorization = None
) -> dict[str, Any]:
    revoked = await admin.delete_tenant(tenant, actor_of(authorization))
    return {"name": tenant, "object": "tenant", "deleted": True, "revoked_keys": revoked}


@router.post("/admin/tenants/{tenant}/keys", status_code=201)
async def create_key(
    tenant: str, body: KeyCreateRequest, admin: AdminDep, authorization: Authorization = None
) -> KeyCreated:
    """A new key; its secret is in this answer only (the store keeps a salted hash)."""
    record, secret = await admin.create_key(
        tenant,
        name=body.name,
        expires_at=body.expires_at,
        budget=body.budget.model_dump(mode="json") if body.budget else None,
        models=body.models,
        actor=actor_of(authorization),
    )
    return KeyCreated(
        id=record.id,
        key=secret,
        name=record.name,
        created_at=record.created_at,
        expires_at=record.expires_at,
    )


@router.get("/admin/tenants/{tenant}/keys")
async def list_keys(tenant: str, admin: AdminDep) -> KeyList:
    """The tenant's live keys made over the API (the config file's are in the file)."""
    keys = await admin.list_keys(tenant)
    spent = await admin.spent(tenant, keys)
    data = []
    for key in keys:
        period, spend = spent[key.id]
        data.append(KeyInfo.build(key, Spent(period=period, tokens=spend.tokens, cost=spend.cost)))
    return KeyList(data=data)


@router.delete("/admin/tenants/{tenant}/keys/{key_id}")
async def revoke_key(
    tenant: str, key_id: str, admin: AdminDep, authorization: Authorization = None
) -> KeyRevoked:
    """Revoke: 401 on this gateway at once, on the others within ``refresh_seconds``.
    Revoking a revoked key answers the same (and is audited)."""
    await admin.revoke_key(tenant, key_id, actor_of(authorization))
    return KeyRevoked(id=key_id)


@router.get("/admin/audit")
async def audit(
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="Entries older than this seq.")
    ] = None,
) -> AuditList:
    """Admin changes, newest first; page with ``before`` = the last ``seq`` seen."""
    entries = await admin.audit(limit=limit + 1, before=before)
    return AuditList(
        data=[AuditRecord.build(e) for e in entries[:limit]], has_more=len(entries) > limit
    )
