"""Request and response models of ``/admin/tenants`` and ``/admin/audit``.

Tenant bodies are the config file's ``TenantConfig`` fields (validated by
``TenantAdmin.check_tenant``); keys and the audit log have their own models here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.protocol.common import AdminRequest
from gateway.settings.tenancy import BudgetConfig, TenantConfig
from gateway.tenancy.managed import ManagedKey
from gateway.tenancy.tenant_store import AuditEntry

MAX_KEY_NAME = 64
MAX_KEY_MODELS = 256
MAX_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z


class KeyCreateRequest(AdminRequest):
    name: str = Field(min_length=1, max_length=MAX_KEY_NAME, description="A label for people.")
    expires_at: int | None = Field(
        default=None, ge=0, le=MAX_UNIX_TIME, description="Unix seconds; null: never."
    )
    budget: BudgetConfig | None = Field(
        default=None, description="The key's own budget, on top of its tenant's."
    )
    models: list[str] | None = Field(
        default=None,
        max_length=MAX_KEY_MODELS,
        description="Models (as the tenant calls them) this key may use; null: all of the "
        "tenant's.",
    )


class KeyCreated(BaseModel):
    """The answer to a key's creation: the only time ``key`` is shown."""

    id: str
    key: str
    name: str
    created_at: int
    expires_at: int | None


class Spent(BaseModel):
    """What the key used in ``period`` (its budget's, else the current UTC month)."""

    period: str = Field(description="day:YYYY-MM-DD or month:YYYY-MM (UTC).")
    tokens: int = Field(description="Prompt + completion tokens.")
    cost: float = Field(description="In the pricing currency (the config's pricing).")


class KeyInfo(BaseModel):
    """A key as listed: never its secret or its hash."""

    id: str
    name: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    budget: BudgetConfig | None
    spent: Spent

    @classmethod
    def build(cls, key: ManagedKey, spent: Spent) -> KeyInfo:
        last = int(key.last_used_at) if key.last_used_at is not None else None
        return cls(
            id=key.id,
            name=key.name,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=last,
            budget=BudgetConfig.model_validate(key.budget) if key.budget else None,
            spent=spent,
        )


class KeyList(BaseModel):
    data: list[KeyInfo]


class KeyRevoked(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    deleted: Literal[True] = True


def tenant_info(name: str, source: str, tenant: TenantConfig) -> dict[str, Any]:
    """A tenant as the API shows it: its definition (no keys) and where it comes from
    (``config``: read-only here; ``api``)."""
    definition = tenant.model_dump(mode="json", exclude={"keys"})
    return {"object": "tenant", "name": name, "source": source, **definition}


class AuditRecord(BaseModel):
    seq: int
    at: float
    actor: str = Field(description="key:<id> (a hashed admin key) or api_key.")
    action: str
    tenant: str
    target: str | None = Field(description="The key id of a key action.")
    detail: dict[str, Any]

    @classmethod
    def build(cls, entry: AuditEntry) -> AuditRecord:
        return cls(**entry.__dict__)


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditRecord]
    has_more: bool
