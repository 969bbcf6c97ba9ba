"""``QueryClient``'s deadlines and retries, against a real HTTP server whose answers a test
scripts: a 5xx is retried while the deadline and ``retries`` allow, a 4xx never, and a call
whose deadline has passed sends nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydantic_core import to_json

from nrtrec.query_node.client import NotFound, QueryClient, Refused, Unavailable
from nrtrec.schemas.query_api import SearchRequest
from tests.query_node.helpers import serving

ANSWER = {"items": [{"id": "car", "score": 0.9}], "model_version": 1}
QUERY = SearchRequest(vector=[1.0, 0.0, 0.0], k=1)


class Scripted:
    """An ASGI app answering each request with the next (status, delay) of its script, and the
    last one for ever after; it counts what it was sent."""

    def __init__(self) -> None:
        self.script: list[tuple[int, float]] = [(200, 0.0)]
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        status, delay = self.script[min(self.requests, len(self.script) - 1)]
        self.requests += 1
        await asyncio.sleep(delay)
        body = to_json(ANSWER if status == 200 else {"error": "e", "detail": f"said {status}"})
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Scripted, str]]:
    app = Scripted()
    with serving(app) as url:
        yield app, url


@pytest.fixture
def scripted(server) -> tuple[Scripted, str]:
    app, url = server
    app.requests = 0
    return app, url


def search(url: str, **options) -> object:
    async def call():
        async with QueryClient(url, **options) as client:
            return await client.search("items", QUERY)

    return asyncio.run(call())


def test_an_answer_takes_one_request(scripted):
    app, url = scripted
    app.script = [(200, 0.0)]
    assert search(url).items[0].id == "car"
    assert app.requests == 1


def test_a_5xx_is_retried_until_answered(scripted):
    app, url = scripted
    app.script = [(503, 0.0), (500, 0.0), (200, 0.0)]
    assert search(url, retries=2).items[0].id == "car"
    assert app.requests == 3


def test_retries_run_out(scripted):
    app, url = scripted
    app.script = [(503, 0.0)]
    with pytest.raises(Unavailable, match="answered 503: said 503"):
        search(url, retries=2)
    assert app.requests == 3
    app.requests = 0
    with pytest.raises(Unavailable):
        search(url, retries=0)
    assert app.requests == 1


@pytest.mark.parametrize(("status", "error"), [(400, Refused), (404, NotFound), (422, Refused)])
def test_a_4xx_is_never_retried(scripted, status, error):
    app, url = scripted
    app.script = [(status, 0.0), (200, 0.0)]
    with pytest.raises(error, match=f"said {status}"):
        search(url, retries=2)
    assert app.requests == 1


def test_a_slow_answer_is_unavailable_and_retried_only_within_the_deadline(scripted):
    app, url = scripted
    app.script = [(200, 1.0)]
    with pytest.raises(Unavailable, match="no answer within"):
        search(url, timeout_s=0.3, retries=5)
    # Each attempt gets what is left of the one deadline, not a fresh one: a second attempt
    # may start in the backoff's gap, never all six.
    assert 1 <= app.requests <= 2


def test_a_call_past_its_deadline_sends_nothing(scripted):
    app, url = scripted
    app.script = [(200, 0.0)]
    # aiohttp would read a total timeout of 0 as none at all, and wait for ever.
    with pytest.raises(Unavailable, match="deadline passed"):
        search(url, timeout_s=0.0)
    assert app.requests == 0
