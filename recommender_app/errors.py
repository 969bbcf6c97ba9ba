"""Every error answers JSON ``{error, detail}``: 4xx for the caller's mistakes, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nrtrec.recommender_app.clicks import PublishFailed
from nrtrec.recommender_app.filters import BadFilter

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


class BadParameter(ValueError):
    """A query parameter out of range or malformed (answered 400)."""


def error_response(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def install(app: FastAPI) -> None:
    app.add_exception_handler(BadFilter, _bad_filter)
    app.add_exception_handler(BadParameter, _bad_parameter)
    app.add_exception_handler(PublishFailed, _publish_failed)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


async def _bad_filter(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_filter", str(exc))


async def _bad_parameter(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_parameter", str(exc))


async def _publish_failed(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "broker_unavailable", f"{exc}; the event may not be recorded")


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        # ("body", "user_id") -> "user_id"; query and path keep their prefix.
        loc = [str(p) for p in e.get("loc", ())]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc) or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the app's log has more")
