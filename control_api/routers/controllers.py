"""/v1/controllers (live associations), /v1/stats, /metrics and /v1/config."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from dpu_emu.domain.state import require_admin

from .. import metrics
from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import ControllerPublic, QosStats, StatsPublic
from ._util import NO_CONTENT, out, out_list

router = APIRouter(tags=["controllers", "stats"], responses=ERROR_RESPONSES)
ControllerId = Annotated[str, Path(description="<subsystem id>.<cntlid> (or discovery.<cntlid>)", max_length=128)]
JSON_CONTENT = "application/json"


@router.get("/v1/controllers", response_model=list[ControllerPublic])
async def list_controllers(request: Request, svc: Svc, caller: Caller,
                           subsystem: Annotated[str | None, Query(max_length=256)] = None) -> list[ControllerPublic]:
    return out_list(ControllerPublic, await on_device(request, svc.controllers.list, caller, subsystem))


@router.get("/v1/controllers/{controller}", response_model=ControllerPublic)
async def get_controller(controller: ControllerId, request: Request, svc: Svc, caller: Caller) -> ControllerPublic:
    return out(ControllerPublic, await on_device(request, svc.controllers.get, controller, caller))


@router.delete("/v1/controllers/{controller}", status_code=NO_CONTENT, response_class=Response)
async def delete_controller(controller: ControllerId, request: Request, svc: Svc, caller: Caller) -> Response:
    """Disconnect the association (the host may reconnect if it still has access)."""
    await on_device(request, svc.controllers.delete, controller, caller)
    return Response(status_code=NO_CONTENT)


@router.get("/v1/stats", response_model=StatsPublic)
async def get_stats(request: Request, svc: Svc, caller: Caller) -> StatsPublic:
    snapshot = await on_device(request, svc.controllers.stats, caller)
    stats = StatsPublic.model_validate(snapshot, from_attributes=True)
    qos = await on_device(request, svc.qos.telemetry, caller)
    if qos is not None:
        stats.qos = QosStats.model_validate(qos)
    return stats


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {metrics.CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def get_metrics(request: Request, svc: Svc, caller: Caller) -> Response:
    snapshot = await on_device(request, svc.controllers.stats, caller)
    qos = await on_device(request, svc.qos.telemetry, caller)
    return Response(metrics.render(snapshot, qos), media_type=metrics.CONTENT_TYPE)


@router.get("/v1/config", response_class=Response,
            responses={200: {"content": {JSON_CONTENT: {"schema": {"type": "object"}}},
                             "description": "the configuration exactly as saved"}})
async def export_config(request: Request, svc: Svc, caller: Caller) -> Response:
    """The device's configuration as saved (deterministic; tenant tokens only as hashes)."""
    require_admin(caller)
    return Response(await on_device(request, svc.export_text), media_type=JSON_CONTENT)
