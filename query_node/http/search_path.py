"""The search hot path: ``POST /v1/indexes/{name}/search`` answered below FastAPI's routing.

A search is the node's most frequent request and its cheapest piece of work: at ef 64 the graph
walk is ~0.1 ms, and FastAPI's layers around it (exception and exit-stack middleware, route
matching, solving the handler's dependencies, the path-parameter check) cost as much again
(py-spy, ``bench/results/profiles/``). ``SearchFastPath`` is an ASGI middleware that answers a
well-formed search itself and hands everything else to the app, unchanged: a body that does not
parse, an unknown index, a ``k`` out of range, any error. Those requests are replayed into the
app with their body, so every error keeps the route's ``{error, detail}`` answer and status,
and the route (``indexes.search``) stays the API's one documented definition. Both answer a
search with ``answer_search``, so the two cannot drift.

It sits inside ``LatencyMiddleware`` and ``BodyLimitMiddleware`` (a search is timed, a body
over the limit is refused, exactly as before) and labels its requests with the route's
template, as the router would.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nrtrec.ann import IndexBusy
from nrtrec.query_node.http.metrics import Metrics
from nrtrec.query_node.node import QueryNode
from nrtrec.schemas.query_api import INDEX_NAME_PATTERN, SearchRequest

SEARCH_ROUTE = "/v1/indexes/{name}/search"
_SEARCH_PATH = re.compile(
    "/v1/indexes/(" + INDEX_NAME_PATTERN.removeprefix("^").removesuffix("$") + ")/search"
)
_JSON_HEADERS = [(b"content-type", b"application/json")]


async def answer_search(node: QueryNode, metrics: Metrics, name: str, body: SearchRequest) -> bytes:
    """The JSON answer (``SearchResponse``'s shape) of one search. An index nobody writes is
    searched on the event loop: the thread-pool hop costs more than most searches; one being
    written is waited for in a worker, never on the event loop."""
    run_args: dict[str, Any] = {
        "ef": body.ef,
        "filter": body.filter,
        "model_version": body.model_version,
        "with_attributes": body.include_attributes,
    }
    try:
        index, result = node.search(name, body.vector, body.k, wait=False, **run_args)
    except IndexBusy:
        index, result = await run_in_threadpool(
            lambda: node.search(name, body.vector, body.k, **run_args)
        )
    metrics.searches.labels(index.name, result.strategy.value).inc()
    # Serialised straight to JSON, skipping a model per hit and a re-validation of the answer.
    if body.include_attributes:
        hits = [{"id": h.id, "score": h.score, "attributes": h.attributes} for h in result.hits]
    else:
        hits = [{"id": h.id, "score": h.score} for h in result.hits]
    return to_json({"items": hits, "model_version": index.model_version})


class SearchFastPath:
    def __init__(self, app: ASGIApp, route: BaseRoute | None = None):
        self.app = app
        # What LatencyMiddleware labels the request with (the router sets it on the others).
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _SEARCH_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
        except Exception as e:
            # BodyLimitMiddleware's 413, raised while reading: the app's handlers answer it.
            await self.app(scope, _replay(messages, receive, e), send)
            return
        if messages[-1]["type"] == "http.request":
            state = scope["state"]
            answer = await self._answer(state["node"], state["metrics"], match[1], messages)
            if answer is not None:
                scope["route"] = self.route
                await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
                await send({"type": "http.response.body", "body": answer})
                return
        # Not ours to answer (or the client left): the app sees the request as it came.
        await self.app(scope, _replay(messages, receive), send)

    @staticmethod
    async def _answer(
        node: QueryNode, metrics: Metrics, name: str, messages: list[Message]
    ) -> bytes | None:
        body = b"".join(m.get("body", b"") for m in messages)
        try:
            request = SearchRequest.model_validate_json(body)
            return await answer_search(node, metrics, name, request)
        except Exception:
            # Invalid, unknown, out of range or worse: the app answers it again, with the error
            # its handlers give. A search changes nothing, so running it twice is harmless.
            return None


def _replay(messages: list[Message], receive: Receive, error: Exception | None = None) -> Receive:
    """``receive`` as the app would have seen it: the messages read already, then the error
    reading raised, or the rest of the stream."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        if error is not None:
            raise error
        return await receive()

    return replayed
