"""Item vectors for the user tower, read from the query nodes through the query API.

The query nodes hold every item's vector per model version; the user-embedding job asks the
gateway for the few it needs (``POST /v1/indexes/{name}/items``, through the query-API client,
which retries a call that got no answer) and keeps them a short while, since a listing's
vector changes only when the listing does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from nrtrec.query_node.client import BlockingQueryClient, NotFound, QueryApiError
from nrtrec.streaming.errors import StreamingError


class ItemLookupUnavailable(StreamingError):
    """The gateway did not answer."""


class ItemVectorLookup:
    def __init__(
        self,
        client: BlockingQueryClient,
        index_name: str,
        *,
        ttl_s: float,
        max_entries: int = 100_000,
    ):
        self.client = client
        self.index_name = index_name
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[int, str], tuple[float, np.ndarray]] = OrderedDict()

    def vectors(self, ids: Iterable[str], version: int) -> dict[str, np.ndarray]:
        """The vectors of ``ids`` in ``version``'s index; ids it lacks are left out."""
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

    def _fetch(self, ids: list[str], version: int):
        try:
            return self.client.items(self.index_name, ids, version).items
        except NotFound:
            return []  # no index of this version (yet): no vectors
        except QueryApiError as e:
            raise ItemLookupUnavailable(f"item lookup at {self.client.base_url}: {e}") from e

    def close(self) -> None:
        self.client.close()
