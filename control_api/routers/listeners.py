"""/v1/listeners: NVMe/TCP addresses (discovery and/or I/O)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import ListenerCreate, ListenerPublic, ListenerUpdate
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/listeners", tags=["listeners"], responses=ERROR_RESPONSES)
PortId = Annotated[int, Path(ge=1, le=0xFFFE)]


@router.post("", status_code=CREATED, response_model=ListenerPublic)
async def create_listener(body: ListenerCreate, request: Request, svc: Svc, caller: Caller) -> ListenerPublic:
    addr = {"trtype": body.trtype, "traddr": body.traddr, "trsvcid": str(body.trsvcid)}
    if body.adrfam is not None:
        addr["adrfam"] = body.adrfam
    spec = {"portid": body.id, "addr": addr, "discovery": body.discovery, "io": body.io}
    return out(ListenerPublic, await on_device(request, svc.listeners.create, spec, caller))


@router.get("", response_model=list[ListenerPublic])
async def list_listeners(request: Request, svc: Svc, caller: Caller) -> list[ListenerPublic]:
    return out_list(ListenerPublic, await on_device(request, svc.listeners.list, caller))


@router.get("/{listener}", response_model=ListenerPublic)
async def get_listener(listener: PortId, request: Request, svc: Svc, caller: Caller) -> ListenerPublic:
    return out(ListenerPublic, await on_device(request, svc.listeners.get, listener, caller))


@router.patch("/{listener}", response_model=ListenerPublic)
async def update_listener(listener: PortId, body: ListenerUpdate, request: Request, svc: Svc,
                          caller: Caller) -> ListenerPublic:
    changes = body.model_dump(exclude_unset=True)
    return out(ListenerPublic, await on_device(request, svc.listeners.update, listener, changes, caller))


@router.delete("/{listener}", status_code=NO_CONTENT, response_class=Response)
async def delete_listener(listener: PortId, request: Request, svc: Svc, caller: Caller) -> Response:
    await on_device(request, svc.listeners.delete, listener, caller)
    return Response(status_code=NO_CONTENT)
