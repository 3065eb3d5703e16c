"""Request dependencies: who is calling (bearer token -> Scope), and running a service
call on the device's event loop (the REST server may run on another loop, e.g. a test
client's)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dpu_emu.domain import ADMIN, Scope, Services
from dpu_emu.domain.auth import hash_token, same_hash

from .errors import Unauthenticated

T = TypeVar("T")
bearer = HTTPBearer(auto_error=False, description="the administrator's token or a tenant's token")


async def on_device(request: Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` (sync or async) on the device's loop and return its result."""
    loop: asyncio.AbstractEventLoop | None = request.app.state.device.loop

    async def call() -> Any:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    if loop is None or loop is asyncio.get_running_loop():
        return await call()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def no_unknown_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (422), rather than ignore them."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    allowed = _query_names(dependant) if dependant is not None else set()
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise RequestValidationError([{"loc": ("query", name), "msg": "unknown query parameter",
                                       "type": "extra_forbidden"} for name in unknown])


def services(request: Request) -> Services:
    return request.app.state.device.services


async def scope(request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Scope:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated("a bearer token is required")
    token = credentials.credentials
    if same_hash(hash_token(token), request.app.state.admin_digest):
        return ADMIN
    tenant = await on_device(request, services(request).tenants.authenticate, token)
    if tenant is None:
        raise Unauthenticated("the bearer token is not valid")
    return Scope(tenant=tenant)


Caller = Annotated[Scope, Depends(scope)]
Svc = Annotated[Services, Depends(services)]
