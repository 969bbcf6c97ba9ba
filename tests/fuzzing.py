"""Generated bad input against a service's own OpenAPI: every request is refused cleanly.

``refuse_generated_bad_input`` draws requests that break the schema somewhere (schemathesis's
negative mode: a wrong type, a missing field, a string past its pattern, bytes that are not
JSON, a bad header) for every operation of the JSON API, sends each through the service's
``TestClient`` with a valid token (unless the header is the bad part), and holds each answer
to the error contract: a 4xx, JSON ``{error, detail}``, no trace. When the body is the bad
part and the path is valid, the path names an existing index (``pinned``), so that the bad
body meets real state rather than a 404; the caller checks that state is unchanged after.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation

# Enough to reach every operation many times; small enough for a 2-core CI (seconds each).
EXAMPLES = 300


def refuse_generated_bad_input(
    app: FastAPI,
    client: TestClient,
    headers: Mapping[str, str],
    pinned: Mapping[str, str] | None = None,
    examples: int = EXAMPLES,
) -> Counter[tuple[str, str, int]]:
    """Throws ``examples`` generated bad requests at ``app`` through ``client``; fails on the
    first that is not refused cleanly. Returns how often each (method, path, status) came."""
    # From the document, not ``from_asgi``: that would run the app's lifespan a second time,
    # in another event loop, and replace the clients the running one holds.
    schema = schemathesis.openapi.from_dict(app.openapi())
    # The JSON API: a page (``GET /``) ignores query parameters it does not know, as pages do
    # (tracking parameters), and answers HTML.
    operations = [
        op for op in (r.ok() for r in schema.get_all_operations()) if op.path.startswith("/v1/")
    ]
    strategy = st.one_of(
        [op.as_strategy(generation_mode=GenerationMode.NEGATIVE) for op in operations]
    )
    seen: Counter[tuple[str, str, int]] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def one(case) -> None:
        meta = case.meta
        path_valid = meta is not None and not meta.is_negative_at(ParameterLocation.PATH)
        # Only a bad body: a bad query value can serialise to nothing (an empty list), which
        # would leave a valid request to the pinned index.
        body_bad = meta is not None and meta.is_negative_at(ParameterLocation.BODY)
        if pinned and path_valid and body_bad:
            for name, value in pinned.items():
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = value
        # A bad header (the token, mangled) is sent as generated: ours would make it valid.
        header_bad = meta is None or meta.is_negative_at(ParameterLocation.HEADER)
        extra = None if header_bad else dict(headers)
        request = case.as_transport_kwargs(base_url=str(client.base_url), headers=extra)
        body = request.get("data")
        response = client.request(
            request["method"],
            request["url"],
            params=request.get("params"),
            headers=request.get("headers"),
            cookies=request.get("cookies"),
            json=request.get("json"),
            content=body if isinstance(body, bytes | str) else None,
        )
        seen[(request["method"], case.operation.path, response.status_code)] += 1
        shown = (
            f"{request['method']} {request['url']} params={request.get('params')} "
            f"body={request.get('json', body)!r:.300}"
        )
        assert 400 <= response.status_code < 500, (
            f"{shown} was answered {response.status_code}: {response.text[:300]}"
        )
        answer = response.json()
        assert set(answer) == {"error", "detail"}, f"{shown}: {answer}"
        assert isinstance(answer["error"], str) and isinstance(answer["detail"], str), answer
        assert "Traceback" not in response.text, f"{shown}: {response.text[:300]}"

    one()
    return seen
