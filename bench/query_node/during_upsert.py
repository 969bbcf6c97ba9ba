"""Section ``during_upsert``: search latency on the node while a bulk upsert writes to the index
searched, against the same searches on the idle node, and the upsert rate with and without
those searches. Its own index on the same node (``LIVE_INDEX``), half the data preloaded, the
other half upserted in batches of ``--batch`` over HTTP; the searches come from another process
over its own connection (``searcher``)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from bench.common import percentiles
from bench.query_node.node import NodeProcess
from bench.query_node.params import LIVE_INDEX, STALL_SHARE_MAX, node_ef
from bench.query_node.run import Bench
from bench.query_node.searcher import Search, Searcher

K = 10
PHASES = ("alone", "with_searches", "idle")


def section_during_upsert(bench: Bench) -> dict[str, Any]:
    p, data, node = bench.params, bench.data, bench.node
    assert node is not None
    preload = p.n // 2
    batches = [(lo, min(lo + p.batch, p.n)) for lo in range(preload, p.n, p.batch)]
    if len(batches) < 2:
        return {
            "skipped": f"{p.n:,} items: the upserted half ({p.n - preload:,} items) makes "
            f"{len(batches)} batch of at most {p.batch:,}, and the section needs at least two "
            "(one with searches, one without)"
        }
    rounds = min(p.during_rounds, len(batches) // 2)
    chunk = len(batches) // (2 * rounds)  # batches per upsert window
    ef = node_ef(bench.settings, K)
    path = f"/v1/indexes/{LIVE_INDEX}/search"
    bodies = [{"vector": q.tolist(), "k": K} for q in data.queries[: p.sweep_queries]]

    node.create_index(p, max_elements=p.n, name=LIVE_INDEX)
    task = bench.progress.add_task(f"during upsert: preload {preload:,} items", total=None)
    t0 = time.perf_counter()
    for lo in range(0, preload, p.batch):
        node.upsert(data, lo, min(lo + p.batch, preload), index=LIVE_INDEX)
    preload_s = time.perf_counter() - t0
    # As long as one upsert window, going by the build section's HTTP batches.
    build_batch_ms = bench.results["build"]["http"]["batch_latency"]["p50_ms"]
    idle_s = max(0.5, chunk * build_batch_ms / 1e3)

    windows: dict[str, list[Search]] = {"idle": [], "with_searches": []}
    batch_ns: dict[str, list[int]] = {"alone": [], "with_searches": []}
    bench.progress.update(task, description="during upsert: rounds", total=2 * rounds * chunk)
    loadavg_before = list(os.getloadavg())
    written = 0
    with contextlib.closing(Searcher(node.url, path, bodies, p.during_rate)) as searcher:
        for r in range(rounds):
            order = PHASES[r % 3 :] + PHASES[: r % 3]
            for phase in order:
                if phase == "idle":
                    searcher.start()
                    start = time.monotonic_ns()
                    time.sleep(idle_s)
                    end = time.monotonic_ns()
                    windows["idle"] += _within(searcher.stop(), start, end)
                    continue
                # Chunks in the order they run: the index grows alike under both phases.
                mine = batches[written * chunk : (written + 1) * chunk]
                written += 1
                if phase == "with_searches":
                    searcher.start()
                start = time.monotonic_ns()
                for lo, hi in mine:
                    t0 = time.perf_counter_ns()
                    node.upsert(data, lo, hi, index=LIVE_INDEX)
                    batch_ns[phase].append(time.perf_counter_ns() - t0)
                    bench.progress.advance(task)
                end = time.monotonic_ns()
                if phase == "with_searches":
                    windows["with_searches"] += _within(searcher.stop(), start, end)
    loadavg_after = list(os.getloadavg())
    upserted = 2 * rounds * chunk * p.batch
    count = _count(node, LIVE_INDEX)
    node.client.delete(f"/v1/indexes/{LIVE_INDEX}").raise_for_status()

    out: dict[str, Any] = {
        "index": LIVE_INDEX,
        "preload": preload,
        "preload_seconds": preload_s,
        "batch": p.batch,
        "rounds": rounds,
        "batches_per_window": chunk,
        "idle_window_s": idle_s,
        "count_at_end": count,
        "search": {"k": K, "ef": ef, "rate_per_s": p.during_rate, "queries": len(bodies)},
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg_after,
    }
    for name in ("idle", "with_searches"):
        searches = windows[name]
        ok = [s for s in searches if s.ok]
        span_s = idle_s * rounds if name == "idle" else sum(batch_ns[name]) / 1e9
        out[f"search_{name}"] = {
            "searches": len(searches),
            "errors": len(searches) - len(ok),
            "achieved_rate_per_s": len(searches) / span_s if span_s else None,
            "response": percentiles([s.response_ns for s in ok]) if ok else {},
            "service": percentiles([s.service_ns for s in ok]) if ok else {},
            "service_max_ms": max(s.service_ns for s in ok) / 1e6 if ok else None,
        }
    idle, during = out["search_idle"], out["search_with_searches"]
    out["search_ratio_during_over_idle"] = {
        f"{kind}_{q}": during[kind][f"{q}_ms"] / idle[kind][f"{q}_ms"]
        for kind in ("response", "service")
        for q in ("p50", "p95", "p99")
        if during[kind] and idle[kind]
    }
    for phase in ("alone", "with_searches"):
        seconds = sum(batch_ns[phase]) / 1e9
        items = len(batch_ns[phase]) * p.batch
        out[f"upsert_{phase}"] = {
            "batches": len(batch_ns[phase]),
            "items": items,
            "seconds": seconds,
            "items_per_s": items / seconds,
            "batch_latency": percentiles(batch_ns[phase]),
        }
    out["upsert_ratio_with_searches_over_alone"] = (
        out["upsert_with_searches"]["items_per_s"] / out["upsert_alone"]["items_per_s"]
    )
    # The batches the searches ran beside: how long the index was written at a stretch.
    batch_ms = out["upsert_with_searches"]["batch_latency"]["p50_ms"]
    p99, longest = during["service"].get("p99_ms"), during["service_max_ms"]
    out["stall"] = {
        "what": "does a search wait for a whole upsert batch? Its service time (from its send) "
        "during the bulk upsert against the median time of the batches it ran beside; a search "
        "queued behind a write lock held for the batch waits for the rest of it, so p99 nears "
        "the batch time",
        "search_service_p99_ms": p99,
        "search_service_max_ms": longest,
        "batch_p50_ms": batch_ms,
        "p99_over_batch_p50": None if p99 is None else p99 / batch_ms,
        "max_over_batch_p50": None if longest is None else longest / batch_ms,
        "max_share": STALL_SHARE_MAX,
        "searches_over_half_a_batch": sum(
            s.service_ns > batch_ms * 1e6 / 2 for s in windows["with_searches"] if s.ok
        ),
    }
    if count != preload + upserted:
        raise RuntimeError(f"{LIVE_INDEX}: {count} items, expected {preload + upserted}")
    out["method"] = (
        f"An index of its own on the node (same M, ef_construction, max_elements {p.n:,}) holds "
        f"{preload:,} items; {rounds} rounds, each of three windows in rotating order: "
        f"{chunk} batches of {p.batch:,} new items upserted over HTTP alone; {chunk} more while "
        f"another process searches it (k={K}, the node's default ef {ef}) at "
        f"{p.during_rate:g}/s on a fixed schedule over its own keep-alive connection; and "
        f"{idle_s:.2f} s of the same searches with no upsert. A search counts in a window when "
        "its scheduled time falls inside it. response: from the scheduled time (a search sent "
        "late behind a slow one counts the wait); service: from its send."
    )
    return out


def _within(searches: list[Search], start_ns: int, end_ns: int) -> list[Search]:
    return [s for s in searches if start_ns <= s.scheduled_ns <= end_ns]


def _count(node: NodeProcess, name: str) -> int:
    listed = node.client.get("/v1/indexes").raise_for_status().json()
    return sum(entry["count"] for entry in listed if entry["name"] == name)
