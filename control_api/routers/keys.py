"""/v1/keys: data keys for encrypted namespaces.  The material is write-only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from ..deps import Caller, Svc, on_device
from ..errors import ERROR_RESPONSES
from ..schemas import KEY_ID_PATTERN, KeyCreate, KeyPublic
from ._util import CREATED, NO_CONTENT, out, out_list

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)
KeyId = Annotated[str, Path(max_length=64, pattern=KEY_ID_PATTERN)]


@router.post("", status_code=CREATED, response_model=KeyPublic)
async def create_key(body: KeyCreate, request: Request, svc: Svc, caller: Caller) -> KeyPublic:
    """Generate a key, or import one (``material``, base64); only id and fingerprint come back.
    409 when the device has no key management (keys_file and master key)."""
    return out(KeyPublic, await on_device(request, svc.keys.create, body.model_dump(exclude_none=True), caller))


@router.get("", response_model=list[KeyPublic])
async def list_keys(request: Request, svc: Svc, caller: Caller) -> list[KeyPublic]:
    return out_list(KeyPublic, await on_device(request, svc.keys.list, caller))


@router.get("/{key}", response_model=KeyPublic)
async def get_key(key: KeyId, request: Request, svc: Svc, caller: Caller) -> KeyPublic:
    return out(KeyPublic, await on_device(request, svc.keys.get, key, caller))


@router.delete("/{key}", status_code=NO_CONTENT, response_class=Response)
async def delete_key(key: KeyId, request: Request, svc: Svc, caller: Caller) -> Response:
    """Refused (409) while a namespace uses the key."""
    await on_device(request, svc.keys.delete, key, caller)
    return Response(status_code=NO_CONTENT)
