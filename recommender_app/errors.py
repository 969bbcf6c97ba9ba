"""Every error answers JSON ``{error, detail}``: 4xx for the caller's mistakes, never a trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nrtrec.core.web.errors import error_response, install_common
from nrtrec.recommender_app.clicks import PublishFailed
from nrtrec.schemas.errors import InvalidFilter, InvalidRecord

log = logging.getLogger(__name__)


class BadParameter(ValueError):
    """A query parameter out of range or malformed (answered 400)."""


def install(app: FastAPI) -> None:
    app.add_exception_handler(InvalidFilter, _bad_filter)
    app.add_exception_handler(InvalidRecord, _bad_event)
    app.add_exception_handler(BadParameter, _bad_parameter)
    app.add_exception_handler(PublishFailed, _publish_failed)
    install_common(app, "the app")


async def _bad_filter(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_filter", str(exc))


async def _bad_event(request: Request, exc: Exception) -> JSONResponse:
    # Valid as JSON and as a model, refused by a check that needs the app (its clock).
    return error_response(422, "invalid_event", str(exc))


async def _bad_parameter(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_parameter", str(exc))


async def _publish_failed(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503, "event_not_recorded", f"{exc}; send it again", headers={"Retry-After": "1"}
    )
