"""``FanOut``: the shards of ``settings.gateway``, their replicas' health, and the reads over them.

A search goes to one replica of every shard and the answers are merged; an items look-up goes to
the shard that owns each id (``schemas.partitioning``); a listing to one replica of every shard.
The gateway service is a ``FanOut`` plus the writes; the recommender app embeds one through
``ShardedQueryClient`` so that its reads skip the gateway's hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from pydantic_core import from_json, to_json

from nrtrec.core.settings import Settings
from nrtrec.query_node.fanout.errors import (
    Attempt,
    MetricUnknown,
    ShardFailed,
    ShardRejected,
    ShardsFailed,
)
from nrtrec.query_node.fanout.merge import merge_hits, merge_listings
from nrtrec.query_node.fanout.shards import Replica, Shard, Upstream
from nrtrec.schemas.filters import parse_filter
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.schemas.query_api import Metric, SearchRequest

log = logging.getLogger(__name__)

Json = dict[str, Any]
Failures = list[ShardFailed | ShardRejected]


def _no_failure(shard: int, attempt: Attempt) -> None:
    pass


def _no_partial(index: str, shard: int) -> None:
    pass


class FanOut:
    """The shard map, the replicas' health and the reads; ``start`` it in a running event loop
    (an app's lifespan) and ``close`` it there.

    ``on_failure(shard, attempt)`` is called for every failed call to a replica and
    ``on_partial(index, shard)`` for every search answered without a shard (metrics count them;
    set them before ``start``).
    """

    def __init__(
        self,
        settings: Settings,
        on_failure: Callable[[int, Attempt], None] = _no_failure,
        on_partial: Callable[[str, int], None] = _no_partial,
    ):
        gw = settings.gateway
        if not gw.shards:
            raise ValueError("the fan-out needs at least one shard (settings.gateway.shards)")
        for i, urls in enumerate(gw.shards):
            if not urls:
                raise ValueError(f"shard {i} lists no replica")
            for url in urls:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"shard {i}: replica URL {url!r} must start with http://")
        self.settings = settings
        self.shards = [
            Shard(i, [Replica(i, url.rstrip("/")) for url in urls])
            for i, urls in enumerate(gw.shards)
        ]
        self.shard_map = ShardMap.of(
            len(self.shards), gw.num_partitions or settings.kafka.partitions, gw.shard_partitions
        )
        self.on_failure = on_failure
        self.on_partial = on_partial
        self._metric_of: dict[tuple[str, int], Metric] = {}
        self._upstream: Upstream | None = None
        self._health_task: asyncio.Task[None] | None = None

    # ---- life cycle -----------------------------------------------------------------------

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the fan-out is not started (its app's lifespan starts it)")
        return self._upstream

    async def start(self) -> None:
        gw = self.settings.gateway
        token = gw.upstream_token if gw.upstream_token is not None else self.settings.token
        # Bodies are JSON serialised here, sent as bytes.
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        client = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=gw.max_connections),
            # Nodes are reached directly; a proxy from the environment must not sit between.
            trust_env=False,
        )
        self._upstream = Upstream(
            self.shards,
            client,
            gw.request_timeout_s,
            gw.write_timeout_s,
            on_failure=self.on_failure,
        )
        await self._upstream.check_health(gw.request_timeout_s)
        down = [r.url for r in self._upstream.replicas if not r.up]
        if down:
            log.warning("replicas down at start: %s", ", ".join(down))
        self._health_task = asyncio.create_task(self._health_loop(), name="fan-out-health")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def _health_loop(self) -> None:
        gw = self.settings.gateway
        while True:
            await asyncio.sleep(gw.health_interval_s)
            try:
                await self.upstream.check_health(gw.request_timeout_s)
            except Exception:
                log.exception("health check round failed")

    def health(self) -> Json:
        shards = [
            {
                "shard": shard.index,
                "up": shard.up,
                "replicas": [
                    {"url": r.url, "up": r.up} | ({} if r.up else {"reason": r.reason})
                    for r in shard.replicas
                ],
            }
            for shard in self.shards
        ]
        status = "ok" if all(shard.up for shard in self.shards) else "degraded"
        return {"status": status, "shards": shards}

    # ---- reads ----------------------------------------------------------------------------

    async def list_indexes(self, timeout_s: float | None = None) -> tuple[list[Json], list[int]]:
        """Merged listing (one replica per shard) and the shards that could not answer."""
        outcomes = await asyncio.gather(
            *(
                self.upstream.read(s, "GET", "/v1/indexes", timeout_s=timeout_s)
                for s in self.shards
            ),
            return_exceptions=True,
        )
        listings, failed = [], []
        for outcome in outcomes:
            if isinstance(outcome, ShardFailed):
                failed.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                listings.append(from_json(outcome.content))
        if not listings:
            raise ShardsFailed(failed)
        merged = merge_listings(listings)
        for entry in merged:
            self._metric_of[(entry["name"], entry["model_version"])] = Metric(entry["metric"])
        return merged, [f.shard for f in failed]

    async def metric_of(self, name: str, model_version: int) -> Metric:
        """The index's metric, which orders the merge; learned from listings and from index
        changes made through this gateway (an index re-created with another metric directly on
        the nodes is noticed once it is dropped through the gateway, or at a restart)."""
        metric = self._metric_of.get((name, model_version))
        if metric is None:
            await self.list_indexes()
            metric = self._metric_of.get((name, model_version))
        if metric is None:
            raise MetricUnknown(f"no shard lists index {name!r} version {model_version}")
        return metric

    async def search(self, name: str, body: SearchRequest, timeout_s: float | None = None) -> Json:
        """Every shard's top k merged into the top k; a shard that cannot answer is left out
        and named (``partial``), unless none can."""
        path = f"/v1/indexes/{name}/search"
        # Refused here, as each shard would, rather than fanned out to be refused N times.
        parse_filter(body.filter, self.settings.query_node.filter_limits())
        request = body.model_dump(exclude_none=True)
        if not body.include_attributes:
            # Left out when off, so nodes that predate the field still accept the request.
            del request["include_attributes"]

        asked = to_json(request)  # the same bytes for every shard

        def payload(shard: Shard, version: int | None) -> bytes:
            return asked if version is None else to_json({**request, "model_version": version})

        answers, failed, version = await self._one_version(
            self.shards, path, payload, None, timeout_s
        )
        metric = await self.metric_of(name, version)
        items = merge_hits((a["items"] for a in answers.values()), body.k, metric)
        failed_shards = sorted(f.shard for f in failed)
        for shard in failed_shards:
            self.on_partial(name, shard)
        return {
            "items": items,
            "model_version": version,
            "partial": bool(failed_shards),
            "failed_shards": failed_shards,
        }

    async def items(
        self,
        name: str,
        ids: Sequence[str],
        model_version: int | None = None,
        timeout_s: float | None = None,
    ) -> Json:
        """Each id asked of the shard that owns it (one replica); the items found, in the order
        asked. A shard that cannot answer leaves its ids out and is named (``partial``), unless
        every shard asked fails. The caller checks the batch size."""
        groups: dict[int, list[str]] = defaultdict(list)
        for item_id in dict.fromkeys(ids):
            groups[self.shard_map.shard_for(item_id)].append(item_id)
        shards = [self.shards[i] for i in sorted(groups)]
        path = f"/v1/indexes/{name}/items"

        def payload(shard: Shard, version: int | None) -> bytes:
            request: Json = {"ids": groups[shard.index]}
            if version is not None:
                request["model_version"] = version
            return to_json(request)

        answers, failed, version = await self._one_version(
            shards, path, payload, model_version, timeout_s
        )
        found = {item["id"]: item for a in answers.values() for item in a["items"]}
        failed_shards = sorted(f.shard for f in failed)
        return {
            "items": [found[i] for i in dict.fromkeys(ids) if i in found],
            "model_version": version,
            "partial": bool(failed_shards),
            "failed_shards": failed_shards,
        }

    async def _one_version(
        self,
        shards: Sequence[Shard],
        path: str,
        payload: Callable[[Shard, int | None], bytes],
        version: int | None,
        timeout_s: float | None,
    ) -> tuple[dict[int, Json], Failures, int]:
        """Every shard's answer at one model version, the shards that failed, and the version.

        Asked at ``version`` (None: each shard answers with its newest), a shard that already
        has a newer version than another is asked again for the version every shard has: a
        whole answer of one version rather than half an answer of the newer. Raises when no
        shard answers (``ShardRejected`` 404 when some lack the index, else ``ShardsFailed``).
        """
        answers, failed = await self._ask(shards, path, lambda s: payload(s, version), timeout_s)
        if not answers:
            not_found = [f for f in failed if isinstance(f, ShardRejected)]
            if not_found:
                raise not_found[0]
            raise ShardsFailed([f for f in failed if isinstance(f, ShardFailed)])
        oldest = min(a["model_version"] for a in answers.values())
        ahead = [i for i, a in answers.items() if a["model_version"] != oldest]
        if ahead:
            more, more_failed = await self._ask(
                [self.shards[i] for i in ahead], path, lambda s: payload(s, oldest), timeout_s
            )
            for i in ahead:
                del answers[i]
            answers.update(more)
            failed += more_failed
        return answers, failed, oldest

    async def _ask(
        self,
        shards: Sequence[Shard],
        path: str,
        payload: Callable[[Shard], bytes],
        timeout_s: float | None,
    ) -> tuple[dict[int, Json], Failures]:
        """POST ``payload(shard)`` to one replica of each shard: the answers by shard, and the
        shards that failed or lack the index (404)."""
        outcomes = await asyncio.gather(
            *(self.upstream.read(s, "POST", path, payload(s), timeout_s=timeout_s) for s in shards),
            return_exceptions=True,
        )
        answers: dict[int, Json] = {}
        failed: Failures = []
        for shard, outcome in zip(shards, outcomes, strict=True):
            if isinstance(outcome, ShardRejected) and outcome.response.status_code == 404:
                # The index (or version) is missing on this shard only, unless on all.
                failed.append(outcome)
            elif isinstance(outcome, ShardFailed):
                failed.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers[shard.index] = from_json(outcome.content)
        return answers, failed
