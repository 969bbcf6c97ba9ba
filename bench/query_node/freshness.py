"""Section ``delta_to_node``: delta → node (produce to item-deltas → searchable on the node), a
part of the pipeline only (no item job, Triton or gateway: not the end-to-end "listing produced
→ searchable" path, which is bench.streaming's). A Kafka broker of its own (the local runner)
and a second query node that follows item-deltas; new items produced at a steady rate, each
searched for over HTTP until the node returns it (``freshness_probes``). The ``--freshness*``
options drive it."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import local_kafka, no_gc
from bench.query_node.freshness_probes import PROBE_K, DeltaSource, FreshnessPoller, Pending
from bench.query_node.node import NodeProcess
from bench.query_node.params import (
    DELTA_TO_NODE,
    FRESHNESS_DEADLINE_S,
    FRESHNESS_LINGER_MS,
    FRESHNESS_POLL_SPACING_S,
    FRESHNESS_POLLERS,
    FRESHNESS_TARGET_MS,
    INDEX,
    node_ef,
)
from bench.query_node.run import Bench, console


def section_delta_to_node(bench: Bench) -> dict[str, Any]:
    """Delta → node: upserts of new items to item-deltas at a steady rate, each item
    searched for over HTTP until the node returns it. A failure here is recorded, not raised:
    the other sections' results are still written."""
    try:
        return _freshness(bench)
    except Exception as e:
        console.print(f"[red]delta → node section failed: {type(e).__name__}: {e}[/red]")
        console.print_exception()
        return {"error": f"{type(e).__name__}: {e}"}


def _freshness(bench: Bench) -> dict[str, Any]:
    p, data, progress = bench.params, bench.data, bench.progress
    rate, count = p.freshness_rate, max(1, round(p.freshness_rate * p.freshness_seconds))
    warmup = max(20, round(rate * 2))
    preload = min(p.n, p.freshness_preload)
    ef = node_ef(bench.settings, PROBE_K)
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-fresh-")))
        task = progress.add_task("delta → node: Kafka (local runner)", total=None)
        t0 = time.perf_counter()
        settings = local_kafka(
            tmp / "kafka",
            stack,
            lambda m: progress.update(task, description=f"delta → node: {m}"),
        )
        bootstrap = settings.kafka.bootstrap_servers
        timings["kafka_start"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress.update(task, description="delta → node: query node following item-deltas")
        partitions = ",".join(str(i) for i in range(settings.kafka.partitions))
        group = "nrtrec-bench-freshness"
        node = NodeProcess(
            tmp,
            name="freshness-node",
            extra_args=["--kafka", bootstrap, "--partitions", partitions, "--group", group],
            env={
                "NRTREC_RUN_DIR": str(tmp / "node-run"),
                "NRTREC_QUERY_NODE__INDEX_NAME": INDEX,
                "NRTREC_TOPICS__ITEM_DELTAS": settings.topics.item_deltas,
                "NRTREC_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
                "NRTREC_QUERY_NODE__INSERT_THREADS": str(bench.settings.insert_threads),
            },
        )
        stack.callback(node.close)
        try:
            node.wait_healthy()
            # No growth while measured: room for the preload, the warm-up and the timed items.
            max_elements = preload + warmup + count
            node.create_index(p, max_elements=max_elements)
            timings["node_start"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            progress.update(
                task,
                description=f"delta → node: preload {preload:,} items (HTTP upsert)",
                total=None,
            )
            for lo in range(0, preload, p.batch):
                hi = min(lo + p.batch, preload)
                node.upsert(data, lo, hi)
            timings["preload"] = time.perf_counter() - t0

            poller = FreshnessPoller(
                node.url,
                f"/v1/indexes/{INDEX}/search",
                FRESHNESS_POLL_SPACING_S,
                FRESHNESS_DEADLINE_S,
                FRESHNESS_POLLERS,
            )
            poller.start()
            stack.callback(poller.stop)
            # The data set's rows the index was not given: the new items' vectors.
            spare = data.vectors[preload:]
            source = DeltaSource(bootstrap, settings.topics.item_deltas, p, poller, spare)
            stack.callback(source.close)

            # Warm-up, untimed: connects the producer, and proves the path end to end (the
            # consumer is assigned and applying) before anything is measured.
            t0 = time.perf_counter()
            progress.update(task, description=f"delta → node: warm-up, {warmup} deltas", total=None)
            source.run("warmup", warmup, rate, lambda: None)
            source.flush()
            if not poller.wait_idle(60) or len(poller.found) < warmup:
                raise RuntimeError(
                    f"warm-up: {len(poller.found)} of {warmup} deltas found, "
                    f"{poller.pending} pending; {_stored(node, poller.missed)}; node log:\n"
                    f"{node.tail()}"
                )
            timings["warmup"] = time.perf_counter() - t0
            poller.reset()
            before = node.histogram("nrtrec_query_node_delta_delay_seconds")

            t0 = time.perf_counter()
            progress.update(
                task,
                description=f"delta → node: {count} deltas at {rate:g}/s",
                total=count,
                completed=0,
            )
            with no_gc():
                produce_s = source.run("fresh", count, rate, lambda: progress.advance(task))
                source.flush()
                progress.update(task, description="delta → node: last items")
                poller.wait_idle(FRESHNESS_DEADLINE_S + 30)
            timings["measure"] = time.perf_counter() - t0
            after = node.histogram("nrtrec_query_node_delta_delay_seconds")
            poller.stop()
            # Dropping the index first spares the node saving a snapshot of it on shutdown.
            node.client.delete(f"/v1/indexes/{INDEX}").raise_for_status()
        except Exception:
            console.print(f"[red]delta → node query node log (tail):[/red]\n{node.tail()}")
            raise

    found, missed = poller.found, poller.missed
    if len(found) + len(missed) != count:
        raise RuntimeError(f"{count} produced, {len(found)} found, {len(missed)} given up")
    ms = np.array([f.freshness_ns for f in found], np.float64) / 1e6
    lower = np.array([f.lower_ns for f in found], np.float64) / 1e6
    polls = np.array([f.polls for f in found], np.float64)
    out: dict[str, Any] = {
        "path": DELTA_TO_NODE,
        "not_end_to_end": "a part of the pipeline only: the end-to-end path (a listing produced "
        "→ searchable, through the item job, Triton and the gateway) and its target are "
        "bench.streaming's",
        "rate_per_s": rate,
        "seconds": p.freshness_seconds,
        "achieved_rate_per_s": (count - 1) / produce_s if produce_s > 0 else None,
        "n": count,
        "found": len(found),
        "not_found": len(missed),
        "deadline_s": FRESHNESS_DEADLINE_S,
        # This path's own bound (p95), not the end-to-end freshness target.
        "bound_p95_ms": FRESHNESS_TARGET_MS,
    }
    if len(ms):
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        out.update(
            p50_ms=float(p50),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(ms.max()),
            min_ms=float(ms.min()),
            mean_ms=float(ms.mean()),
        )
    out["met"] = bool(len(ms)) and not missed and out["p95_ms"] <= FRESHNESS_TARGET_MS
    searches = np.asarray(poller.search_ns, np.float64) / 1e6
    uncertainty = ms - lower
    out["polling"] = {
        "spacing_ms": FRESHNESS_POLL_SPACING_S * 1e3,
        "threads": FRESHNESS_POLLERS,
        "k": PROBE_K,
        "ef": ef,
        "searches": len(searches),
        "searches_per_s": len(searches) / (timings["measure"] or 1),
        "search_p50_ms": float(np.percentile(searches, 50)) if len(searches) else None,
        "search_p95_ms": float(np.percentile(searches, 95)) if len(searches) else None,
        "polls_per_item_p50": float(np.percentile(polls, 50)) if len(polls) else None,
        # Per item: the end of the search that found it minus the start of the one before.
        "uncertainty_p50_ms": float(np.percentile(uncertainty, 50)) if len(ms) else None,
        "uncertainty_p95_ms": float(np.percentile(uncertainty, 95)) if len(ms) else None,
        "errors": dict(poller.errors),
    }
    delta_count = after.get("count", 0) - before.get("count", 0)
    out["node_apply_delay"] = {
        "what": "the node's nrtrec_query_node_delta_delay_seconds over the timed deltas: "
        "apply time minus source_ts (wall clock ms, set when the record was encoded)",
        "count": delta_count,
        "mean_ms": 1e3 * (after.get("sum", 0) - before.get("sum", 0)) / delta_count
        if delta_count
        else None,
        "share_le_s": {
            le: (after[le] - before.get(le, 0)) / delta_count
            for le in after
            if le not in ("sum", "count") and delta_count
        },
    }
    out["preload"] = preload
    out["warmup"] = warmup
    out["max_elements"] = max_elements
    out["producer_config"] = {k: v for k, v in source.config.items() if k != "bootstrap.servers"}
    out["kafka"] = {"version": settings.kafka.version, "partitions": settings.kafka.partitions}
    out["node_command"] = " ".join(node.argv[1:])
    out["timings_s"] = timings
    out["method"] = (
        f"{count} upserts of new items (random unit vectors) produced to item-deltas at "
        f"{rate:g}/s (keyed by item id, murmur2 partitioner, linger.ms {FRESHNESS_LINGER_MS}) "
        f"to a local broker; a query node (`nrtrec query-node --kafka`, all "
        f"{settings.kafka.partitions} partitions) holding {preload:,} items applies them. "
        f"Delta → node time of an item: from just before producer.produce() to the end of the "
        f"first HTTP search for its own vector (k={PROBE_K}) that returns its id among the hits. "
        f"Each pending item is searched every {FRESHNESS_POLL_SPACING_S * 1e3:g} ms (from one "
        f"search's start to the next), by {FRESHNESS_POLLERS} threads over keep-alive "
        f"connections; not found within {FRESHNESS_DEADLINE_S:g} s: not_found. "
        "Percentiles are over the found items."
    )
    out["freshness_ms"] = [round(float(x), 3) for x in ms]
    return out


def _stored(node: NodeProcess, missed: list[Pending]) -> str:
    """Whether the items no search found are in the index all the same (the walk missed them)
    or not (their deltas were not applied)."""
    ids = [item.item_id for item in missed]
    answer = node.client.post(f"/v1/indexes/{INDEX}/items", json={"ids": ids})
    held = {item["id"] for item in answer.raise_for_status().json()["items"]}
    return f"of those not found, {len(held & set(ids))} are stored and {len(set(ids) - held)} not"
