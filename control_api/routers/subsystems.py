"""/v1/subsystems, their namespaces and their allowed hosts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import (
    NSID_MAX,
    HostCreate,
    HostPublic,
    NamespaceCreate,
    NamespacePublic,
    NamespaceUpdate,
    SubsystemCreate,
    SubsystemPublic,
    SubsystemUpdate,
)
from ..schemas_auth import DhchapPatch, DhchapPublic, DhchapSet
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/subsystems", tags=["subsystems"], responses=ERROR_RESPONSES)
SubRef = Annotated[str, Path(description="subsystem NQN or id", max_length=256)]
Nsid = Annotated[int, Path(ge=1, le=NSID_MAX)]
HostRef = Annotated[str, Path(description="host NQN", max_length=256)]


@router.post("", status_code=CREATED, response_model=SubsystemPublic)
async def create_subsystem(body: SubsystemCreate, request: Request, svc: Svc, caller: Caller) -> SubsystemPublic:
    return out(SubsystemPublic, await on_device(request, svc.subsystems.create, body.model_dump(), caller))


@router.get("", response_model=list[SubsystemPublic])
async def list_subsystems(request: Request, svc: Svc, caller: Caller) -> list[SubsystemPublic]:
    return out_list(SubsystemPublic, await on_device(request, svc.subsystems.list, caller))


@router.get("/{subsystem}", response_model=SubsystemPublic)
async def get_subsystem(subsystem: SubRef, request: Request, svc: Svc, caller: Caller) -> SubsystemPublic:
    return out(SubsystemPublic, await on_device(request, svc.subsystems.get, subsystem, caller))


@router.patch("/{subsystem}", response_model=SubsystemPublic)
async def update_subsystem(subsystem: SubRef, body: SubsystemUpdate, request: Request, svc: Svc,
                           caller: Caller) -> SubsystemPublic:
    changes = body.model_dump(exclude_unset=True)
    return out(SubsystemPublic, await on_device(request, svc.subsystems.update, subsystem, changes, caller))


@router.delete("/{subsystem}", status_code=NO_CONTENT, response_class=Response)
async def delete_subsystem(subsystem: SubRef, request: Request, svc: Svc, caller: Caller) -> Response:
    await on_device(request, svc.subsystems.delete, subsystem, caller)
    return Response(status_code=NO_CONTENT)


@router.post("/{subsystem}/namespaces", status_code=CREATED, response_model=NamespacePublic)
async def create_namespace(subsystem: SubRef, body: NamespaceCreate, request: Request, svc: Svc,
                           caller: Caller) -> NamespacePublic:
    spec = body.model_dump(exclude_none=True)
    return out(NamespacePublic, await on_device(request, svc.namespaces.add, subsystem, spec, caller))


@router.get("/{subsystem}/namespaces", response_model=list[NamespacePublic])
async def list_namespaces(subsystem: SubRef, request: Request, svc: Svc, caller: Caller) -> list[NamespacePublic]:
    return out_list(NamespacePublic, await on_device(request, svc.namespaces.list, subsystem, caller))


@router.get("/{subsystem}/namespaces/{nsid}", response_model=NamespacePublic)
async def get_namespace(subsystem: SubRef, nsid: Nsid, request: Request, svc: Svc,
                        caller: Caller) -> NamespacePublic:
    return out(NamespacePublic, await on_device(request, svc.namespaces.get, subsystem, nsid, caller))


@router.patch("/{subsystem}/namespaces/{nsid}", response_model=NamespacePublic)
async def update_namespace(subsystem: SubRef, nsid: Nsid, body: NamespaceUpdate, request: Request, svc: Svc,
                           caller: Caller) -> NamespacePublic:
    """Change a namespace's QoS live: inline limits, a policy name, or null (unlimited)."""
    changes = body.model_dump(exclude_unset=True)
    return out(NamespacePublic, await on_device(request, svc.namespaces.update, subsystem, nsid, changes, caller))


@router.delete("/{subsystem}/namespaces/{nsid}", status_code=NO_CONTENT, response_class=Response)
async def delete_namespace(subsystem: SubRef, nsid: Nsid, request: Request, svc: Svc, caller: Caller) -> Response:
    await on_device(request, svc.namespaces.remove, subsystem, nsid, caller)
    return Response(status_code=NO_CONTENT)


@router.post("/{subsystem}/hosts", status_code=CREATED, response_model=HostPublic)
async def add_host(subsystem: SubRef, body: HostCreate, request: Request, svc: Svc, caller: Caller) -> HostPublic:
    spec = body.model_dump(exclude={"nqn"}, exclude_none=True)
    return out(HostPublic, await on_device(request, svc.dhchap.add_host, svc.hosts, subsystem, body.nqn, spec,
                                           caller))


@router.get("/{subsystem}/hosts", response_model=list[HostPublic])
async def list_hosts(subsystem: SubRef, request: Request, svc: Svc, caller: Caller) -> list[HostPublic]:
    return out_list(HostPublic, await on_device(request, svc.hosts.list, subsystem, caller))


@router.get("/{subsystem}/hosts/{host}", response_model=HostPublic)
async def get_host(subsystem: SubRef, host: HostRef, request: Request, svc: Svc, caller: Caller) -> HostPublic:
    return out(HostPublic, await on_device(request, svc.hosts.get, subsystem, host, caller))


@router.delete("/{subsystem}/hosts/{host}", status_code=NO_CONTENT, response_class=Response)
async def remove_host(subsystem: SubRef, host: HostRef, request: Request, svc: Svc, caller: Caller) -> Response:
    await on_device(request, svc.hosts.remove, subsystem, host, caller)
    return Response(status_code=NO_CONTENT)


@router.get("/{subsystem}/hosts/{host}/dhchap", response_model=DhchapPublic)
async def get_host_dhchap(subsystem: SubRef, host: HostRef, request: Request, svc: Svc,
                          caller: Caller) -> DhchapPublic:
    return DhchapPublic.model_validate(await on_device(request, svc.dhchap.get, subsystem, host, caller))


@router.put("/{subsystem}/hosts/{host}/dhchap", response_model=DhchapPublic)
async def set_host_dhchap(subsystem: SubRef, host: HostRef, body: DhchapSet, request: Request, svc: Svc,
                          caller: Caller) -> DhchapPublic:
    """Set or rotate the host's DH-HMAC-CHAP secrets (write-only) and allowed hashes / DH groups."""
    spec = body.model_dump(exclude_none=True)
    return DhchapPublic.model_validate(await on_device(request, svc.dhchap.set, subsystem, host, spec, caller))


@router.patch("/{subsystem}/hosts/{host}/dhchap", response_model=DhchapPublic)
async def update_host_dhchap(subsystem: SubRef, host: HostRef, body: DhchapPatch, request: Request, svc: Svc,
                             caller: Caller) -> DhchapPublic:
    spec = body.model_dump(exclude_unset=True)
    return DhchapPublic.model_validate(await on_device(request, svc.dhchap.set, subsystem, host, spec, caller,
                                                       replace=False))


@router.delete("/{subsystem}/hosts/{host}/dhchap", status_code=NO_CONTENT, response_class=Response)
async def remove_host_dhchap(subsystem: SubRef, host: HostRef, request: Request, svc: Svc,
                             caller: Caller) -> Response:
    """Stop requiring authentication from this host (its entry stays in the allow list)."""
    await on_device(request, svc.dhchap.remove, subsystem, host, caller)
    return Response(status_code=NO_CONTENT)
