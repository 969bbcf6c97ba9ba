"""``QueryClient``: the query-node API (DESIGN.md) at one base URL, a query node or the gateway.

``QueryClient`` is async (aiohttp, one keep-alive session); ``BlockingQueryClient`` makes the
same calls from synchronous code (a Flink job, the bulk build, ``nrtrec up``) on an event loop
of its own. Bodies are the models of ``schemas.query_api``; answers are parsed into them.

Deadlines and retries live here. Every call has a deadline (``timeout_s``: the client's, or the
call's own); an attempt that gets no answer (refused, reset, timed out, a 5xx) is retried with
a short backoff while the deadline and ``retries`` allow. Every call of this API is idempotent
(upserts replace, deletes of missing ids are no-ops, ``PUT`` of an existing spec is a 200), so
a retry never does a thing twice. A 4xx is the caller's mistake and is never retried.

Errors: ``Unavailable`` (no answer in time), ``NotFound`` (404: no such index or version),
``Refused`` (another 4xx, with the server's ``error`` and ``detail``).

This module imports only ``schemas``, the settings and the libraries it needs, so a client is
cheap to load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json, to_json
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from nrtrec.core.settings import Settings
from nrtrec.schemas.query_api import (
    CreateIndexRequest,
    DropResult,
    IndexInfo,
    ItemsResponse,
    LoadRequest,
    LoadResult,
    NodeHealth,
    PromoteRequest,
    SearchRequest,
    SearchResponse,
    SnapshotResult,
    UpsertItem,
    WriteResult,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_INDEX_LIST = TypeAdapter(list[IndexInfo])
# The wait after a failed first attempt; tenacity doubles it for the next ones, up to 1 s.
_FIRST_BACKOFF_S = 0.05


class QueryApiError(Exception):
    """Base of what a ``QueryClient`` call raises."""


class Unavailable(QueryApiError):
    """No answer within the deadline: refused, reset, timed out, or a 5xx."""


class NotFound(QueryApiError):
    """404: the index (or version) is not there."""


class Refused(QueryApiError):
    """Another 4xx: the request was the caller's mistake. ``error`` and ``detail`` are the
    server's ``{error, detail}``."""

    def __init__(self, message: str, status: int, error: str, detail: str):
        super().__init__(message)
        self.status, self.error, self.detail = status, error, detail


class QueryClient:
    """Async client of one base URL (a node or the gateway). Made inside a running event loop
    (an app's lifespan); ``close`` it there."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        max_connections: int = 64,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=max_connections),
            # Our services are reached directly; a proxy from the environment must not sit between.
            trust_env=False,
        )

    @classmethod
    def of(cls, settings: Settings, **options: Any) -> QueryClient:
        """A client of the query API as ``settings`` name it (``gateway.url``, the token)."""
        return cls(settings.gateway.url, token=settings.token, **options)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> QueryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- reads ------------------------------------------------------------------------------

    async def node_health(self, *, timeout_s: float | None = None) -> NodeHealth:
        """``GET /healthz`` of a query node (not of a gateway): the deltas it has applied."""
        _, raw = await self._call("GET", "/healthz", None, timeout_s)
        return _parse(NodeHealth, raw)

    async def indexes(self, *, timeout_s: float | None = None) -> list[IndexInfo]:
        """``GET /v1/indexes``: every index version with its item count."""
        _, raw = await self._call("GET", "/v1/indexes", None, timeout_s)
        return _INDEX_LIST.validate_json(raw)

    async def search(
        self,
        name: str,
        request: SearchRequest,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> SearchResponse:
        body = request.model_dump(exclude_none=True)
        _, raw = await self._call("POST", f"/v1/indexes/{name}/search", body, timeout_s, retries)
        return _parse(SearchResponse, raw)

    async def items(
        self,
        name: str,
        ids: Sequence[str],
        model_version: int | None = None,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> ItemsResponse:
        """``POST /v1/indexes/{name}/items``: the stored items of ``ids`` (unknown ones absent)."""
        body: dict[str, Any] = {"ids": list(ids)}
        if model_version is not None:
            body["model_version"] = model_version
        _, raw = await self._call("POST", f"/v1/indexes/{name}/items", body, timeout_s, retries)
        return _parse(ItemsResponse, raw)

    # ---- writes and index changes (need the token where one is configured) -----------------

    async def create_index(
        self, name: str, request: CreateIndexRequest, *, timeout_s: float | None = None
    ) -> tuple[IndexInfo, bool]:
        """The index, and whether it was created now (201) rather than there already (200)."""
        body = request.model_dump(exclude_none=True)
        status, raw = await self._call("PUT", f"/v1/indexes/{name}", body, timeout_s)
        return _parse(IndexInfo, raw), status == 201

    async def promote(
        self, name: str, model_version: int, *, timeout_s: float | None = None
    ) -> IndexInfo:
        """Serve a building version (``CreateIndexRequest.serving``); a served one stays so."""
        return await self._set_state(name, "promote", model_version, timeout_s)

    async def hold_back(
        self, name: str, model_version: int, *, timeout_s: float | None = None
    ) -> IndexInfo:
        """Stop serving a version (it stays, filled, until dropped or promoted again)."""
        return await self._set_state(name, "hold-back", model_version, timeout_s)

    async def _set_state(
        self, name: str, action: str, model_version: int, timeout_s: float | None
    ) -> IndexInfo:
        body = PromoteRequest(model_version=model_version).model_dump()
        _, raw = await self._call("POST", f"/v1/indexes/{name}/{action}", body, timeout_s)
        return _parse(IndexInfo, raw)

    async def drop_index(
        self, name: str, model_version: int | None = None, *, timeout_s: float | None = None
    ) -> DropResult:
        path = f"/v1/indexes/{name}"
        if model_version is not None:
            path += f"?model_version={int(model_version)}"
        _, raw = await self._call("DELETE", path, None, timeout_s)
        return _parse(DropResult, raw)

    async def upsert(
        self,
        name: str,
        items: Sequence[UpsertItem],
        model_version: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> WriteResult:
        body: dict[str, Any] = {"items": [item.model_dump() for item in items]}
        if model_version is not None:
            body["model_version"] = model_version
        _, raw = await self._call("POST", f"/v1/indexes/{name}/upsert", body, timeout_s)
        return _parse(WriteResult, raw)

    async def delete(
        self,
        name: str,
        ids: Sequence[str],
        model_version: int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> WriteResult:
        body: dict[str, Any] = {"ids": list(ids)}
        if model_version is not None:
            body["model_version"] = model_version
        _, raw = await self._call("POST", f"/v1/indexes/{name}/delete", body, timeout_s)
        return _parse(WriteResult, raw)

    async def snapshot(
        self, name: str, model_version: int | None = None, *, timeout_s: float | None = None
    ) -> SnapshotResult:
        path = f"/v1/indexes/{name}/snapshot"
        if model_version is not None:
            path += f"?model_version={int(model_version)}"
        _, raw = await self._call("POST", path, None, timeout_s)
        return _parse(SnapshotResult, raw)

    async def load(
        self, name: str, request: LoadRequest, *, timeout_s: float | None = None
    ) -> LoadResult:
        """Hot-swap a snapshot into the node (a node's API; the gateway has no ``load``)."""
        body = request.model_dump(exclude_none=True)
        _, raw = await self._call("POST", f"/v1/indexes/{name}/load", body, timeout_s)
        return _parse(LoadResult, raw)

    # ---- one call ---------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        timeout_s: float | None,
        retries: int | None = None,
    ) -> tuple[int, bytes]:
        """The 2xx status and body; attempts that got no answer are retried until the deadline."""
        content = None if body is None else to_json(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout_s if timeout_s is None else timeout_s)
        try:
            # The first attempt outside tenacity: its retry state costs ~18 µs a call, about a
            # tenth of this client's own work on a search, and most calls need no retry.
            return await self._attempt(method, path, content, deadline - loop.time())
        except _Late:
            raise
        except Unavailable as e:
            last = e
            attempts = self.retries if retries is None else retries
            if attempts <= 0:
                raise
        await asyncio.sleep(_FIRST_BACKOFF_S)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Unavailable) & retry_if_not_exception_type(_Late),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=_FIRST_BACKOFF_S, max=1.0),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _Late(f"{last}; the deadline passed before another attempt")
                try:
                    return await self._attempt(method, path, content, remaining)
                except Unavailable as e:
                    last = e
                    raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(
        self, method: str, path: str, content: bytes | None, timeout_s: float
    ) -> tuple[int, bytes]:
        if timeout_s <= 0:
            # aiohttp reads a total of 0 or less as no timeout at all.
            raise _Late(f"{method} {path}: the deadline passed before an answer")
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                data=content,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                status = response.status
                raw = await response.read()
        except TimeoutError:
            raise Unavailable(
                f"{method} {path}: no answer within {timeout_s * 1000:.0f} ms"
            ) from None
        except aiohttp.ClientError as e:
            raise Unavailable(f"{method} {path}: {type(e).__name__}: {e}") from None
        if status < 300:
            return status, raw
        error, detail = error_of(raw)
        message = f"{method} {path} answered {status}: {detail}"
        if status == 404:
            raise NotFound(message)
        if status >= 500:
            raise Unavailable(message)
        raise Refused(message, status, error, detail)


class _Late(Unavailable):
    """The deadline passed between attempts (not retried again: it would be late too)."""


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise Unavailable(f"not a {model.__name__}: {e}") from None


def error_of(raw: bytes) -> tuple[str, str]:
    """The ``{error, detail}`` of an error answer, or what text there is."""
    try:
        body = from_json(raw)
    except ValueError:
        return "http_error", raw[:200].decode(errors="replace")
    if isinstance(body, dict) and "detail" in body:
        return str(body.get("error", "http_error")), str(body["detail"])[:500]
    return "http_error", raw[:200].decode(errors="replace")


class BlockingQueryClient:
    """A ``QueryClient`` for synchronous code: each call runs on the client's own event loop in
    a thread of its own and blocks until it is answered. ``close`` stops both."""

    def __init__(self, base_url: str, **options: Any):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="query-client", daemon=True
        )
        self._thread.start()

        async def make() -> QueryClient:
            return QueryClient(base_url, **options)

        self._client = self._run(make())
        self.base_url = self._client.base_url

    @classmethod
    def of(cls, settings: Settings, **options: Any) -> BlockingQueryClient:
        """A client of the query API as ``settings`` name it (``gateway.url``, the token)."""
        return cls(settings.gateway.url, token=settings.token, **options)

    def _run(self, call: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()  # type: ignore[arg-type]

    def node_health(self, **options: Any) -> NodeHealth:
        return self._run(self._client.node_health(**options))

    def indexes(self, **options: Any) -> list[IndexInfo]:
        return self._run(self._client.indexes(**options))

    def search(self, name: str, request: SearchRequest, **options: Any) -> SearchResponse:
        return self._run(self._client.search(name, request, **options))

    def items(self, name: str, ids: Sequence[str], *args: Any, **options: Any) -> ItemsResponse:
        return self._run(self._client.items(name, ids, *args, **options))

    def create_index(
        self, name: str, request: CreateIndexRequest, **options: Any
    ) -> tuple[IndexInfo, bool]:
        return self._run(self._client.create_index(name, request, **options))

    def promote(self, name: str, model_version: int, **options: Any) -> IndexInfo:
        return self._run(self._client.promote(name, model_version, **options))

    def hold_back(self, name: str, model_version: int, **options: Any) -> IndexInfo:
        return self._run(self._client.hold_back(name, model_version, **options))

    def drop_index(self, name: str, *args: Any, **options: Any) -> DropResult:
        return self._run(self._client.drop_index(name, *args, **options))

    def upsert(self, name: str, items: Sequence[UpsertItem], *args: Any, **options: Any):
        return self._run(self._client.upsert(name, items, *args, **options))

    def delete(self, name: str, ids: Sequence[str], *args: Any, **options: Any) -> WriteResult:
        return self._run(self._client.delete(name, ids, *args, **options))

    def snapshot(self, name: str, *args: Any, **options: Any) -> SnapshotResult:
        return self._run(self._client.snapshot(name, *args, **options))

    def load(self, name: str, request: LoadRequest, **options: Any) -> LoadResult:
        return self._run(self._client.load(name, request, **options))

    def close(self) -> None:
        if not self._loop.is_running():
            return
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> BlockingQueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
