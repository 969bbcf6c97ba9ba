"""``QueryReader``: the reads a ``QueryClient`` and a ``ShardedQueryClient`` both make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from nrtrec.schemas.query_api import IndexInfo, ItemsResponse, SearchRequest, SearchResponse


class QueryReader(Protocol):
    base_url: str

    async def indexes(self, *, timeout_s: float | None = None) -> list[IndexInfo]: ...

    async def search(
        self,
        name: str,
        request: SearchRequest,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> SearchResponse: ...

    async def items(
        self,
        name: str,
        ids: Sequence[str],
        model_version: int | None = None,
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
    ) -> ItemsResponse: ...

    async def close(self) -> None: ...
