"""``ShardedQueryClient``: the reads of the query API made over the shards themselves.

The same calls and answers as a ``QueryClient`` of the gateway (``indexes``, ``search``,
``items``; ``partial`` and ``failed_shards`` included), but the fan-out runs in the caller's
process (``query_node.fanout``), so a read costs one HTTP hop instead of two and no gateway
parses and re-serialises it. Replicas fail over within the call's deadline, as in the gateway,
in place of a ``QueryClient``'s retries. The errors are the client's: ``Unavailable``,
``NotFound``, ``Refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from nrtrec.core.settings import Settings
from nrtrec.query_node.client.http import NotFound, Refused, Unavailable, error_of
from nrtrec.query_node.fanout import Attempt, FanOut, FanOutError, ShardFailed, ShardRejected
from nrtrec.schemas.errors import InvalidFilter
from nrtrec.schemas.query_api import IndexInfo, ItemsResponse, SearchRequest, SearchResponse

M = TypeVar("M", bound=BaseModel)

# The share of a call's deadline its shards get: a shard too slow for it is left out (a partial
# answer from the others) before the whole call runs out, which would leave out every shard.
# The rest bounds what follows the shards' answers (a re-ask of a shard ahead by a version).
SHARD_SHARE = 0.8

_INDEX_LIST = TypeAdapter(list[IndexInfo])


class ShardedQueryClient:
    """Reads over ``settings.gateway.shards``; made with ``await ShardedQueryClient.open(...)``
    inside a running event loop (an app's lifespan), which probes the replicas and keeps
    probing them; ``close`` it there."""

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float = 5.0,
        on_failure: Callable[[int, Attempt], None] | None = None,
        on_partial: Callable[[str, int], None] | None = None,
    ):
        self.timeout_s = timeout_s
        self._fan_out = FanOut(settings)
        # Metrics hooks: per failed call to a replica, per search answered without a shard.
        if on_failure is not None:
            self._fan_out.on_failure = on_failure
        if on_partial is not None:
            self._fan_out.on_partial = on_partial
        self.base_url = " | ".join(
            ",".join(r.url for r in shard.replicas) for shard in self._fan_out.shards
        )

    @classmethod
    async def open(cls, settings: Settings, **options: Any) -> ShardedQueryClient:
        client = cls(settings, **options)
        await client._fan_out.start()
        return client

    async def close(self) -> None:
        await self._fan_out.close()

    def health(self) -> dict[str, Any]:
        """Every replica as the background probes see it (the gateway's ``/healthz`` body)."""
        return self._fan_out.health()

    async def indexes(self, *, timeout_s: float | None = None) -> list[IndexInfo]:
        """``GET /v1/indexes`` merged over the shards (counts summed)."""
        deadline = self._deadline(timeout_s)
        with _client_errors("GET /v1/indexes"):
            async with asyncio.timeout(deadline):
                merged, _ = await self._fan_out.list_indexes(deadline * SHARD_SHARE)
        try:
            return _INDEX_LIST.validate_python(merged)
        except ValidationError as e:
            raise Unavailable(f"not a list of IndexInfo: {e}") from None

    async def search(
        self,
        name: str,
        request: SearchRequest,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> SearchResponse:
        """Every shard's top k merged. ``retries`` is accepted for a ``QueryClient``'s
        signature; failover between replicas happens within the deadline instead."""
        deadline = self._deadline(timeout_s)
        with _client_errors(f"POST /v1/indexes/{name}/search"):
            async with asyncio.timeout(deadline):
                answer = await self._fan_out.search(name, request, deadline * SHARD_SHARE)
        return _parse(SearchResponse, answer)

    async def items(
        self,
        name: str,
        ids: Sequence[str],
        model_version: int | None = None,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> ItemsResponse:
        """``POST /v1/indexes/{name}/items``, each id asked of the shard that owns it."""
        deadline = self._deadline(timeout_s)
        with _client_errors(f"POST /v1/indexes/{name}/items"):
            async with asyncio.timeout(deadline):
                answer = await self._fan_out.items(
                    name, list(ids), model_version, deadline * SHARD_SHARE
                )
        return _parse(ItemsResponse, answer)

    def _deadline(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else timeout_s


@contextlib.contextmanager
def _client_errors(what: str) -> Iterator[None]:
    """The fan-out's errors as a ``QueryClient`` raises them for the same answer."""
    try:
        yield
    except ShardRejected as e:
        status = e.response.status_code
        error, detail = error_of(e.response.content)
        message = f"{what}: shard {e.shard} answered {status}: {detail}"
        if status == 404:
            raise NotFound(message) from None
        raise Refused(message, status, error, detail) from None
    except InvalidFilter as e:
        raise Refused(f"{what}: {e}", 422, e.code, str(e)) from None
    except (ShardFailed, FanOutError) as e:
        raise Unavailable(f"{what}: {e}") from None
    except TimeoutError:
        raise Unavailable(f"{what}: no whole answer within the deadline") from None


def _parse(model: type[M], value: dict[str, Any]) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise Unavailable(f"not a {model.__name__}: {e}") from None
