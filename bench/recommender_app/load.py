"""The open-loop load generator: ``run_rate`` sends ``rate`` recommendation requests a second
from ``workers`` processes for ``seconds`` and summarises what came back. The load and the
pipeline sections both use it."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json

from bench.common import ms_percentiles, percentiles
from bench.recommender_app.params import STAGES

WARMUP_S = 1.0


def server_timing(header: str) -> dict[str, float]:
    """``store;dur=0.4, search;dur=1.9, ...`` to ``{"store": 0.4, ...}`` (milliseconds)."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def ms_stats(values: Sequence[float]) -> dict[str, float]:
    return ms_percentiles(values) if values else {}


def load_worker(
    url: str,
    user_ids: list[str],
    k: int,
    rate: float,
    start_at: float,
    seconds: float,
    results: Any,
) -> None:
    """Sends ``rate`` requests per second on a fixed schedule from ``start_at`` (monotonic
    time, shared by processes on Linux) for ``WARMUP_S + seconds``, each at its time whatever
    the others are doing (open loop: a slow answer does not delay the next request), over a
    pool of keep-alive connections; records the requests scheduled after the warm-up."""
    import asyncio

    import aiohttp

    response_ns: list[int] = []
    service_ns: list[int] = []
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    statuses: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    degraded = 0

    async def one(session: aiohttp.ClientSession, user: str, scheduled: float) -> None:
        nonlocal degraded
        sent = time.monotonic()
        try:
            async with session.get(
                f"{url}/v1/users/{user}/recommendations", params={"k": str(k)}
            ) as r:
                raw = await r.read()
                status, timing = r.status, r.headers.get("Server-Timing", "")
        except (aiohttp.ClientError, TimeoutError) as e:
            errors[type(e).__name__] += 1
            return
        done = time.monotonic()
        if scheduled < start_at + WARMUP_S:
            return
        statuses[status] += 1
        response_ns.append(int((done - scheduled) * 1e9))
        service_ns.append(int((done - sent) * 1e9))
        if status == 200:
            body = from_json(raw)
            sources[body["source"]] += 1
            if body["degraded"]:
                degraded += 1
                # The reason's kind: search_unavailable, store_unavailable, partial_results...
                reasons[body["reasons"][0].split(":")[0] if body["reasons"] else "?"] += 1
            for name, ms in server_timing(timing).items():
                stages[name].append(ms)

    async def run() -> None:
        interval = 1.0 / rate
        end = start_at + WARMUP_S + seconds
        connector = aiohttp.TCPConnector(limit=64)
        timeout = aiohttp.ClientTimeout(total=10.0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            i = 0
            while (scheduled := start_at + i * interval) < end:
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                user = user_ids[i % len(user_ids)]
                tasks.append(asyncio.create_task(one(session, user, scheduled)))
                i += 1
            await asyncio.gather(*tasks)

    gc.disable()
    asyncio.run(run())
    results.put(
        {
            "response_ns": response_ns,
            "service_ns": service_ns,
            "stages": stages,
            "statuses": dict(statuses),
            "sources": dict(sources),
            "degraded": degraded,
            "degraded_reasons": dict(reasons),
            "errors": dict(errors),
        }
    )


def run_rate(
    url: str, user_ids: Sequence[str], k: int, rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """One open-loop run at ``rate`` against the app at ``url``, users taken in turn."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.monotonic() + 2.0  # time for the workers to start
    processes = [
        ctx.Process(
            target=load_worker,
            args=(
                url,
                list(user_ids[w::workers]),
                k,
                rate / workers,
                # Staggered, so the workers' requests interleave rather than collide.
                start_at + w / rate,
                seconds,
                queue,
            ),
        )
        for w in range(workers)
    ]
    load_before = os.getloadavg()
    for w in processes:
        w.start()
    parts = [queue.get(timeout=seconds + 120) for _ in processes]
    for w in processes:
        w.join()

    def summed(field: str) -> dict[str, int]:
        return dict(sum((Counter(part[field]) for part in parts), Counter()))

    response = [x for part in parts for x in part["response_ns"]]
    service = [x for part in parts for x in part["service_ns"]]
    stages = {s: [x for part in parts for x in part["stages"][s]] for s in (*STAGES, "total")}
    return {
        "offered_rate": rate,
        "requests": len(response),
        "achieved_rate": len(response) / seconds,
        "response": percentiles(response) if response else {},
        "service": percentiles(service) if service else {},
        "server_timing": {s: ms_stats(v) for s, v in stages.items()},
        "statuses": summed("statuses"),
        "sources": summed("sources"),
        "degraded": sum(part["degraded"] for part in parts),
        "degraded_reasons": summed("degraded_reasons"),
        "errors": summed("errors"),
        "loadavg_before": list(load_before),
    }
