"""``create_app(device)``: the REST API over one device's domain services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from . import errors
from .deps import no_unknown_query
from .routers import ana, controllers, keys, listeners, qos, subsystems, tenants
from .routers import capture as capture_routes
from .routers import faults as fault_routes

if TYPE_CHECKING:
    from dpu_emu.device import Device

API_TITLE = "dpu-emu management API"
API_VERSION = "1.0.0"
DESCRIPTION = """Provision the emulated DPU storage front end: subsystems, namespaces (NVM or KV),
allowed hosts, listeners, tenants (per-host namespace masking), QoS policies and limits, data keys,
live controllers and statistics.

Every request carries `Authorization: Bearer <token>`: the administrator's token, or a tenant's
token (read-only, scoped to the tenant's own namespaces, controllers and statistics).  Errors are
`application/problem+json`."""


def create_app(device: Device, *, admin_digest: str) -> FastAPI:
    """``admin_digest``: SHA-256 (hex) of the administrator's bearer token."""
    app = FastAPI(title=API_TITLE, version=API_VERSION, description=DESCRIPTION, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json", dependencies=[Depends(no_unknown_query)])
    app.state.device = device
    app.state.admin_digest = admin_digest
    errors.install(app)
    for module in (subsystems, listeners, tenants, qos, keys, controllers, ana):
        app.include_router(module.router)
    app.include_router(fault_routes.router)
    app.include_router(capture_routes.router)
    return app
