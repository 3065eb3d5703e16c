"""/v1/qos: named QoS policies (SPDK limit names) and the live QoS telemetry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import ID_PATTERN, QosPolicyCreate, QosPolicyPublic, QosPolicyUpdate, QosStats
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/qos", tags=["qos"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(max_length=63, pattern=ID_PATTERN)]


@router.get("", response_model=QosStats)
async def qos_telemetry(request: Request, svc: Svc, caller: Caller) -> QosStats:
    """Per QoS group: ops and bytes by direction, latency percentiles, throttled time, queue depth."""
    return QosStats.model_validate(await on_device(request, svc.qos.telemetry, caller) or
                                   {"namespaces": [], "tenants": []})


@router.post("/policies", status_code=CREATED, response_model=QosPolicyPublic)
async def create_policy(body: QosPolicyCreate, request: Request, svc: Svc, caller: Caller) -> QosPolicyPublic:
    spec = body.model_dump(exclude_none=True)
    return out(QosPolicyPublic, await on_device(request, svc.qos.create_policy, spec, caller))


@router.get("/policies", response_model=list[QosPolicyPublic])
async def list_policies(request: Request, svc: Svc, caller: Caller) -> list[QosPolicyPublic]:
    return out_list(QosPolicyPublic, await on_device(request, svc.qos.list_policies, caller))


@router.get("/policies/{name}", response_model=QosPolicyPublic)
async def get_policy(name: Name, request: Request, svc: Svc, caller: Caller) -> QosPolicyPublic:
    return out(QosPolicyPublic, await on_device(request, svc.qos.get_policy, name, caller))


@router.patch("/policies/{name}", response_model=QosPolicyPublic)
async def update_policy(name: Name, body: QosPolicyUpdate, request: Request, svc: Svc,
                        caller: Caller) -> QosPolicyPublic:
    """Change some limits; every tenant and namespace following the policy changes live."""
    changes = body.model_dump(exclude_unset=True)
    return out(QosPolicyPublic, await on_device(request, svc.qos.update_policy, name, changes, caller))


@router.delete("/policies/{name}", status_code=NO_CONTENT, response_class=Response)
async def delete_policy(name: Name, request: Request, svc: Svc, caller: Caller) -> Response:
    """Refused (409) while a tenant or a namespace follows it."""
    await on_device(request, svc.qos.delete_policy, name, caller)
    return Response(status_code=NO_CONTENT)
