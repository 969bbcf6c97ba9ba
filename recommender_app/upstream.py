"""The app's calls to the gateway (the query-node HTTP API) over one keep-alive client.

Every call takes a total timeout (httpx's own are per read/write/connect). Failures are one of
three exceptions: :class:`Unavailable` (refused, reset, timed out, or a 5xx: say so and degrade),
:class:`NotFound` (the index or version is not there: try another), :class:`Rejected` (another
4xx: a bug of ours or bad data, logged and degraded, never passed on as the caller's mistake).
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from pydantic_core import from_json, to_json

Json = dict[str, Any]


class UpstreamError(Exception):
    """A gateway call that gave no usable answer."""


class Unavailable(UpstreamError):
    pass


class NotFound(UpstreamError):
    pass


class Rejected(UpstreamError):
    pass


class GatewayClient:
    def __init__(self, base_url: str, max_connections: int = 64):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Content-Type": "application/json"},
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # The gateway is reached directly; a proxy from the environment must not sit between.
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_indexes(self, timeout_s: float) -> list[Json]:
        return await self._call("GET", "/v1/indexes", None, timeout_s)

    async def search(self, index: str, body: Json, timeout_s: float) -> Json:
        """``{items: [{id, score, attributes?}], model_version, partial?, failed_shards?}``."""
        return await self._call("POST", f"/v1/indexes/{index}/search", body, timeout_s)

    async def items(
        self, index: str, ids: list[str], model_version: int | None, timeout_s: float
    ) -> Json:
        """``{items: [{id, vector, attributes}], model_version, partial?, failed_shards?}``."""
        body: Json = {"ids": ids}
        if model_version is not None:
            body["model_version"] = model_version
        return await self._call("POST", f"/v1/indexes/{index}/items", body, timeout_s)

    async def _call(self, method: str, path: str, body: Json | None, timeout_s: float) -> Any:
        content = None if body is None else to_json(body)
        try:
            with anyio.fail_after(timeout_s):
                response = await self._client.request(
                    method, path, content=content, timeout=timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):
            raise Unavailable(
                f"{method} {path}: no answer within {timeout_s * 1000:.0f} ms"
            ) from None
        except httpx.HTTPError as e:
            raise Unavailable(f"{method} {path}: {type(e).__name__}: {e}") from None
        status = response.status_code
        if status == 200:
            return from_json(response.content)
        detail = _detail(response)
        if status == 404:
            raise NotFound(f"{method} {path}: {detail}")
        if status >= 500:
            raise Unavailable(f"{method} {path} answered {status}: {detail}")
        raise Rejected(f"{method} {path} answered {status}: {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body = from_json(response.content)
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return response.text[:200]
