"""/v1/listeners/{id}/capture: per-listener packet capture to a pcap file (no download)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from ..deps import Caller, on_device
from ..errors import ERROR_RESPONSES
from ..schemas_capture import CapturePublic, CaptureStart
from ._util import CREATED, out

router = APIRouter(prefix="/v1/listeners", tags=["capture"], responses=ERROR_RESPONSES)
PortId = Annotated[int, Path(ge=1, le=0xFFFE)]


@router.post("/{listener}/capture", status_code=CREATED, response_model=CapturePublic)
async def start_capture(listener: PortId, body: CaptureStart, request: Request, caller: Caller) -> CapturePublic:
    svc = request.app.state.device.captures
    return out(CapturePublic, await on_device(request, svc.start, listener, body.file, body.max_bytes,
                                              body.max_packets, caller))


@router.get("/{listener}/capture", response_model=CapturePublic)
async def capture_status(listener: PortId, request: Request, caller: Caller) -> CapturePublic:
    svc = request.app.state.device.captures
    return out(CapturePublic, await on_device(request, svc.status, listener, caller))


@router.delete("/{listener}/capture", response_model=CapturePublic)
async def stop_capture(listener: PortId, request: Request, caller: Caller) -> CapturePublic:
    """Stop and flush the file; the final status."""
    svc = request.app.state.device.captures
    return out(CapturePublic, await on_device(request, svc.stop, listener, caller))
