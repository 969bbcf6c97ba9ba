"""The floor of a search over HTTP on this machine: an ASGI app that reads the request and
answers a fixed, empty result, served the way ``nrtrec query-node`` serves the node (uvicorn's
CLI with its defaults: uvloop, httptools, proxy headers), timed with the same client and the
same search bodies as the node. What it costs is what any search through this server stack
costs before the node does anything; where it alone is over half of hnswlib's own p95, a node
behind it that added nothing to hnswlib's search would still be at about 1.5x or more (p95s do
not add exactly; sweep's ``floor_p95_over_hnswlib_p95``)."""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.types import Receive, Scope, Send

from bench.common import LeanClient, ServerProcess, free_port

_ANSWER = b'{"items":[],"model_version":1}'
_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


class FloorProcess(ServerProcess):
    """``app`` under uvicorn on a free loopback port, and a ``LeanClient`` to it."""

    def __init__(self, workdir: Path):
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            f"{__name__}:app",
            "--app-dir",
            str(Path(__file__).resolve().parents[2]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        super().__init__("empty-asgi", argv, workdir, port)
        self.timed = LeanClient("127.0.0.1", port)

    def close(self, timeout_s: float = 30.0) -> None:
        self.timed.close()
        super().close(timeout_s)
