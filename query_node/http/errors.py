"""Every error answers JSON ``{error, detail}``: 4xx for the caller's mistakes, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nrtrec import ann
from nrtrec.core.web.errors import HTTP_CODES, error_response, install_common
from nrtrec.query_node import errors
from nrtrec.query_node.declarations import DeclarationFailed
from nrtrec.schemas.errors import InvalidFilter

__all__ = ["HTTP_CODES", "error_response", "install"]

log = logging.getLogger(__name__)

# The caller's mistakes, by the error that names them; any other error of these kinds is ours.
STATUS: dict[type[Exception], int] = {
    DeclarationFailed: 503,
    errors.IndexNotFound: 404,
    errors.IndexExists: 409,
    errors.BatchTooLarge: 413,
    ann.InvalidSpec: 422,
    ann.InvalidVector: 422,
    InvalidFilter: 422,
    ann.OutOfRange: 400,
}
CODED = (errors.QueryNodeError, ann.AnnError, InvalidFilter, DeclarationFailed)


def install(app: FastAPI) -> None:
    for kind in CODED:
        app.add_exception_handler(kind, _coded_error)
    install_common(app, "the query node")


async def _coded_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CODED)
    status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, exc.code, str(exc))
