"""The gateway: a ``FanOut`` (the shards, their health, the reads) plus the writes.

Writes go to the shard that owns each item (``schemas.partitioning``) and to every replica of
it; index changes go everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json, to_json

from nrtrec.ann import InvalidVector
from nrtrec.core.settings import Settings
from nrtrec.query_node.errors import BatchTooLarge
from nrtrec.query_node.fanout import (
    Answer,
    FanOut,
    Shard,
    ShardFailed,
    ShardRejected,
    ShardsFailed,
)
from nrtrec.query_node.gateway.metrics import GatewayMetrics
from nrtrec.schemas.query_api import (
    CreateIndexRequest,
    DeleteRequest,
    PromoteRequest,
    UpsertRequest,
)

log = logging.getLogger(__name__)

Json = dict[str, Any]


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


class Gateway(FanOut):
    """The fan-out of one gateway app, its metrics, and the writes through it."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.metrics = GatewayMetrics(self.shards)
        self.on_failure = self.metrics.failure
        self.on_partial = self.metrics.partial

    def check_batch(self, n: int) -> None:
        """The node's own limit, checked before any shard takes its part."""
        BatchTooLarge.check(n, self.settings.query_node.max_batch)

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
        return _merged_info(infos), created

    async def promote(self, name: str, body: PromoteRequest) -> Json:
        """Serve a building version on every replica of every shard; each declares it live."""
        return await self._set_state(name, "promote", body)

    async def hold_back(self, name: str, body: PromoteRequest) -> Json:
        """Stop serving a version on every replica of every shard; each declares it building."""
        return await self._set_state(name, "hold-back", body)

    async def _set_state(self, name: str, action: str, body: PromoteRequest) -> Json:
        answers = await self._everywhere(
            "POST", f"/v1/indexes/{name}/{action}", to_json(body.model_dump())
        )
        return _merged_info([from_json(shard[0].content) for shard in answers])

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

    async def upsert(self, name: str, body: UpsertRequest) -> Json:
        self.check_batch(len(body.items))
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
        self.check_batch(len(body.ids))
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


def _merged_info(infos: list[Json]) -> Json:
    """One replica's ``IndexInfo`` per shard as the gateway's: counts summed, serving only when
    every shard serves it."""
    return {
        **infos[0],
        "count": sum(i["count"] for i in infos),
        "serving": all(i.get("serving", True) for i in infos),
    }
