"""Shards and replicas as the fan-out sees them: which replica to ask, failover, health.

A read (search, listing) asks one replica of a shard, round-robin over the replicas marked up,
and on an error or a timeout the next one, all within one deadline. A write goes to every
replica of the shard at once. Replicas are marked down by a failed call or health probe and up
again by a successful one; a background loop probes ``/healthz`` of every replica.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from nrtrec.query_node.fanout.errors import Answer, Attempt, ShardFailed, ShardRejected

log = logging.getLogger(__name__)


@dataclass
class Replica:
    shard: int
    url: str
    up: bool = True
    reason: str = ""

    def mark(self, up: bool, reason: str = "") -> None:
        if up != self.up:
            if up:
                log.info("shard %d replica %s is up", self.shard, self.url)
            else:
                log.warning("shard %d replica %s is down: %s", self.shard, self.url, reason)
        self.up, self.reason = up, "" if up else reason


@dataclass
class Shard:
    index: int
    replicas: list[Replica]
    _turn: itertools.count = field(default_factory=itertools.count, repr=False)

    def read_order(self) -> list[Replica]:
        """The replicas to try for a read: those up, round-robin, then those down (a health
        mark can be stale, and a down replica is better than no answer)."""
        n = len(self.replicas)
        start = next(self._turn) % n
        rotated = self.replicas[start:] + self.replicas[:start]
        return [r for r in rotated if r.up] + [r for r in rotated if not r.up]

    @property
    def up(self) -> bool:
        return any(r.up for r in self.replicas)


# What a call to a replica raises when it gets no answer.
CallFailed = (aiohttp.ClientError, TimeoutError)


def _failure(replica: Replica, error: Exception) -> Attempt:
    if isinstance(error, TimeoutError):
        return Attempt(replica.url, "timeout", "timed out")
    # Refused, reset, or a keep-alive connection to a node that died: the node is not there.
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return Attempt(replica.url, "unavailable", reason)


class Upstream:
    """The calls to the nodes over one keep-alive ``aiohttp.ClientSession`` (on the
    search path it took about a third less time per call than httpx's AsyncClient)."""

    def __init__(
        self,
        shards: list[Shard],
        client: aiohttp.ClientSession,
        timeout_s: float,
        write_timeout_s: float,
        on_failure: Callable[[int, Attempt], None] | None = None,
    ):
        self.shards = shards
        self.client = client
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        # Called with (shard, Attempt) for every failed call; the metrics count them.
        self._on_failure = on_failure or (lambda shard, attempt: None)

    async def _request(
        self,
        method: str,
        url: str,
        timeout: float,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        async with self.client.request(
            method,
            url,
            data=content,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            return Answer(response.status, await response.read())

    async def close(self) -> None:
        await self.client.close()

    @property
    def replicas(self) -> list[Replica]:
        return [r for shard in self.shards for r in shard.replicas]

    def _failed(self, replica: Replica, attempt: Attempt) -> Attempt:
        if attempt.kind != "bad_gateway":
            replica.mark(False, attempt.reason)
        self._on_failure(replica.shard, attempt)
        return attempt

    async def read(
        self,
        shard: Shard,
        method: str,
        path: str,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Answer:
        """One replica's 2xx answer, trying replicas in ``read_order`` until the deadline
        (``timeout_s``, else the upstream's).

        A 5xx, an error or a timeout moves on to the next replica; so does a 404 (a replica
        that lost its index), which is passed on when no replica has the index. Any other 4xx
        is the caller's mistake and raises ``ShardRejected`` at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout_s if timeout_s is None else timeout_s)
        attempts: list[Attempt] = []
        not_found: Answer | None = None
        order = shard.read_order()
        for i, replica in enumerate(order):
            remaining = deadline - loop.time()
            if remaining <= 0:
                attempts.append(Attempt(replica.url, "timeout", "deadline passed before trying"))
                continue
            # A hung replica gets its share of what is left, so the next one still has time.
            timeout = remaining / (len(order) - i)
            try:
                response = await self._request(method, replica.url + path, timeout, content, params)
            except CallFailed as e:
                attempts.append(self._failed(replica, _failure(replica, e)))
                continue
            replica.mark(True)
            if response.status_code >= 500:
                reason = f"answered {response.status_code}: {response.text[:200]}"
                attempts.append(self._failed(replica, Attempt(replica.url, "bad_gateway", reason)))
                continue
            if response.status_code == 404:
                not_found = response
                continue
            if response.status_code >= 400:
                raise ShardRejected(shard.index, response)
            return response
        if not_found is not None:
            # No replica that answered has it (any others failed to answer at all).
            raise ShardRejected(shard.index, not_found)
        raise ShardFailed(shard.index, attempts)

    async def write(
        self,
        shard: Shard,
        method: str,
        path: str,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> list[Answer]:
        """The 2xx answers (and those in ``ok_statuses``) of every replica, asked at once.

        Raises ``ShardRejected`` when a replica answers another 4xx, ``ShardFailed`` when none
        answers. Replicas that fail while another succeeds are logged and counted; where Kafka
        feeds the nodes, a replica that missed a write catches up from item-deltas.
        """

        async def call(replica: Replica) -> Answer | Attempt:
            # A replica marked down gets the short deadline: a hung one must not hold every
            # write for the long one.
            timeout = self.write_timeout_s if replica.up else self.timeout_s
            try:
                response = await self._request(method, replica.url + path, timeout, content, params)
            except CallFailed as e:
                return self._failed(replica, _failure(replica, e))
            replica.mark(True)
            if response.status_code >= 500:
                reason = f"answered {response.status_code}: {response.text[:200]}"
                return self._failed(replica, Attempt(replica.url, "bad_gateway", reason))
            return response

        outcomes = await asyncio.gather(*(call(r) for r in shard.replicas))
        answers = [o for o in outcomes if isinstance(o, Answer)]
        for response in answers:
            if response.status_code >= 400 and response.status_code not in ok_statuses:
                raise ShardRejected(shard.index, response)
        failed = [o for o in outcomes if isinstance(o, Attempt)]
        if not answers:
            raise ShardFailed(shard.index, failed, what="took the write")
        if failed:
            log.warning(
                "%s %s: shard %d: %d of %d replica(s) missed it: %s",
                method,
                path,
                shard.index,
                len(failed),
                len(outcomes),
                "; ".join(map(str, failed)),
            )
        return answers

    async def probe(self, replica: Replica, timeout_s: float) -> bool:
        try:
            response = await self._request("GET", replica.url + "/healthz", timeout_s)
        except CallFailed as e:
            replica.mark(False, _failure(replica, e).reason)
            return False
        up = response.status_code == 200
        replica.mark(up, f"/healthz answered {response.status_code}")
        return up

    async def check_health(self, timeout_s: float) -> None:
        await asyncio.gather(*(self.probe(r, timeout_s) for r in self.replicas))
