"""Operator routes: Prometheus metrics, config reload, usage (admin key unless configured)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.api.deps import StateDep, check_admin, require_admin
from gateway.config_reload import reload_tenancy
from gateway.errors import InvalidRequestError
from gateway.tenancy.usage import UsageBucket

router = APIRouter()

MAX_UNIX_TIME = 253402300799  # 9999-12-31T23:59:59Z: the usage table's minutes fit int64
MAX_SERIES_BUCKETS = 1000
"""The most buckets one ``/admin/usage?bucket=`` answer spans (41 days of hours)."""


@router.get("/metrics")
async def metrics(
    state: StateDep, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Response:
    """Prometheus text: loragate's series and the engine's own (``vllm:*``)."""
    if state.settings.metrics.require_admin:
        check_admin(state, request, authorization)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/admin/config/reload", dependencies=[Depends(require_admin)])
async def reload_config(state: StateDep) -> dict[str, Any]:
    """Re-read the config file; a valid one applies to new requests, an invalid one is
    refused. The answer lists the sections ``applied`` (tenants, prompts, admin keys) and
    those that changed but need a restart (``restart_required``)."""
    report = await asyncio.to_thread(reload_tenancy, state, state.config_path)
    return report.as_response()


@router.get("/admin/usage", dependencies=[Depends(require_admin)])
async def usage(
    state: StateDep,
    tenant: Annotated[str | None, Query()] = None,
    since: Annotated[
        float | None,
        Query(description="Unix time", ge=0, le=MAX_UNIX_TIME, allow_inf_nan=False),
    ] = None,
    bucket: Annotated[
        UsageBucket | None,
        Query(description="hour or day: split `data` into UTC buckets, each row's `start`."),
    ] = None,
) -> dict[str, Any]:
    """Requests, tokens, cost and engine seconds per tenant, key, model and adapter
    (``data``), and each budget with its spend in the current period (``budgets``).

    With ``bucket``, ``data`` is a series: the same sums per UTC hour or day, each row
    with its bucket's ``start`` (unix seconds), oldest first, over at most
    ``MAX_SERIES_BUCKETS`` buckets (``since`` defaults to the first of them)."""
    now = time.time()
    answer: dict[str, Any] = {
        "object": "list",
        "generated_at": int(now),
        "currency": state.gatekeeper.directory.config.pricing.currency,
    }
    if bucket is None:
        rows = await asyncio.to_thread(state.usage.query, tenant=tenant, since=since)
        answer["data"] = [row.__dict__ for row in rows]
    else:
        width = bucket.minutes * 60
        earliest = (now // width - (MAX_SERIES_BUCKETS - 1)) * width
        if since is None:
            since = earliest
        elif since < earliest:
            raise InvalidRequestError(
                f"A series by {bucket} spans at most {MAX_SERIES_BUCKETS} buckets: "
                f"'since' must be {int(earliest)} or later.",
                param="since",
                code="invalid_value",
            )
        points = await asyncio.to_thread(state.usage.series, bucket, tenant=tenant, since=since)
        answer["bucket"] = bucket.value
        answer["data"] = [point.as_json() for point in points]
    answer["budgets"] = await state.gatekeeper.budget_status(tenant)
    return answer
