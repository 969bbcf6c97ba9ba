"""Every error answers JSON ``{error, detail}``: 4xx for the caller's mistakes, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nrtrec.query_node import errors
from nrtrec.web.errors import HTTP_CODES, error_response, install_common

__all__ = ["HTTP_CODES", "error_response", "install"]

log = logging.getLogger(__name__)

STATUS: dict[type[errors.QueryNodeError], int] = {
    errors.IndexNotFound: 404,
    errors.IndexExists: 409,
    errors.InvalidSpec: 422,
    errors.InvalidVector: 422,
    errors.InvalidFilter: 422,
    errors.OutOfRange: 400,
}


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.QueryNodeError, _query_node_error)
    install_common(app, "the query node")


async def _query_node_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.QueryNodeError)
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, exc.code, str(exc))
