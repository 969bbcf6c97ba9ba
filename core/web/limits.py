"""A request body over the service's limit is refused (413) before it is read.

A ``Content-Length`` over the limit is answered at once, without reading a byte; a chunked body
(or one longer than its header said) is counted as it arrives and refused at the first chunk
past the limit, so a 24 MiB POST costs at most the limit in memory, and is never parsed.

FastAPI's own ``max_body_size`` answers a plain-text "Content Too Large" in place of whatever
the app answered, which breaks the ``{error, detail}`` contract; this raises an
``HTTPException`` instead, which every service's handler answers in that shape.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nrtrec.core.web.errors import error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            detail = f"a body of {declared} bytes; this service takes at most {self.max_bytes}"
            # The body is left unread, so the connection cannot carry another request.
            answer = error_response(413, "too_large", detail, {"Connection": "close"})
            await answer(scope, receive, send)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    detail = f"the body passed this service's limit of {self.max_bytes} bytes"
                    raise HTTPException(413, detail, {"Connection": "close"})
            return message

        await self.app(scope, counted_receive, send)
