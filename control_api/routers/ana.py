"""/v1/subsystems/{nqn}/ana: ANA groups and their state per listener (multipath)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from dpu_emu.domain.ana import AnaService

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import ANA_GROUP_MAX
from ..schemas_ana import AnaGroupPublic, AnaPublic, AnaStateUpdate
from ._util import out

router = APIRouter(prefix="/v1/subsystems", tags=["ana"], responses=ERROR_RESPONSES)
SubRef = Annotated[str, Path(description="subsystem NQN or id", max_length=256)]
GroupId = Annotated[int, Path(ge=1, le=ANA_GROUP_MAX, description="ANA group id")]
PortId = Annotated[int, Path(ge=1, le=0xFFFE, description="listener (port id)")]


@router.get("/{subsystem}/ana", response_model=AnaPublic)
async def get_ana(subsystem: SubRef, request: Request, svc: Svc, caller: Caller) -> AnaPublic:
    return out(AnaPublic, await on_device(request, AnaService(svc.state).get, subsystem, caller))


@router.put("/{subsystem}/ana/{grpid}/listeners/{portid}", response_model=AnaGroupPublic)
async def set_ana_state(subsystem: SubRef, grpid: GroupId, portid: PortId, body: AnaStateUpdate, request: Request,
                        svc: Svc, caller: Caller) -> AnaGroupPublic:
    """Set the ANA state of a group on one listener; hosts get the ANA change event."""
    view = await on_device(request, AnaService(svc.state).set_state, subsystem, grpid, portid, body.state, caller)
    return out(AnaGroupPublic, view)
