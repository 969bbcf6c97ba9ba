"""Section ``build``: upsert throughput of the three indexes, built from the same batches."""

from __future__ import annotations

import time
from typing import Any

import hnswlib
import numpy as np

from bench.common import percentiles
from bench.query_node.params import INDEX, MODEL_VERSION, resolved_threads
from bench.query_node.run import Bench
from nrtrec.ann import IndexSpec, VectorIndex


def section_build(bench: Bench) -> dict[str, Any]:
    """Upsert every vector, in batches of ``batch``, into each of the three indexes. Batch j goes
    into all three before batch j+1 (the order rotating), as queries do in ``Bench.timed``."""
    p, data, s = bench.params, bench.data, bench.settings
    node = bench.node
    assert node is not None

    raw = hnswlib.Index(space=p.metric, dim=p.dim)
    raw.init_index(max_elements=p.n, M=p.M, ef_construction=p.ef_construction)
    spec = IndexSpec(
        name=INDEX,
        model_version=MODEL_VERSION,
        dim=p.dim,
        metric=p.metric,
        M=p.M,
        ef_construction=p.ef_construction,
        max_elements=p.n,
    )
    index = VectorIndex(spec, s)
    node.create_index(p, max_elements=p.n)

    # Each starts from the numpy arrays and includes what its caller must build from them.
    def add_raw(lo: int, hi: int) -> None:
        raw.add_items(data.vectors[lo:hi], np.arange(lo, hi), num_threads=s.insert_threads)

    def add_in_process(lo: int, hi: int) -> None:
        index.upsert(
            [str(i) for i in range(lo, hi)],
            data.vectors[lo:hi],
            [{"bucket": b} for b in data.buckets[lo:hi].tolist()],
        )

    def add_http(lo: int, hi: int) -> None:
        node.upsert(data, lo, hi)

    adds = {"hnswlib": add_raw, "in_process": add_in_process, "http": add_http}
    names = list(adds)
    per_batch: dict[str, list[int]] = {name: [] for name in names}
    task = bench.progress.add_task("build: hnswlib, VectorIndex, HTTP upsert", total=p.n)
    for j, lo in enumerate(range(0, p.n, p.batch)):
        hi = min(lo + p.batch, p.n)
        shift = j % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter_ns()
            adds[name](lo, hi)
            per_batch[name].append(time.perf_counter_ns() - t0)
        bench.progress.advance(task, hi - lo)
    bench.raw, bench.index = raw, index

    listed = node.client.get("/v1/indexes").raise_for_status().json()
    counts = {entry["name"]: entry["count"] for entry in listed}
    if counts.get(INDEX) != p.n or index.count != p.n or raw.get_current_count() != p.n:
        raise RuntimeError(f"expected {p.n} items everywhere: node {counts}, in-process {index}")

    threads = s.insert_threads
    out: dict[str, Any] = {
        "batch": p.batch,
        "batches": len(per_batch["hnswlib"]),
        "max_elements": p.n,
        # One number for all three: hnswlib's add_items(num_threads=...), VectorIndex's and the
        # node's insert_threads (its NRTREC_QUERY_NODE__INSERT_THREADS, set by this run).
        "insert_threads": {
            "hnswlib_num_threads": threads,
            "in_process_insert_threads": threads,
            "node_insert_threads": threads,
            "resolved": resolved_threads(threads),
        },
    }
    for name in names:
        seconds = sum(per_batch[name]) / 1e9
        out[name] = {
            "seconds": seconds,
            "items_per_s": p.n / seconds,
            "batch_latency": percentiles(per_batch[name]),
        }
    base = out["hnswlib"]["items_per_s"]
    out["ratio_to_hnswlib"] = {name: out[name]["items_per_s"] / base for name in names}
    return out
