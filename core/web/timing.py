"""Request latency per route template, for every nrtrec HTTP service."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LatencyMiddleware:
    """Times every HTTP request under its route template (``/v1/indexes/{name}/search``)
    into a histogram labelled method, path and status."""

    def __init__(self, app: ASGIApp, request_seconds: Histogram):
        self.app = app
        self.request_seconds = request_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so probes cannot grow the series without bound.
            path = getattr(route, "path", None) or "unmatched"
            self.request_seconds.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - start
            )
