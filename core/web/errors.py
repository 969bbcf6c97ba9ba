"""Every error answers JSON ``{error, detail}``: 4xx for the caller's mistakes, never a trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def install_common(app: FastAPI, service: str) -> None:
    """Handlers for invalid requests, HTTP errors and anything unexpected; ``service`` names
    whose log holds the trace of a 500 (``"the app"``)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected(service))


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        # ("body", "items", 0, "vector") -> "items.0.vector"; query and path keep their prefix.
        loc = [str(p) for p in e.get("loc", ())]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
        # A validator's own ValueError reads better without pydantic's "Value error, ".
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))


def _unexpected(service: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", f"internal error; {service}'s log has more")

    return handler
