"""What the gateway does for each endpoint, over the shards in ``settings.gateway``.

Searches fan out to one replica of every shard and merge; writes go to the shard that owns
each item (``schemas.partitioning``) and to every replica of it; index changes go everywhere.
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

from nrtrec.ann import InvalidVector
from nrtrec.core.settings import Settings
from nrtrec.query_node.errors import BatchTooLarge
from nrtrec.query_node.gateway.merge import merge_hits, merge_listings
from nrtrec.query_node.gateway.metrics import GatewayMetrics
from nrtrec.query_node.gateway.shards import (
    Answer,
    GatewayError,
    Replica,
    Shard,
    ShardFailed,
    ShardRejected,
    ShardsFailed,
    Upstream,
)
from nrtrec.schemas.filters import parse_filter
from nrtrec.schemas.partitioning import ShardMap
from nrtrec.schemas.query_api import (
    CreateIndexRequest,
    DeleteRequest,
    ItemsRequest,
    Metric,
    SearchRequest,
    UpsertRequest,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]


class MetricUnknown(GatewayError):
    status = 502
    code = "metric_unknown"


def _settle(shards: Sequence[Shard], outcomes: Sequence[Any]) -> list[list[Answer]]:
    """Every shard's answers, or the first caller mistake, or which shards failed (and which
    applied the change, since a retry must know)."""
    applied = [s.index for s, o in zip(shards, outcomes, strict=True) if isinstance(o, list)]
    for outcome in outcomes:
        if isinstance(outcome, ShardRejected):
            if applied:
                outcome.note = f"shard(s) {applied} applied their part of the request"
            raise outcome
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, ShardFailed):
            raise outcome
    failed = [o for o in outcomes if isinstance(o, ShardFailed)]
    if failed:
        note = f"shard(s) {applied} applied it; repeating the call is safe" if applied else ""
        raise ShardsFailed(failed, note)
    return list(outcomes)


class Gateway:
    """The shard map, the replicas' health and the calls to them; one per gateway app."""

    def __init__(self, settings: Settings):
        gw = settings.gateway
        if not gw.shards:
            raise ValueError("the gateway needs at least one shard (settings.gateway.shards)")
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
        self.metrics = GatewayMetrics(self.shards)
        self._metric_of: dict[tuple[str, int], Metric] = {}
        self._upstream: Upstream | None = None
        self._health_task: asyncio.Task[None] | None = None

    # ---- life cycle -----------------------------------------------------------------------

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the gateway is not started (its app's lifespan starts it)")
        return self._upstream

    async def start(self) -> None:
        gw = self.settings.gateway
        token = gw.upstream_token if gw.upstream_token is not None else self.settings.token
        # Bodies are JSON serialised by the gateway, sent as bytes.
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
            on_failure=self.metrics.failure,
        )
        await self._upstream.check_health(gw.request_timeout_s)
        down = [r.url for r in self._upstream.replicas if not r.up]
        if down:
            log.warning("replicas down at start: %s", ", ".join(down))
        self._health_task = asyncio.create_task(self._health_loop(), name="gateway-health")

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

    async def list_indexes(self) -> tuple[list[Json], list[int]]:
        """Merged listing (one replica per shard) and the shards that could not answer."""
        outcomes = await asyncio.gather(
            *(self.upstream.read(s, "GET", "/v1/indexes") for s in self.shards),
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

    async def search(self, name: str, body: SearchRequest) -> Json:
        """Every shard's top k merged into the top k; a shard that cannot answer is left out
        and named (``partial``), unless none can."""
        path = f"/v1/indexes/{name}/search"
        # Refused here, as each shard would, rather than fanned out to be refused N times.
        parse_filter(body.filter, self.settings.query_node.filter_limits())
        request = body.model_dump(exclude_none=True)
        if not body.include_attributes:
            # Left out when off, so nodes that predate the field still accept the request.
            del request["include_attributes"]
        answers, failed = await self._search(self.shards, path, to_json(request))
        if not answers:
            not_found = [f for f in failed if isinstance(f, ShardRejected)]
            if not_found:
                raise not_found[0]
            raise ShardsFailed([f for f in failed if isinstance(f, ShardFailed)])
        version = min(a["model_version"] for a in answers.values())
        ahead = [i for i, a in answers.items() if a["model_version"] != version]
        if ahead:
            # Without a version asked for, a shard answers with its newest. One that already
            # has a newer version than another is asked again for the version every shard
            # has: a whole answer of one version rather than half an answer of the newer.
            pinned = to_json({**request, "model_version": version})
            more, more_failed = await self._search([self.shards[i] for i in ahead], path, pinned)
            for i in ahead:
                del answers[i]
            answers.update(more)
            failed += more_failed
        metric = await self.metric_of(name, version)
        items = merge_hits((a["items"] for a in answers.values()), body.k, metric)
        failed_shards = sorted(f.shard for f in failed)
        for shard in failed_shards:
            self.metrics.partial_searches.labels(name, str(shard)).inc()
        return {
            "items": items,
            "model_version": version,
            "partial": bool(failed_shards),
            "failed_shards": failed_shards,
        }

    async def items(self, name: str, body: ItemsRequest) -> Json:
        """Each id asked of the shard that owns it (one replica); the items found, in the order
        asked. A shard that cannot answer leaves its ids out and is named (``partial``), unless
        every shard asked fails."""
        self._check_batch(len(body.ids))
        groups: dict[int, list[str]] = defaultdict(list)
        for item_id in dict.fromkeys(body.ids):
            groups[self.shard_map.shard_for(item_id)].append(item_id)
        shards = [self.shards[i] for i in sorted(groups)]
        path = f"/v1/indexes/{name}/items"

        def payload(shard: Shard, version: int | None) -> bytes:
            request: Json = {"ids": groups[shard.index]}
            if version is not None:
                request["model_version"] = version
            return to_json(request)

        answers, failed = await self._ask(shards, path, lambda s: payload(s, body.model_version))
        if not answers:
            not_found = [f for f in failed if isinstance(f, ShardRejected)]
            if not_found:
                raise not_found[0]
            raise ShardsFailed([f for f in failed if isinstance(f, ShardFailed)])
        version = min(a["model_version"] for a in answers.values())
        ahead = [i for i, a in answers.items() if a["model_version"] != version]
        if ahead:
            # As for a search: every item of one version, the version every shard has.
            more, more_failed = await self._ask(
                [self.shards[i] for i in ahead], path, lambda s: payload(s, version)
            )
            for i in ahead:
                del answers[i]
            answers.update(more)
            failed += more_failed
        found = {item["id"]: item for a in answers.values() for item in a["items"]}
        failed_shards = sorted(f.shard for f in failed)
        return {
            "items": [found[i] for i in dict.fromkeys(body.ids) if i in found],
            "model_version": version,
            "partial": bool(failed_shards),
            "failed_shards": failed_shards,
        }

    async def _search(
        self, shards: Sequence[Shard], path: str, payload: bytes
    ) -> tuple[dict[int, Json], list[ShardFailed | ShardRejected]]:
        return await self._ask(shards, path, lambda shard: payload)

    async def _ask(
        self, shards: Sequence[Shard], path: str, payload: Callable[[Shard], bytes]
    ) -> tuple[dict[int, Json], list[ShardFailed | ShardRejected]]:
        """POST ``payload(shard)`` to one replica of each shard: the answers by shard, and the
        shards that failed or lack the index (404)."""
        outcomes = await asyncio.gather(
            *(self.upstream.read(s, "POST", path, payload(s)) for s in shards),
            return_exceptions=True,
        )
        answers: dict[int, Json] = {}
        failed: list[ShardFailed | ShardRejected] = []
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

    # ---- index changes: every replica of every shard --------------------------------------

    async def _everywhere(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> list[list[Answer]]:
        outcomes = await asyncio.gather(
            *(
                self.upstream.write(s, method, path, content, params, ok_statuses)
                for s in self.shards
            ),
            return_exceptions=True,
        )
        return _settle(self.shards, outcomes)

    async def create_index(self, name: str, body: CreateIndexRequest) -> tuple[Json, bool]:
        """The index as created (count summed over shards) and whether any replica created it
        (201) rather than finding it there already (200)."""
        answers = await self._everywhere(
            "PUT", f"/v1/indexes/{name}", to_json(body.model_dump(exclude_none=True))
        )
        self._metric_of[(name, body.model_version)] = body.metric
        created = any(r.status_code == 201 for shard in answers for r in shard)
        infos = [from_json(shard[0].content) for shard in answers]
        return {**infos[0], "count": sum(i["count"] for i in infos)}, created

    async def drop_index(self, name: str, model_version: int | None) -> Json:
        params = None if model_version is None else {"model_version": str(model_version)}
        answers = await self._everywhere(
            "DELETE", f"/v1/indexes/{name}", params=params, ok_statuses=frozenset({404})
        )
        flat = [r for shard in answers for r in shard]
        if all(r.status_code == 404 for r in flat):
            raise ShardRejected(0, flat[0])
        for key in [k for k in self._metric_of if k[0] == name]:
            if model_version is None or key[1] == model_version:
                del self._metric_of[key]
        dropped = {
            (d["name"], d["model_version"])
            for r in flat
            if r.status_code < 300
            for d in from_json(r.content)["dropped"]
        }
        return {"dropped": [{"name": n, "model_version": v} for n, v in sorted(dropped)]}

    async def snapshot(self, name: str, model_version: int | None) -> Json:
        params = None if model_version is None else {"model_version": str(model_version)}
        answers = await self._everywhere("POST", f"/v1/indexes/{name}/snapshot", params=params)
        return {
            "snapshots": [
                s for shard in answers for r in shard for s in from_json(r.content)["snapshots"]
            ]
        }

    # ---- item writes: the owning shard, every replica -------------------------------------

    def _check_batch(self, n: int) -> None:
        # The node's own limit, checked before any shard takes its part.
        BatchTooLarge.check(n, self.settings.query_node.max_batch)

    async def upsert(self, name: str, body: UpsertRequest) -> Json:
        self._check_batch(len(body.items))
        dims = {len(item.vector) for item in body.items}
        if len(dims) > 1:
            # Some shard would refuse its part while another applies its own.
            raise InvalidVector(
                f"the vectors of one call must have one dimension, got {sorted(dims)}"
            )
        groups: dict[int, list[Json]] = defaultdict(list)
        for item in body.items:
            groups[self.shard_map.shard_for(item.id)].append(item.model_dump())
        payloads = {
            shard: {"items": items, "model_version": body.model_version}
            for shard, items in groups.items()
        }
        return await self._write_items(name, "upsert", payloads)

    async def delete(self, name: str, body: DeleteRequest) -> Json:
        self._check_batch(len(body.ids))
        groups: dict[int, list[str]] = defaultdict(list)
        for item_id in body.ids:
            groups[self.shard_map.shard_for(item_id)].append(item_id)
        payloads = {
            shard: {"ids": ids, "model_version": body.model_version}
            for shard, ids in groups.items()
        }
        return await self._write_items(name, "delete", payloads)

    async def _write_items(self, name: str, op: str, payloads: dict[int, Json]) -> Json:
        """``WriteResult`` over shards: applied summed over the shards written (one replica
        each), count summed over every shard (those not written are asked for their listing,
        at the same time)."""
        touched = [self.shards[i] for i in sorted(payloads)]
        untouched = [s for s in self.shards if s.index not in payloads]
        path = f"/v1/indexes/{name}/{op}"
        writes = asyncio.gather(
            *(
                self.upstream.write(
                    s, "POST", path, to_json({k: v for k, v in payloads[s.index].items() if v})
                )
                for s in touched
            ),
            return_exceptions=True,
        )
        listings = asyncio.gather(
            *(self.upstream.read(s, "GET", "/v1/indexes") for s in untouched),
            return_exceptions=True,
        )
        outcomes, listed = await asyncio.gather(writes, listings)
        results = [from_json(answers[0].content) for answers in _settle(touched, outcomes)]
        version = max(r["model_version"] for r in results)
        count = sum(r["count"] for r in results)
        for shard, listing in zip(untouched, listed, strict=True):
            if isinstance(listing, BaseException):
                # The count is then a lower bound; the write itself did not need this shard.
                log.info("%s: count without shard %d: %s", path, shard.index, listing)
                continue
            count += sum(
                e["count"]
                for e in from_json(listing.content)
                if e["name"] == name and e["model_version"] == version
            )
        return {
            "model_version": version,
            "applied": sum(r["applied"] for r in results),
            "count": count,
        }
