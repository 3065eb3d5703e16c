"""/v1/tenants: who may see which namespaces, and their tokens."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import ID_PATTERN, TenantCreate, TenantCreated, TenantPublic, TenantUpdate, TokenIssued
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], responses=ERROR_RESPONSES)
Name = Annotated[str, Path(max_length=63, pattern=ID_PATTERN)]


@router.post("", status_code=CREATED, response_model=TenantCreated)
async def create_tenant(body: TenantCreate, request: Request, svc: Svc, caller: Caller) -> TenantCreated:
    view, token = await on_device(request, svc.tenants.create, body.model_dump(), caller)
    return TenantCreated.model_validate({**asdict(view), "token": token})


@router.get("", response_model=list[TenantPublic])
async def list_tenants(request: Request, svc: Svc, caller: Caller) -> list[TenantPublic]:
    return out_list(TenantPublic, await on_device(request, svc.tenants.list, caller))


@router.get("/{tenant}", response_model=TenantPublic)
async def get_tenant(tenant: Name, request: Request, svc: Svc, caller: Caller) -> TenantPublic:
    return out(TenantPublic, await on_device(request, svc.tenants.get, tenant, caller))


@router.patch("/{tenant}", response_model=TenantPublic)
async def update_tenant(tenant: Name, body: TenantUpdate, request: Request, svc: Svc,
                        caller: Caller) -> TenantPublic:
    changes = body.model_dump(exclude_unset=True)
    return out(TenantPublic, await on_device(request, svc.tenants.update, tenant, changes, caller))


@router.delete("/{tenant}", status_code=NO_CONTENT, response_class=Response)
async def delete_tenant(tenant: Name, request: Request, svc: Svc, caller: Caller) -> Response:
    await on_device(request, svc.tenants.delete, tenant, caller)
    return Response(status_code=NO_CONTENT)


@router.post("/{tenant}/token", response_model=TokenIssued)
async def rotate_token(tenant: Name, request: Request, svc: Svc, caller: Caller) -> TokenIssued:
    """Issue a new token for the tenant; the old one stops working."""
    return TokenIssued(token=await on_device(request, svc.tenants.rotate_token, tenant, caller))
