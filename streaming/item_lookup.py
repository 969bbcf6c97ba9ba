"""Item vectors for the user tower, read from the query nodes through the gateway.

The query nodes hold every item's vector per model version; the user-embedding job asks the
gateway for the few it needs (``POST /v1/indexes/{name}/items``) and keeps them a short while,
since a listing's vector changes only when the listing does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

import httpx
import numpy as np
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from nrtrec.streaming.errors import StreamingError


class ItemLookupUnavailable(StreamingError):
    """The gateway did not answer."""


class ItemVectorLookup:
    def __init__(
        self,
        gateway_url: str,
        index_name: str,
        *,
        ttl_s: float,
        max_entries: int = 100_000,
        timeout_s: float = 2.0,
        token: str | None = None,
    ):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=gateway_url, timeout=timeout_s, headers=headers)
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
                vector = np.asarray(item["vector"], np.float32)
                found[item["id"]] = vector
                self._cache[(version, item["id"])] = (now, vector)
                self._cache.move_to_end((version, item["id"]))
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return found

    @retry(
        retry=retry_if_exception_type(ItemLookupUnavailable),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    )
    def _fetch(self, ids: list[str], version: int) -> list[dict]:
        try:
            response = self.client.post(
                f"/v1/indexes/{self.index_name}/items",
                json={"ids": ids, "model_version": version},
            )
        except httpx.HTTPError as e:
            raise ItemLookupUnavailable(f"gateway {self.client.base_url}: {e}") from e
        if response.status_code == 404:
            return []  # no index of this version (yet): no vectors
        if response.status_code >= 500:
            raise ItemLookupUnavailable(f"gateway answered {response.status_code}")
        if response.status_code != 200:
            raise StreamingError(f"item lookup failed: {response.status_code} {response.text}")
        return response.json().get("items", [])

    def close(self) -> None:
        self.client.close()
