"""/v1/faults: fault injection for initiator testing (administrator only).  Faults live in
memory: they are never saved in the configuration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from dpu_emu.faults import FaultService

from ..deps import Caller, on_device
from ..errors import ERROR_RESPONSES
from ..schemas_faults import FAULT_ID_PATTERN, FaultCreate, FaultPublic
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/faults", tags=["faults"], responses=ERROR_RESPONSES)
FaultId = Annotated[str, Path(max_length=17, pattern=FAULT_ID_PATTERN)]


def fault_service(request: Request) -> FaultService:
    service: FaultService = request.app.state.device.faults
    return service


Faults = Annotated[FaultService, Depends(fault_service)]


@router.post("", status_code=CREATED, response_model=FaultPublic)
async def create_fault(body: FaultCreate, request: Request, faults: Faults, caller: Caller) -> FaultPublic:
    """Add a fault; it acts at once on matching commands, connections or keep-alives.
    400 when the combination is refused (e.g. status sct 0 sc 0, seed without probability)."""
    spec = body.model_dump(exclude_none=True)
    return out(FaultPublic, await on_device(request, faults.create, spec, caller))


@router.get("", response_model=list[FaultPublic])
async def list_faults(request: Request, faults: Faults, caller: Caller) -> list[FaultPublic]:
    """Every fault in creation order (the first one that injects decides), with counters."""
    return out_list(FaultPublic, await on_device(request, faults.list, caller))


@router.delete("", status_code=NO_CONTENT, response_class=Response)
async def clear_faults(request: Request, faults: Faults, caller: Caller) -> Response:
    """Remove every fault: normal behaviour from the next event on."""
    await on_device(request, faults.clear, caller)
    return Response(status_code=NO_CONTENT)


@router.get("/{fault}", response_model=FaultPublic)
async def get_fault(fault: FaultId, request: Request, faults: Faults, caller: Caller) -> FaultPublic:
    return out(FaultPublic, await on_device(request, faults.get, fault, caller))


@router.delete("/{fault}", status_code=NO_CONTENT, response_class=Response)
async def delete_fault(fault: FaultId, request: Request, faults: Faults, caller: Caller) -> Response:
    await on_device(request, faults.delete, fault, caller)
    return Response(status_code=NO_CONTENT)
