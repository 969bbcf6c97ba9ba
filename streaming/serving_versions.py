"""Which model versions the user-embedding job writes: those both ends serve.

A version is written when Triton serves its encoders *and* the gateway lists its index as
serving. During a rollout Triton serves the new version before its index is complete (the item
job must publish its deltas from the start); the index is listed ``serving: false`` until the
rollout promotes it. Writing only promoted versions keeps every served version's user vectors
fresh (an A/B arm on the old one too) and never writes a vector whose items could not be looked
up yet. ``inference.model_version``, when set, pins the one version written.
"""

from __future__ import annotations

import logging
import time

from nrtrec.inference.client import Encoder
from nrtrec.query_node.client import BlockingQueryClient, QueryApiError
from nrtrec.streaming.errors import StreamingError

log = logging.getLogger(__name__)


class ServingVersionsUnavailable(StreamingError):
    """The gateway's listing could not be read, and there was none before."""


class ServingVersions:
    def __init__(
        self,
        encoder: Encoder,
        client: BlockingQueryClient,
        index_name: str,
        *,
        ttl_s: float,
        pinned: int | None = None,
    ):
        self.encoder = encoder
        self.client = client
        self.index_name = index_name
        self.ttl_s = ttl_s
        self.pinned = pinned
        self._listed: tuple[float, set[int]] | None = None

    def current(self) -> list[int]:
        """Oldest first. When no served encoder version has a serving index (a deployment
        whose index is not created yet), the newest served encoder: its vectors wait for
        nothing but the items' lookup."""
        if self.pinned is not None:
            return [self.encoder.resolve(self.pinned)]
        encoders = self.encoder.versions()
        both = sorted(set(encoders) & self._serving_indexes())
        if both:
            return both
        return [self.encoder.resolve(None)]

    def _serving_indexes(self) -> set[int]:
        now = time.monotonic()
        if self._listed is not None and now - self._listed[0] < self.ttl_s:
            return self._listed[1]
        try:
            listing = self.client.indexes()
        except QueryApiError as e:
            if self._listed is None:
                raise ServingVersionsUnavailable(
                    f"index listing at {self.client.base_url}: {e}"
                ) from e
            log.warning("index listing failed; using the one from before: %s", e)
            self._listed = (now, self._listed[1])
            return self._listed[1]
        serving = {i.model_version for i in listing if i.name == self.index_name and i.serving}
        self._listed = (now, serving)
        return serving
