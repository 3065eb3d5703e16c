"""One table from domain errors to HTTP status, and problem+json bodies (RFC 9457) for
every error the API returns, including validation errors and unknown routes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dpu_emu.domain import (
    AlreadyExists,
    Conflict,
    DomainError,
    Forbidden,
    InvalidArgument,
    NotFound,
    PersistError,
    Unavailable,
)

from .schemas import Problem

log = logging.getLogger("control_api")
PROBLEM_JSON = "application/problem+json"
HTTP_BAD_REQUEST = 400
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
HTTP_UNPROCESSABLE = 422
HTTP_INTERNAL = 500
HTTP_UNAVAILABLE = 503

STATUS_OF: dict[type[DomainError], int] = {
    InvalidArgument: HTTP_BAD_REQUEST,
    Forbidden: HTTP_FORBIDDEN,
    NotFound: HTTP_NOT_FOUND,
    AlreadyExists: HTTP_CONFLICT,
    Conflict: HTTP_CONFLICT,
    PersistError: HTTP_UNAVAILABLE,
    Unavailable: HTTP_CONFLICT,  # the device is not set up for it (not a server fault)
}
TITLES = {HTTP_BAD_REQUEST: "bad request", HTTP_UNAUTHORIZED: "unauthorized", HTTP_FORBIDDEN: "forbidden",
          HTTP_NOT_FOUND: "not found", 405: "method not allowed", HTTP_CONFLICT: "conflict",
          HTTP_UNPROCESSABLE: "unprocessable request", HTTP_INTERNAL: "internal error",
          HTTP_UNAVAILABLE: "service unavailable"}

_problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": TITLES[status], "content": _problem_content}
    for status in (HTTP_BAD_REQUEST, HTTP_UNAUTHORIZED, HTTP_FORBIDDEN, HTTP_NOT_FOUND, HTTP_CONFLICT,
                   HTTP_UNPROCESSABLE, HTTP_UNAVAILABLE)
}


class Unauthenticated(Exception):
    """No bearer token, or one nobody holds."""


def problem(status: int, detail: str | None, request: Request, title: str | None = None,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title or TITLES.get(status, "error"), status=status, detail=detail,
                   instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON,
                        headers=headers)


def status_of(exc: DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return HTTP_BAD_REQUEST


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return problem(status_of(exc), str(exc), request, title=exc.title)

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
        return problem(HTTP_UNAUTHORIZED, str(exc), request, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        return problem(HTTP_UNPROCESSABLE, "the request does not match the schema", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, str(exc.detail), request, headers=headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return problem(HTTP_INTERNAL, "internal error (logged on the device)", request)
