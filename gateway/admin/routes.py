"""``/admin/adapters``: register, list, show, activate, retire, pin, unpin, pre-warm,
and traffic splits between versions (``PUT``/``DELETE /admin/adapters/{name}/split``).

Every route needs the admin key (router dependency, checked before any body is read).
Registration takes JSON (``path`` or ``uri``) or a multipart upload (``file``: a
``.zip`` / ``.tar.gz``, with ``name``, ``version``, ``activate`` fields); it is exempt
from the app-wide body limit and applies its own: the JSON limit for JSON, and
``registry.max_upload_mib`` for uploads, which must declare their Content-Length.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.datastructures import UploadFile

from adapters.errors import AdapterNotFoundError
from adapters.limits import MiB
from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.sources import AdapterSource, ArchiveSource, FsspecSource, LocalDirectorySource
from gateway.adapter_runtime import traffic_split
from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.admin.protocol import (
    ActivateRequest,
    AdapterInfo,
    AdapterList,
    AdapterVersionInfo,
    RegisterAdapterRequest,
    RetireResponse,
    ShadowPage,
    SplitRequest,
    VersionRequest,
)
from gateway.admin.request_body import declared_length, read_json_body
from gateway.api.deps import LifecycleDep, SettingsDep, StateDep, require_admin
from gateway.api.json_body import validated
from gateway.errors import InvalidRequestError
from gateway.protocol.common import AdminRequest
from gateway.settings import Settings
from gateway.tenancy.tenant_admin import actor_of

REGISTER_PATH = "/admin/adapters"
router = APIRouter(prefix=REGISTER_PATH, tags=["admin"], dependencies=[Depends(require_admin)])


class UploadFields(AdminRequest):
    name: str
    version: str | None = None
    activate: bool | None = None


def _source(body: RegisterAdapterRequest, settings: Settings) -> AdapterSource:
    reg = settings.registry
    if body.path is not None:
        return LocalDirectorySource(body.path, reg.allowed_roots)
    assert body.uri is not None
    return FsspecSource(
        body.uri,
        allowed_protocols=reg.allowed_protocols,
        allowed_roots=reg.allowed_roots,
        allow_internal_hosts=reg.allow_internal_hosts,
    )


async def _info(lifecycle: AdapterLifecycle, name: str) -> AdapterInfo:
    entries = lifecycle.registry.entries(name)
    if not entries:
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
    return AdapterInfo.build(
        name,
        entries,
        await lifecycle.residency(),
        lifecycle.tracker,
        lifecycle.registry.split(name),
    )


async def _register_upload(
    request: Request, lifecycle: AdapterLifecycle, settings: Settings
) -> AdapterEntry:
    if declared_length(request, settings.registry.max_upload_mib * MiB) is None:
        raise InvalidRequestError(
            "Uploads must declare their size (Content-Length).", code="length_required"
        )
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError(
                "Missing required parameter: 'file' (a .zip or .tar.gz archive).",
                param="file",
                code="missing_required_parameter",
            )
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        meta = validated(UploadFields, fields)
        source = ArchiveSource(upload.file, upload.filename or "upload")
        return await lifecycle.register(
            meta.name, source, version=meta.version, activate=meta.activate
        )
    finally:
        await form.close()


@router.post("", status_code=201)
async def register_adapter(
    request: Request, lifecycle: LifecycleDep, settings: SettingsDep
) -> AdapterVersionInfo:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        entry = await _register_upload(request, lifecycle, settings)
    else:
        raw = await read_json_body(request, settings.limits.max_request_bytes)
        body = validated(RegisterAdapterRequest, raw)
        entry = await lifecycle.register(
            body.name, _source(body, settings), version=body.version, activate=body.activate
        )
    return AdapterVersionInfo.build(entry, await lifecycle.residency(), lifecycle.tracker)


@router.get("")
async def list_adapters(lifecycle: LifecycleDep, state: StateDep) -> AdapterList:
    stats = await lifecycle.residency()
    names = sorted({e.name for e in lifecycle.registry.entries()})
    return AdapterList(
        data=[
            AdapterInfo.build(
                n,
                lifecycle.registry.entries(n),
                stats,
                lifecycle.tracker,
                lifecycle.registry.split(n),
            )
            for n in names
        ],
        slots_known=stats.slots is not None,
        on_demand=state.on_demand.report(),
    )


@router.get("/{name}")
async def get_adapter(name: str, lifecycle: LifecycleDep) -> AdapterInfo:
    return await _info(lifecycle, name)


@router.delete("/{name}")
async def retire_adapter(
    name: str,
    lifecycle: LifecycleDep,
    state: StateDep,
    version: str | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> RetireResponse:
    """Retire ``name@version`` (every version without one); audited with the traffic
    split the retirement ended, if any."""
    split = lifecycle.registry.split(name)
    retired = await lifecycle.retire(name, version)
    ended = split is not None and lifecycle.registry.split(name) is None
    detail = {
        "retired": [e.ref for e in retired],
        "split_ended": dict(split.weights) if ended and split is not None else None,
    }
    await state.tenant_admin.record(actor_of(authorization), "adapter.retire", name, detail)
    return RetireResponse(name=name, retired=[e.ref for e in retired])


@router.post("/{name}/activate")
async def activate_adapter(
    name: str,
    body: ActivateRequest,
    lifecycle: LifecycleDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> AdapterInfo:
    active = [
        e.version for e in lifecycle.registry.entries(name) if e.status is AdapterStatus.ACTIVE
    ]
    await lifecycle.activate(name, body.version)
    detail = {"version": body.version, "previous": active[0] if active else None}
    await state.tenant_admin.record(actor_of(authorization), "adapter.activate", name, detail)
    return await _info(lifecycle, name)


@router.post("/{name}/pin")
async def pin_adapter(
    name: str, lifecycle: LifecycleDep, body: VersionRequest | None = None
) -> AdapterInfo:
    await lifecycle.pin(name, body.version if body else None)
    return await _info(lifecycle, name)


@router.post("/{name}/unpin")
async def unpin_adapter(
    name: str, lifecycle: LifecycleDep, body: VersionRequest | None = None
) -> AdapterInfo:
    await lifecycle.unpin(name, body.version if body else None)
    return await _info(lifecycle, name)


@router.post("/{name}/prewarm")
async def prewarm_adapter(
    name: str, lifecycle: LifecycleDep, body: VersionRequest | None = None
) -> AdapterInfo:
    await lifecycle.prewarm(name, body.version if body else None)
    return await _info(lifecycle, name)


@router.put("/{name}/split")
async def set_split(
    name: str,
    body: SplitRequest,
    lifecycle: LifecycleDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> AdapterInfo:
    """Split the traffic for ``name`` between its versions; replaces any split it had."""
    split = await traffic_split.set_split(
        lifecycle.registry, state.metrics, name, body.weights, body.options()
    )
    detail = split.model_dump(mode="json", exclude={"name"}, exclude_none=True)
    await state.tenant_admin.record(actor_of(authorization), "adapter.split", name, detail)
    return await _info(lifecycle, name)


@router.delete("/{name}/split")
async def clear_split(
    name: str,
    lifecycle: LifecycleDep,
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
) -> AdapterInfo:
    """End the split: the active version serves every request for ``name`` again."""
    old = await traffic_split.clear_split(lifecycle.registry, state.metrics, name)
    detail = {"weights": old.weights if old is not None else None}
    await state.tenant_admin.record(actor_of(authorization), "adapter.split.clear", name, detail)
    return await _info(lifecycle, name)


@router.get("/{name}/shadow")
async def shadow_log(
    name: str,
    state: StateDep,
    tenant: Annotated[str | None, Query(description="One tenant's entries only.")] = None,
    after: Annotated[int, Query(ge=0, description="Entries with ids above this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ShadowPage:
    """Both answers of ``name``'s shadowed requests, for tenants that opted in
    (``shadow_log``); this gateway's, kept in memory."""
    traffic_split.check_splittable(state.registry, name)
    shadows = state.pipeline.shadows
    if shadows is None:
        return ShadowPage(data=[], has_more=False, last_id=None, dropped=0)
    data, more = shadows.log.page(name, tenant=tenant, after=after, limit=limit)
    last = data[-1].id if data else None
    return ShadowPage(data=data, has_more=more, last_id=last, dropped=shadows.log.dropped)
