"""Item vectors for the user tower, read from the query nodes through the query API.

The query nodes hold every item's vector per model version; the user-embedding job asks the
gateway for the few it needs (``POST /v1/indexes/{name}/items``, through the query-API client,
which retries a call that got no answer) and keeps them a short while, since a listing's
vector changes only when the listing does.

A gateway's answer can be partial: a shard that could not answer leaves its items out. Those
ids are asked again for a while (as is a gateway that does not answer, or answers a 5xx when no
shard did), and then the look-up fails. It must not hand back the other shards' items alone: a
user vector over part of the history would be stored as if it were the whole one, next to the
full list of recent items, and nothing would correct it before the user's next click.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from nrtrec.query_node.client import BlockingQueryClient, NotFound, QueryApiError, Unavailable
from nrtrec.schemas.query_api import ItemsResponse, StoredItem
from nrtrec.streaming.errors import StreamingError

log = logging.getLogger("nrtrec.streaming.item_lookup")


class ItemLookupUnavailable(StreamingError):
    """The gateway did not answer, or a shard stayed unable to answer for its items."""


class _ShardsMissing(Exception):
    def __init__(self, shards: list[int]):
        self.shards = shards


class ItemVectorLookup:
    def __init__(
        self,
        client: BlockingQueryClient,
        index_name: str,
        *,
        ttl_s: float,
        partial_wait_s: float = 20.0,
        max_entries: int = 100_000,
    ):
        self.client = client
        self.index_name = index_name
        self.ttl_s = ttl_s
        self.partial_wait_s = partial_wait_s
        self.max_entries = max_entries
        # Partial answers had, each asked again or failed on (a count for tests and logs).
        self.partial_answers = 0
        self._cache: OrderedDict[tuple[int, str], tuple[float, np.ndarray]] = OrderedDict()

    def vectors(self, ids: Iterable[str], version: int) -> dict[str, np.ndarray]:
        """The vectors of ``ids`` in ``version``'s index; ids it lacks are left out. Raises
        ``ItemLookupUnavailable`` when the gateway, or a shard behind it, does not answer."""
        now = time.monotonic()
        found: dict[str, np.ndarray] = {}
        missing = []
        for item_id in dict.fromkeys(ids):
            hit = self._cache.get((version, item_id))
            if hit and now - hit[0] < self.ttl_s:
                found[item_id] = hit[1]
            else:
                missing.append(item_id)
        if missing:
            for item in self._fetch(missing, version):
                vector = np.asarray(item.vector, np.float32)
                found[item.id] = vector
                self._cache[(version, item.id)] = (now, vector)
                self._cache.move_to_end((version, item.id))
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return found

    def _fetch(self, ids: list[str], version: int) -> list[StoredItem]:
        """The items of ``ids`` the index holds. After a partial answer the ids not found are
        asked again (those of the shards that answered too: the answer does not say which are
        whose), with a growing pause, for up to ``partial_wait_s``; so is the whole call when
        the gateway does not answer (after the client's own retries)."""
        found: dict[str, StoredItem] = {}
        retrying = Retrying(
            stop=stop_after_delay(self.partial_wait_s),
            wait=wait_exponential(multiplier=0.25, max=2.0),
            retry=retry_if_exception_type((_ShardsMissing, Unavailable)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    answer = self._ask([i for i in ids if i not in found], version)
                    found.update((item.id, item) for item in answer.items)
                    if answer.partial:
                        self.partial_answers += 1
                        raise _ShardsMissing(answer.failed_shards or [])
        except _ShardsMissing as e:
            raise ItemLookupUnavailable(
                f"item lookup at {self.client.base_url}: shard(s) {e.shards} did not answer "
                f"for {self.partial_wait_s:g}s (partial answers)"
            ) from None
        except QueryApiError as e:
            raise ItemLookupUnavailable(f"item lookup at {self.client.base_url}: {e}") from e
        return list(found.values())

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _ShardsMissing):
            what = f"shard(s) {error.shards} did not answer"
        else:
            what = str(error)
        log.warning("item lookup: %s; asking again (try %d)", what, state.attempt_number + 1)

    def _ask(self, ids: list[str], version: int) -> ItemsResponse:
        try:
            return self.client.items(self.index_name, ids, version)
        except NotFound:
            # No index of this version (yet): no vectors.
            return ItemsResponse(items=[], model_version=version)

    def close(self) -> None:
        self.client.close()
