"""``POST /admin/adapters/{name}/promote``: make a version that passed the evaluation
gate (``loragate adapters promote``) the active one, and record why.

The gate itself runs in the client (the eval set goes through the OpenAI API like any
caller's requests); this route does the change in one call: it checks that the version
the gate compared against is still the active one (else 409: the comparison no longer
holds), activates the candidate, ends a traffic split that names it among its weights or
as its shadow (the candidate then serves every request for ``name``), and writes one
audit entry ``adapter.promote`` with the previous version, the split it ended and the
gate's figures.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import AdapterNotFoundError
from adapters.naming import check_version
from adapters.registry_changes import check_stable
from gateway.adapter_runtime import traffic_split
from gateway.admin.protocol import AdapterInfo
from gateway.api.deps import LifecycleDep, StateDep, require_admin
from gateway.protocol.common import AdminRequest
from gateway.tenancy.tenant_admin import actor_of

router = APIRouter(prefix="/admin/adapters", tags=["admin"], dependencies=[Depends(require_admin)])


class GateFigures(BaseModel):
    """What the evaluation gate measured (stored in the audit entry as given; finite
    numbers only, so the audit log stays valid JSON)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    items: int = Field(ge=0, description="Eval items answered by both versions.")
    candidate_mean: float = Field(description="Mean item score of the candidate (0..1).")
    stable_mean: float = Field(description="Mean item score of the stable version (0..1).")
    low: float = Field(description="Lower bound of the interval of candidate - stable.")
    high: float = Field(description="Upper bound of that interval.")
    confidence: float = Field(gt=0, lt=1, description="The interval's confidence, e.g. 0.95.")
    margin: float = Field(ge=0, description="Promoted when low >= -margin.")
    resamples: int = Field(ge=1, description="Paired bootstrap resamples.")
    seed: int = Field(description="Bootstrap seed.")
    eval_set: str = Field(max_length=200, description="The eval set's file name and sha256.")

    @model_validator(mode="after")
    def _passed(self) -> GateFigures:
        """Figures of a gate that passed: an ``adapter.promote`` entry always records one
        (``gateway.compare.gate``: at least one item, ``low >= -margin``)."""
        if self.items < 1:
            raise ValueError("the gate answered no items")
        if self.low > self.high:
            raise ValueError("low is above high")
        if self.low < -self.margin:
            raise ValueError(f"the gate did not pass: low {self.low} is below -margin")
        return self


class PromoteRequest(AdminRequest):
    version: str = Field(description="The candidate version to activate.")
    stable: str = Field(
        description="The active version the gate compared against; 409 if another is active now."
    )
    gate: GateFigures


@router.post("/{name}/promote")
async def promote_adapter(
    name: str,
    body: PromoteRequest,
    lifecycle: LifecycleDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> AdapterInfo:
    registry = lifecycle.registry
    entries = registry.entries(name)
    if not entries:
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    check_version(body.version)
    if body.version not in {e.version for e in entries}:
        raise AdapterNotFoundError(f"No version {body.version!r} of {name!r}.", param="version")
    check_stable(entries, name, body.stable)  # at once, before the candidate is loaded
    # Checked again with the activation and the end of a split naming the candidate (as a
    # weight or as its shadow: either would keep callers on other versions) in one write
    # of the shared document, so another gateway's promotion meanwhile is a 409 too.
    _, old = await lifecycle.promote(name, body.version, body.stable)
    ended = dict(old.weights) if old is not None else None
    if old is not None:
        state.metrics.labels.update(adapters=traffic_split.adapter_labels(registry))
    detail: dict[str, Any] = {
        "version": body.version,
        "previous": body.stable,
        "split_ended": ended,
        "gate": body.gate.model_dump(),
    }
    await state.tenant_admin.record(actor_of(authorization), "adapter.promote", name, detail)
    return AdapterInfo.build(
        name,
        registry.entries(name),
        await lifecycle.residency(),
        lifecycle.tracker,
        registry.split(name),
    )
