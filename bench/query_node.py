"""Query-node benchmark: build throughput, recall, latency in-process and over HTTP, filters,
and delta freshness (produce to Kafka -> searchable on a node that follows item-deltas).

    python -m bench.query_node --n 100000 --dim 64 --queries 1000 --out bench/results

One run, one seeded data set, three indexes built from it with the same M and ef_construction:

- ``hnswlib``: a raw ``hnswlib.Index`` in this process, the baseline every timing is set against;
- ``in-process``: ``nrtrec.query_node.VectorIndex`` in this process (string ids, attributes,
  filters, exact fallback), i.e. the node's own code without HTTP;
- ``http``: a real ``nrtrec query-node`` subprocess on a free loopback port; this process is the
  load generator, with one keep-alive ``httpx.Client`` (sequential requests, one connection).

The freshness section (``--no-freshness`` skips it) starts its own Kafka broker (the local runner,
in a temporary directory) and a second query node that follows ``item-deltas``.

The run is a list of sections (``SECTIONS``); each returns a JSON-able dict stored under its name
in the results, and may add panels to the plot (``PANELS``). bench/README.md explains every figure.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import importlib.metadata
import itertools
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import hnswlib
import httpx
import numpy as np
import typer
from confluent_kafka import KafkaError, Message, Producer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nrtrec.deploy.supervisor import log_tail
from nrtrec.query_node import IndexSpec, VectorIndex
from nrtrec.schemas import ItemDelta, ListingOp, Topic, encode
from nrtrec.schemas.partitioning import PRODUCER_CONFIG
from nrtrec.settings import KafkaSettings, QueryNodeSettings, Settings

INDEX = "bench"
MODEL_VERSION = 1
KS = (10, 100)
# Share of items a filter keeps; the `bucket` attribute is uniform over 0..99.
SELECTIVITIES = (0.5, 0.1, 0.01)
BUCKETS = 100
RECALL_TARGET = 0.95
HTTP_OVERHEAD_TARGET = 2.0
# The DESIGN target on the HTTP overhead is stated for indexes of at least this many vectors.
HTTP_OVERHEAD_MIN_N = 100_000
# Paths of the unfiltered latency loop, in the order they are plotted.
SEARCH_PATHS = ("hnswlib", "in_process", "http", "healthz")
FILTER_PATHS = ("hnswlib_filter", "in_process", "http")
LABELS = {
    "hnswlib": "hnswlib\nin-process",
    "hnswlib_filter": "hnswlib\n+ filter callback",
    "in_process": "VectorIndex\nin-process",
    "http": "query node\nHTTP search",
    "healthz": "query node\nHTTP /healthz",
}
# DESIGN: an item delta is searchable on the query node within 1 s of its produce, at p95.
FRESHNESS_TARGET_MS = 1000.0
# An item still not found this long after its produce counts as not found.
FRESHNESS_DEADLINE_S = 10.0
# Each pending item is searched again this long after its previous search started.
FRESHNESS_POLL_SPACING_S = 0.002
# Threads searching pending items (one keep-alive connection each): the most searches in flight.
FRESHNESS_POLLERS = 2
# The producer's batching delay (librdkafka's default, stated so the JSON records it).
FRESHNESS_LINGER_MS = 5

console = Console(stderr=True)


# ---- parameters, data, results ------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    n: int
    dim: int
    queries: int
    filter_queries: int
    clusters: int
    spread: float
    seed: int
    M: int
    ef_construction: int
    batch: int
    warmup: int
    ks: tuple[int, ...] = KS
    selectivities: tuple[float, ...] = SELECTIVITIES
    metric: str = "cosine"
    freshness: bool = True
    freshness_rate: float = 50.0
    freshness_seconds: float = 20.0
    freshness_preload: int = 10_000


@dataclass
class Data:
    """Unit vectors (cosine), queries drawn from the same mixture, and exact answers."""

    vectors: np.ndarray  # (n, dim) float32, row i is item id str(i) and hnswlib label i
    queries: np.ndarray  # (queries, dim) float32
    buckets: np.ndarray  # (n,) int, the `bucket` attribute
    exact: np.ndarray  # (queries, max k) rows of the exact nearest items, nearest first


@dataclass
class Bench:
    """What the sections share."""

    params: Params
    settings: QueryNodeSettings
    data: Data
    progress: Progress
    raw: hnswlib.Index | None = None
    index: VectorIndex | None = None
    node: NodeProcess | None = None
    results: dict[str, Any] = field(default_factory=dict)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(p: Params) -> Data:
    """A Gaussian mixture on the unit sphere: ``clusters`` random centres, each point its centre
    plus isotropic noise of total norm about ``spread``, normalised. Real embeddings cluster;
    uniform random vectors (``--spread`` large) are a worst case for HNSW."""
    rng = np.random.default_rng(p.seed)
    centres = unit(rng.standard_normal((p.clusters, p.dim), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        which = rng.integers(0, p.clusters, m)
        noise = rng.standard_normal((m, p.dim), dtype=np.float32)
        return unit(centres[which] + noise * np.float32(p.spread / math.sqrt(p.dim)))

    vectors = draw(p.n)
    queries = draw(p.queries)
    buckets = rng.integers(0, BUCKETS, p.n)
    exact = exact_knn(vectors, queries, max(p.ks))
    return Data(vectors, queries, buckets, exact)


def exact_knn(
    vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Row numbers of the ``k`` most similar vectors (among ``rows``) per query, nearest first;
    fewer columns when fewer rows match."""
    pool = vectors if rows is None else vectors[rows]
    k = min(k, len(pool))
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ pool.T
        if k < len(pool):
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(pool)), sims.shape)
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + 256] = np.take_along_axis(top, order, axis=1)
    return out if rows is None else rows[out]


def recall(found: Sequence[Sequence[int]], exact: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] & exact[:k]| / min(k, items that qualify)."""
    k = min(k, exact.shape[1])
    hits = [len(set(f[:k]) & set(e[:k].tolist())) / k for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def node_ef(settings: QueryNodeSettings, k: int) -> int:
    """The ef the node searches with when a request gives none (as ``VectorIndex.search``)."""
    return min(settings.max_ef, max(k, settings.ef_search, math.ceil(settings.ef_per_k * k)))


def percentiles(ns: Sequence[int]) -> dict[str, float]:
    ms = np.asarray(ns, np.float64) / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
    }


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """A collection in the middle of a timed call would land in the tail percentiles."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def timed_rounds(
    bench: Bench,
    what: str,
    paths: dict[str, Callable[[int], Any]],
    queries: int,
    after_warmup: Callable[[], None] | None = None,
) -> tuple[dict[str, list[int]], dict[str, list[Any]]]:
    """Query i goes through every path in turn (the order rotates per query), so drift in the
    machine's load (it is shared) hits all paths alike. Returns nanoseconds and answers by path.
    """
    names = list(paths)
    for i in range(min(bench.params.warmup, queries)):
        for name in names:
            paths[name](i)
    if after_warmup is not None:
        after_warmup()
    times: dict[str, list[int]] = {name: [] for name in names}
    answers: dict[str, list[Any]] = {name: [] for name in names}
    task = bench.progress.add_task(what, total=queries)
    with no_gc():
        for i in range(queries):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter_ns()
                answer = paths[name](i)
                times[name].append(time.perf_counter_ns() - t0)
                answers[name].append(answer)
            bench.progress.advance(task)
    return times, answers


# ---- the query node subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nrtrec_command() -> list[str]:
    beside = Path(sys.executable).with_name("nrtrec")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nrtrec")
    if found is None:
        raise RuntimeError("the `nrtrec` console script is not installed (pip install -e .)")
    return [found]


class NodeProcess:
    """``nrtrec query-node`` on a free loopback port, and one keep-alive client to it."""

    def __init__(
        self,
        workdir: Path,
        name: str = "query-node",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        data_dir = workdir / "data" if name == "query-node" else workdir / f"{name}-data"
        self.command = [
            *nrtrec_command(),
            "query-node",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            *extra_args,
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        # One connection, reused: the keep-alive case of the DESIGN target. No proxies from env.
        self.client = httpx.Client(
            base_url=self.url,
            timeout=120.0,
            trust_env=False,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def upsert(self, data: Data, lo: int, hi: int) -> None:
        """Items ``lo:hi`` of the bench data, with their ``bucket`` attribute, in one call."""
        items = [
            {"id": str(i), "vector": v, "attributes": {"bucket": b}}
            for i, v, b in zip(
                range(lo, hi),
                data.vectors[lo:hi].tolist(),
                data.buckets[lo:hi].tolist(),
                strict=True,
            )
        ]
        self.client.post(f"/v1/indexes/{INDEX}/upsert", json={"items": items}).raise_for_status()

    def create_index(self, p: Params, max_elements: int) -> None:
        """The bench index, with the same graph parameters as the in-process baseline."""
        self.client.put(
            f"/v1/indexes/{INDEX}",
            json={
                "dim": p.dim,
                "metric": p.metric,
                "model_version": MODEL_VERSION,
                "M": p.M,
                "ef_construction": p.ef_construction,
                "max_elements": max_elements,
            },
        ).raise_for_status()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"query node exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/healthz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"query node not healthy after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def searches_by_strategy(self) -> Counter[str]:
        """The node's own count of searches of our index by strategy (from /metrics)."""
        text = self.client.get("/metrics").raise_for_status().text
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "nrtrec_query_node_searches":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("index") == INDEX:
                    counts[sample.labels["strategy"]] += int(sample.value)
        return counts

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ---- section: build -----------------------------------------------------------------------


def section_build(bench: Bench) -> dict[str, Any]:
    """Upsert every vector, in batches of ``batch``, into each of the three indexes. Batch j goes
    into all three before batch j+1 (the order rotating), as queries do in ``timed_rounds``."""
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

    out: dict[str, Any] = {"batch": p.batch, "max_elements": p.n}
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


# ---- section: unfiltered search -----------------------------------------------------------


def section_search(bench: Bench) -> dict[str, Any]:
    """Recall and latency at the node's default ef, per k, for the three indexes and /healthz."""
    p, data = bench.params, bench.data
    raw, index, node = bench.raw, bench.index, bench.node
    assert raw is not None and index is not None and node is not None
    single = [q[None, :] for q in data.queries]
    out: dict[str, Any] = {}
    for k in p.ks:
        ef = node_ef(bench.settings, k)
        raw.set_ef(ef)
        path = f"/v1/indexes/{INDEX}/search"

        def http(i: int, k: int = k, path: str = path) -> Any:
            r = node.client.post(path, json={"vector": data.queries[i].tolist(), "k": k})
            return r.raise_for_status().json()["items"]

        def healthz(i: int) -> Any:
            return node.client.get("/healthz").raise_for_status().json()

        paths: dict[str, Callable[[int], Any]] = {
            "hnswlib": lambda i, k=k: raw.knn_query(single[i], k=k, num_threads=1)[0][0],
            "in_process": lambda i, k=k: index.search(data.queries[i], k),
            "http": http,
            "healthz": healthz,
        }
        times, answers = timed_rounds(bench, f"search k={k} (ef {ef})", paths, p.queries)
        found = {
            "hnswlib": [a.tolist() for a in answers["hnswlib"]],
            "in_process": [[int(h.id) for h in a.hits] for a in answers["in_process"]],
            "http": [[int(item["id"]) for item in a] for a in answers["http"]],
        }
        result: dict[str, Any] = {"k": k, "ef": ef}
        for name in SEARCH_PATHS:
            result[name] = percentiles(times[name])
            if name in found:
                result[name]["recall"] = recall(found[name], data.exact, k)
        strategies = Counter(a.strategy.value for a in answers["in_process"])
        result["in_process"]["strategies"] = dict(strategies)
        base = result["hnswlib"]["p95_ms"]
        result["ratios"] = {
            # The DESIGN target: what a search costs over HTTP beyond a no-op request.
            "http_overhead_p95": (result["http"]["p95_ms"] - result["healthz"]["p95_ms"]) / base,
            "http_overhead_p50": (result["http"]["p50_ms"] - result["healthz"]["p50_ms"])
            / result["hnswlib"]["p50_ms"],
            "in_process_p95": result["in_process"]["p95_ms"] / base,
            "http_p95": result["http"]["p95_ms"] / base,
            "healthz_p95": result["healthz"]["p95_ms"] / base,
        }
        out[f"k{k}"] = result
    return out


# ---- section: filtered search -------------------------------------------------------------


def section_filtered(bench: Bench) -> dict[str, Any]:
    """Range filters on `bucket` keeping 50%, 10% and 1% of the items."""
    p, data = bench.params, bench.data
    raw, index, node = bench.raw, bench.index, bench.node
    assert raw is not None and index is not None and node is not None
    nq = min(p.filter_queries, p.queries)
    queries = data.queries[:nq]
    single = [q[None, :] for q in queries]
    unfiltered = bench.results.get("search", {})
    out: dict[str, Any] = {"queries": nq, "by_selectivity": []}
    for selectivity in p.selectivities:
        below = round(selectivity * BUCKETS)
        flt = {"bucket": {"lt": below}}
        mask = data.buckets < below
        rows = np.flatnonzero(mask)
        exact = exact_knn(data.vectors, queries, max(p.ks), rows)
        entry: dict[str, Any] = {
            "selectivity": selectivity,
            "filter": flt,
            "matching": len(rows),
            "fraction": len(rows) / p.n,
        }
        for k in p.ks:
            ef = node_ef(bench.settings, k)
            raw.set_ef(ef)
            k_raw = min(k, len(rows))
            failed: list[int] = []
            path = f"/v1/indexes/{INDEX}/search"

            def hnswlib_filter(
                i: int,
                k_raw: int = k_raw,
                allowed: Any = mask.__getitem__,
                failed: list[int] = failed,
            ) -> Any:
                try:
                    return raw.knn_query(single[i], k=k_raw, num_threads=1, filter=allowed)[0][0]
                except RuntimeError:
                    # hnswlib found fewer than k that pass the filter.
                    failed.append(i)
                    return np.empty(0, np.int64)

            def http(i: int, k: int = k, path: str = path, flt: dict = flt) -> Any:
                body = {"vector": queries[i].tolist(), "k": k, "filter": flt}
                return node.client.post(path, json=body).raise_for_status().json()["items"]

            label = f"filter {selectivity:.0%} k={k} (ef {ef})"
            # The callback baseline walks much of the graph holding the GIL (milliseconds at
            # 1%): it runs in a loop of its own, so it neither delays nor evicts the caches of
            # the two paths compared with each other.
            times, answers = timed_rounds(
                bench,
                f"{label}: hnswlib",
                {"hnswlib_filter": hnswlib_filter},
                nq,
                after_warmup=failed.clear,
            )
            paths: dict[str, Callable[[int], Any]] = {
                "in_process": lambda i, k=k, flt=flt: index.search(queries[i], k, filter=flt),
                "http": http,
            }
            before: Counter[str] = Counter()
            node_times, node_answers = timed_rounds(
                bench,
                f"{label}: node",
                paths,
                nq,
                after_warmup=lambda before=before: before.update(node.searches_by_strategy()),
            )
            node_strategies = node.searches_by_strategy() - before
            times.update(node_times)
            answers.update(node_answers)
            found = {
                "hnswlib_filter": [a.tolist() for a in answers["hnswlib_filter"]],
                "in_process": [[int(h.id) for h in a.hits] for a in answers["in_process"]],
                "http": [[int(item["id"]) for item in a] for a in answers["http"]],
            }
            result: dict[str, Any] = {"k": k, "ef": ef}
            for name in FILTER_PATHS:
                result[name] = {
                    **percentiles(times[name]),
                    "recall": recall(found[name], exact, k),
                }
            result["hnswlib_filter"]["failures"] = len(failed)
            result["in_process"]["strategies"] = dict(
                Counter(a.strategy.value for a in answers["in_process"])
            )
            # The node's own count (its /metrics), for the timed queries.
            result["http"]["strategies"] = dict(node_strategies)
            base = unfiltered.get(f"k{k}", {}).get("hnswlib", {}).get("p95_ms")
            if base:
                result["ratio_p95_to_unfiltered_hnswlib"] = {
                    name: result[name]["p95_ms"] / base for name in FILTER_PATHS
                }
            entry[f"k{k}"] = result
        out["by_selectivity"].append(entry)
    return out


# ---- section: delta freshness -------------------------------------------------------------


@dataclass
class _Pending:
    """An item produced to item-deltas and not yet found by a search."""

    item_id: str
    body: bytes  # its search request, encoded once: its own vector, k=1
    produced_ns: int  # perf_counter_ns() just before producer.produce()
    last_start_ns: int | None = None  # when its previous (unsuccessful) search started
    polls: int = 0


@dataclass(frozen=True)
class _Found:
    item_id: str
    freshness_ns: int  # produce -> the end of the first search that returned the item
    lower_ns: int  # produce -> the start of the search before it (or 0): the item came after
    polls: int


class FreshnessPoller:
    """Searches every pending item for its own vector (k=1) until the node answers with its id.

    ``threads`` threads, each with its own keep-alive connection, take the item whose next search
    is due soonest; an item's next search is due ``spacing_s`` after its previous one started,
    and no item is searched by two threads at once. At most ``threads`` searches are in flight:
    when the node is slower than the schedule, the spacing stretches (the JSON reports it) rather
    than the load growing. An item not found within ``deadline_s`` of its produce is given up.
    """

    def __init__(self, url: str, path: str, spacing_s: float, deadline_s: float, threads: int):
        self.url, self.path = url, path
        self.spacing_ns = round(spacing_s * 1e9)
        self.deadline_ns = round(deadline_s * 1e9)
        self._heap: list[tuple[int, int, _Pending]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self.found: list[_Found] = []
        self.missed: list[_Pending] = []
        self.search_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._run, name=f"freshness-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(30)

    def add(self, item: _Pending) -> None:
        with self._cond:
            heapq.heappush(self._heap, (item.produced_ns, next(self._seq), item))
            self._cond.notify()

    def reset(self) -> None:
        """Forget what was found so far (after the warm-up)."""
        with self._cond:
            self.found, self.missed, self.search_ns = [], [], []
            self.errors.clear()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Whether every item added was found or given up within ``timeout``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._heap and not self._in_flight, timeout=timeout
            )

    def _next(self) -> _Pending | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait_ns = self._heap[0][0] - time.perf_counter_ns()
                    if wait_ns <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait_ns / 1e9)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        client = httpx.Client(
            base_url=self.url,
            timeout=5.0,
            trust_env=False,
            headers={"content-type": "application/json"},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        with client:
            while (item := self._next()) is not None:
                start = time.perf_counter_ns()
                error = None
                try:
                    r = client.post(self.path, content=item.body)
                    r.raise_for_status()
                    items = r.json()["items"]
                    hit = bool(items) and items[0]["id"] == item.item_id
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    hit, error = False, type(e).__name__
                end = time.perf_counter_ns()
                with self._cond:
                    self._in_flight -= 1
                    self.search_ns.append(end - start)
                    if error is not None:
                        self.errors[error] += 1
                    item.polls += 1
                    if hit:
                        lower = 0 if item.last_start_ns is None else item.last_start_ns
                        self.found.append(
                            _Found(
                                item.item_id,
                                end - item.produced_ns,
                                max(0, lower - item.produced_ns),
                                item.polls,
                            )
                        )
                    elif end - item.produced_ns >= self.deadline_ns:
                        self.missed.append(item)
                    else:
                        item.last_start_ns = start
                        due = max(start + self.spacing_ns, end)
                        heapq.heappush(self._heap, (due, next(self._seq), item))
                    self._cond.notify_all()


class DeltaSource:
    """Upserts of new items (random unit vectors) to item-deltas, each handed to the poller
    right after its produce."""

    def __init__(self, bootstrap: str, p: Params, poller: FreshnessPoller):
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **PRODUCER_CONFIG,
            "linger.ms": FRESHNESS_LINGER_MS,
        }
        self.producer = Producer(self.config)
        self.topic = Topic.ITEM_DELTAS.value
        self.poller = poller
        self.dim = p.dim
        self.rng = np.random.default_rng(p.seed + 1)
        self.produced = 0
        self.errors: list[KafkaError] = []

    def _delivered(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self.errors.append(error)

    def run(self, prefix: str, count: int, rate: float, on_produce: Callable[[], None]) -> float:
        """Produce ``count`` upserts at ``rate`` per second; returns the seconds it took from
        the first produce to the last."""
        vectors = unit(self.rng.standard_normal((count, self.dim), dtype=np.float32))
        buckets = self.rng.integers(0, BUCKETS, count).tolist()
        start = time.perf_counter()
        first = last = 0
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            item_id = f"{prefix}-{i}"
            vector = vectors[i].tolist()
            value = encode(
                ItemDelta(
                    op=ListingOp.UPSERT,
                    item_id=item_id,
                    model_version=MODEL_VERSION,
                    vector=vector,
                    attributes={"bucket": buckets[i]},
                    source_ts=int(time.time() * 1000),
                )
            )
            body = json.dumps({"vector": vector, "k": 1}).encode()
            produced = time.perf_counter_ns()
            self.producer.produce(
                self.topic, key=item_id.encode(), value=value, on_delivery=self._delivered
            )
            self.poller.add(_Pending(item_id, body, produced))
            self.producer.poll(0)
            self.produced += 1
            first = first or produced
            last = produced
            on_produce()
        return (last - first) / 1e9

    def flush(self) -> None:
        left = self.producer.flush(30)
        if left or self.errors:
            raise RuntimeError(
                f"{left} delta(s) undelivered, {len(self.errors)} failed"
                + (f": {self.errors[0]}" if self.errors else "")
            )

    def close(self) -> None:
        """Before the broker stops: a producer still open then logs the lost connection."""
        self.producer.flush(5)
        close = getattr(self.producer, "close", None)  # newer confluent-kafka only
        if close is not None:
            close()
        # Otherwise librdkafka's handle is destroyed with the last reference.
        del self.producer


def histogram(node: NodeProcess, name: str) -> dict[str, float]:
    """One histogram of the node's /metrics: cumulative bucket counts by ``le``, sum, count."""
    text = node.client.get("/metrics").raise_for_status().text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out[sample.labels["le"]] = sample.value
            elif sample.name.endswith(("_sum", "_count")):
                out[sample.name.rsplit("_", 1)[1]] = sample.value
    return out


def section_freshness(bench: Bench) -> dict[str, Any]:
    """Produce -> searchable: upserts of new items to item-deltas at a steady rate, each item
    searched for over HTTP until the node returns it. A failure here is recorded, not raised:
    the other sections' results are still written."""
    try:
        return _freshness(bench)
    except Exception as e:
        console.print(f"[red]freshness section failed: {type(e).__name__}: {e}[/red]")
        console.print_exception()
        return {"error": f"{type(e).__name__}: {e}"}


def _freshness(bench: Bench) -> dict[str, Any]:
    from nrtrec.deploy import LocalRunner
    from nrtrec.deploy.services.kafka import KafkaService

    p, data, progress = bench.params, bench.data, bench.progress
    rate, count = p.freshness_rate, max(1, round(p.freshness_rate * p.freshness_seconds))
    warmup = max(20, round(rate * 2))
    preload = min(p.n, p.freshness_preload)
    ef = node_ef(bench.settings, 1)
    timings: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-fresh-")))
        task = progress.add_task("freshness: Kafka (local runner)", total=None)
        t0 = time.perf_counter()
        settings = Settings(
            run_dir=tmp / "kafka",
            kafka=KafkaSettings(port=free_port(), controller_port=free_port()),
        )
        runner = LocalRunner(settings, [KafkaService(settings)])
        # Registered first: stopped whatever happens after, up() failing half-way included.
        stack.callback(runner.down)
        try:
            runner.up(on_progress=lambda m: progress.update(task, description=f"freshness: {m}"))
        except Exception:
            for log in sorted((tmp / "kafka").rglob("*.log")):
                console.print(f"[red]{log} (tail):[/red]\n{log_tail(log)}")
            raise
        bootstrap = settings.kafka.bootstrap_servers
        timings["kafka_start"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress.update(task, description="freshness: query node following item-deltas")
        partitions = ",".join(str(i) for i in range(settings.kafka.partitions))
        group = "nrtrec-bench-freshness"
        node = NodeProcess(
            tmp,
            name="freshness-node",
            extra_args=["--kafka", bootstrap, "--partitions", partitions, "--group", group],
            env={
                **os.environ,
                "NRTREC_RUN_DIR": str(tmp / "node-run"),
                "NRTREC_QUERY_NODE__INDEX_NAME": INDEX,
                "NRTREC_QUERY_NODE__DELTAS_TOPIC": Topic.ITEM_DELTAS.value,
                "NRTREC_QUERY_NODE__DEAD_LETTERS_TOPIC": Topic.DEAD_LETTERS.value,
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
                task, description=f"freshness: preload {preload:,} items (HTTP upsert)", total=None
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
            source = DeltaSource(bootstrap, p, poller)
            stack.callback(source.close)

            # Warm-up, untimed: connects the producer, and proves the path end to end (the
            # consumer is assigned and applying) before anything is measured.
            t0 = time.perf_counter()
            progress.update(task, description=f"freshness: warm-up, {warmup} deltas", total=None)
            source.run("warmup", warmup, rate, lambda: None)
            source.flush()
            if not poller.wait_idle(60) or len(poller.found) < warmup:
                raise RuntimeError(
                    f"warm-up: {len(poller.found)} of {warmup} deltas found, "
                    f"{poller.pending} pending; node log:\n{node.tail()}"
                )
            timings["warmup"] = time.perf_counter() - t0
            poller.reset()
            before = histogram(node, "nrtrec_query_node_delta_delay_seconds")

            t0 = time.perf_counter()
            progress.update(
                task,
                description=f"freshness: {count} deltas at {rate:g}/s",
                total=count,
                completed=0,
            )
            with no_gc():
                produce_s = source.run("fresh", count, rate, lambda: progress.advance(task))
                source.flush()
                progress.update(task, description="freshness: last items")
                poller.wait_idle(FRESHNESS_DEADLINE_S + 30)
            timings["measure"] = time.perf_counter() - t0
            after = histogram(node, "nrtrec_query_node_delta_delay_seconds")
            poller.stop()
            # Dropping the index first spares the node saving a snapshot of it on shutdown.
            node.client.delete(f"/v1/indexes/{INDEX}").raise_for_status()
        except Exception:
            console.print(f"[red]freshness query node log (tail):[/red]\n{node.tail()}")
            raise

    found, missed = poller.found, poller.missed
    if len(found) + len(missed) != count:
        raise RuntimeError(f"{count} produced, {len(found)} found, {len(missed)} given up")
    ms = np.array([f.freshness_ns for f in found], np.float64) / 1e6
    lower = np.array([f.lower_ns for f in found], np.float64) / 1e6
    polls = np.array([f.polls for f in found], np.float64)
    out: dict[str, Any] = {
        "rate_per_s": rate,
        "seconds": p.freshness_seconds,
        "achieved_rate_per_s": (count - 1) / produce_s if produce_s > 0 else None,
        "n": count,
        "found": len(found),
        "not_found": len(missed),
        "deadline_s": FRESHNESS_DEADLINE_S,
        "target_p95_ms": FRESHNESS_TARGET_MS,
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
        "k": 1,
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
    out["node_command"] = " ".join(node.command[1:])
    out["timings_s"] = timings
    out["method"] = (
        f"{count} upserts of new items (random unit vectors) produced to item-deltas at "
        f"{rate:g}/s (keyed by item id, murmur2 partitioner, linger.ms {FRESHNESS_LINGER_MS}) "
        f"to a local broker; a query node (`nrtrec query-node --kafka`, all "
        f"{settings.kafka.partitions} partitions) holding {preload:,} items applies them. "
        f"Freshness of an item: from just before producer.produce() to the end of the first "
        f"HTTP search for its own vector (k=1) that returns its id. Each pending item is "
        f"searched every {FRESHNESS_POLL_SPACING_S * 1e3:g} ms (from one search's start to the "
        f"next), by {FRESHNESS_POLLERS} threads over keep-alive connections; not found within "
        f"{FRESHNESS_DEADLINE_S:g} s: not_found. Percentiles are over the found items."
    )
    out["freshness_ms"] = [round(float(x), 3) for x in ms]
    return out


# Sections run in this order; each one's dict lands in results[name]. Add new ones here.
SECTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "build": section_build,
    "search": section_search,
    "filtered": section_filtered,
    "freshness": section_freshness,
}


# ---- targets, machine ---------------------------------------------------------------------


def targets(p: Params, results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    search = results.get("search")
    if search:
        out["recall"] = {
            "min": RECALL_TARGET,
            "values": {
                f"{name}@{k}": search[f"k{k}"][name]["recall"]
                for k in p.ks
                for name in ("hnswlib", "in_process", "http")
            },
        }
        out["recall"]["met"] = all(v >= RECALL_TARGET for v in out["recall"]["values"].values())
        if 100 in p.ks:
            value = search["k100"]["ratios"]["http_overhead_p95"]
            out["http_overhead_k100"] = {
                "definition": "(p95 HTTP search - p95 HTTP /healthz) / p95 in-process hnswlib",
                "value": value,
                "max": HTTP_OVERHEAD_TARGET,
                "met": value <= HTTP_OVERHEAD_TARGET,
                "applies": p.n >= HTTP_OVERHEAD_MIN_N,
            }
    filtered = results.get("filtered")
    if filtered:
        tight = min(filtered["by_selectivity"], key=lambda e: e["selectivity"])
        values = {f"http@{k}": tight[f"k{k}"]["http"]["recall"] for k in p.ks}
        out["filtered_recall"] = {
            "selectivity": tight["selectivity"],
            "min": RECALL_TARGET,
            "values": values,
            "met": all(v >= RECALL_TARGET for v in values.values()),
        }
    freshness = results.get("freshness")
    if freshness and "error" not in freshness:
        out["freshness"] = {
            "definition": "p95 of produce to item-deltas -> first HTTP search that finds the item",
            "value_ms": freshness.get("p95_ms"),
            "max_ms": FRESHNESS_TARGET_MS,
            "not_found": freshness["not_found"],
            "met": freshness["met"],
        }
    return out


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
                break
    status = _git("status", "--porcelain")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": None if ram is None else round(ram / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            pkg: _version(pkg)
            for pkg in ("nrtrec", "hnswlib", "numpy", "fastapi", "uvicorn", "httpx", "uvloop")
        },
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "loadavg_start": list(os.getloadavg()),
    }


# ---- plot ---------------------------------------------------------------------------------

COLOURS = {"p50": "#4c72b0", "p95": "#dd8452", "p99": "#c44e52"}


def _bar_labels(ax: Any, bars: Any, fmt: str = "{:.2f}") -> None:
    for bar in bars:
        height = bar.get_height()
        if height > 0:
            ax.annotate(
                fmt.format(height),
                (bar.get_x() + bar.get_width() / 2, height),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )


def _panel_latency(k: int) -> Callable[[Any, dict[str, Any]], bool]:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        search = results.get("search", {}).get(f"k{k}")
        if not search:
            return False
        x = np.arange(len(SEARCH_PATHS))
        width = 0.26
        for j, q in enumerate(("p50", "p95", "p99")):
            values = [search[name][f"{q}_ms"] for name in SEARCH_PATHS]
            bars = ax.bar(x + (j - 1) * width, values, width, label=q, color=COLOURS[q])
            _bar_labels(ax, bars)
        ticks = []
        for name in SEARCH_PATHS:
            label = LABELS[name]
            if "recall" in search[name]:
                label += f"\nrecall@{k} {search[name]['recall']:.3f}"
            ticks.append(label)
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_ylabel("latency per query (ms)")
        ax.set_title(f"Search latency, k={k}, ef={search['ef']} (sequential, single query)")
        ratios = search["ratios"]
        target = f" (target <= {HTTP_OVERHEAD_TARGET:g})" if k == 100 else ""
        ax.text(
            0.02,
            0.97,
            f"(p95 search - p95 healthz) / p95 hnswlib = {ratios['http_overhead_p95']:.2f}"
            f"{target}\np95 VectorIndex / p95 hnswlib = {ratios['in_process_p95']:.2f}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
        ax.legend(loc="upper right", fontsize=8)
        return True

    return panel


def _panel_build(ax: Any, results: dict[str, Any]) -> bool:
    build = results.get("build")
    if not build:
        return False
    names = ("hnswlib", "in_process", "http")
    labels = ("hnswlib\nadd_items", "VectorIndex\nupsert", "query node\nHTTP upsert")
    values = [build[name]["items_per_s"] for name in names]
    bars = ax.bar(labels, values, color=["#4c72b0", "#55a868", "#dd8452"])
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(
            f"{bar.get_height():,.0f}/s\n({build['ratio_to_hnswlib'][name]:.2f}x)",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, max(values) * 1.25)
    ax.set_ylabel("items per second")
    ax.set_title(f"Build: upsert throughput (batches of {build['batch']})")
    return True


def _selectivity_ticks(filtered: dict[str, Any], k: int | None = None) -> list[str]:
    ticks = []
    for entry in filtered["by_selectivity"]:
        label = f"{entry['selectivity']:.0%} ({entry['matching']:,} items)"
        ks = [k] if k else [int(key[1:]) for key in entry if key.startswith("k")]
        # What the node reported in its /metrics.
        chosen = sorted({s for kk in ks for s in entry[f"k{kk}"]["http"]["strategies"]})
        ticks.append(f"{label}\nnode: {', '.join(chosen)}")
    return ticks


def _panel_filtered_recall(ax: Any, results: dict[str, Any]) -> bool:
    filtered = results.get("filtered")
    if not filtered:
        return False
    entries = filtered["by_selectivity"]
    ks = [int(key[1:]) for key in entries[0] if key.startswith("k")]
    series = [(name, k) for name in ("http", "hnswlib_filter") for k in ks]
    x = np.arange(len(entries))
    width = 0.8 / len(series)
    colours = ["#dd8452", "#c44e52", "#8da0cb", "#4c72b0"]
    lowest = 1.0
    for j, (name, k) in enumerate(series):
        values = [e[f"k{k}"][name]["recall"] for e in entries]
        lowest = min(lowest, *values)
        label = ("query node (HTTP)" if name == "http" else "hnswlib + filter callback") + f" @{k}"
        offset = x + (j - (len(series) - 1) / 2) * width
        bars = ax.bar(offset, values, width, label=label, color=colours[j % len(colours)])
        _bar_labels(ax, bars, "{:.3f}")
    ax.axhline(RECALL_TARGET, color="black", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_ylim(max(0.0, min(lowest, RECALL_TARGET) - 0.1), 1.04)
    ax.set_xticks(x, _selectivity_ticks(filtered), fontsize=8)
    ax.set_ylabel("recall vs exact search over matching items")
    ax.set_xlabel("filter selectivity (share of items kept)")
    ax.set_title(f"Filtered recall ({filtered['queries']} queries)")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.95)
    return True


def _panel_filtered_latency(k: int) -> Callable[[Any, dict[str, Any]], bool]:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        filtered = results.get("filtered")
        if not filtered or f"k{k}" not in filtered["by_selectivity"][0]:
            return False
        entries = filtered["by_selectivity"]
        x = np.arange(len(entries))
        width = 0.8 / len(FILTER_PATHS)
        colours = {"hnswlib_filter": "#4c72b0", "in_process": "#55a868", "http": "#dd8452"}
        for j, name in enumerate(FILTER_PATHS):
            offset = x + (j - (len(FILTER_PATHS) - 1) / 2) * width
            p95 = [e[f"k{k}"][name]["p95_ms"] for e in entries]
            p50 = [e[f"k{k}"][name]["p50_ms"] for e in entries]
            bars = ax.bar(offset, p95, width, color=colours[name], label=f"{LABELS[name]} p95")
            ax.plot(offset, p50, "k_", markersize=14, markeredgewidth=2)
            _bar_labels(ax, bars)
        ax.plot([], [], "k_", markersize=14, markeredgewidth=2, label="p50")
        base = results.get("search", {}).get(f"k{k}", {}).get("hnswlib", {}).get("p95_ms")
        if base:
            ax.axhline(base, color="grey", linestyle=":", label="unfiltered hnswlib p95")
        ax.set_yscale("log")
        # Head room above the bars for the legend.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 8)
        ax.set_xticks(x, _selectivity_ticks(filtered, k), fontsize=8)
        ax.set_ylabel("latency per query (ms, log scale)")
        ax.set_xlabel("filter selectivity (share of items kept)")
        ax.set_title(f"Filtered search latency, k={k} (bar: p95, tick: p50)")
        ax.legend(fontsize=7, loc="upper left", ncols=2)
        return True

    return panel


def _panel_freshness(ax: Any, results: dict[str, Any]) -> bool:
    from matplotlib.ticker import FuncFormatter

    fresh = results.get("freshness")
    if not fresh or not fresh.get("freshness_ms"):
        return False
    ms = np.sort(np.asarray(fresh["freshness_ms"], np.float64))
    share = np.arange(1, len(ms) + 1) / fresh["n"]  # not-found items never reach the top
    ax.step(ms, share, where="post", color="#4c72b0", label="produce -> searchable (found items)")
    for q, colour in (("p50", COLOURS["p50"]), ("p95", COLOURS["p95"])):
        value = fresh[f"{q}_ms"]
        ax.axvline(value, color=colour, linestyle=":", label=f"{q} {value:.1f} ms")
    ax.axvline(
        fresh["target_p95_ms"], color="black", linestyle="--", linewidth=1, label="target p95 1 s"
    )
    ax.axhline(0.95, color="grey", linewidth=0.6)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    low = max(0.1, ms[0] / 1.5)
    ax.set_xlim(low, max(fresh["target_p95_ms"], ms[-1]) * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ms from producer.produce() to the first search that returns the item (log)")
    ax.set_ylabel("share of items produced")
    ax.set_title(f"Delta freshness: {fresh['n']} new items at {fresh['rate_per_s']:g}/s via Kafka")
    polling = fresh["polling"]
    ax.text(
        0.98,
        0.05,
        f"p50/p95/p99/max {fresh['p50_ms']:.1f}/{fresh['p95_ms']:.1f}/{fresh['p99_ms']:.1f}"
        f"/{fresh['max_ms']:.1f} ms\nfound {fresh['found']}, not found in "
        f"{fresh['deadline_s']:g} s: {fresh['not_found']}\n"
        f"polled every {polling['spacing_ms']:g} ms, {polling['searches_per_s']:,.0f} searches/s; "
        f"index {fresh['preload']:,} + new",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
    )
    ax.legend(loc="center", fontsize=8)
    return True


# Plot panels in order; a panel returns False when its section did not run. Add new ones here.
PANELS: list[Callable[[Any, dict[str, Any]], bool]] = [
    _panel_latency(10),
    _panel_latency(100),
    _panel_build,
    _panel_filtered_recall,
    _panel_filtered_latency(10),
    _panel_filtered_latency(100),
    _panel_freshness,
]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(PANELS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 5.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, panel in zip(flat, PANELS, strict=False):
        if not panel(ax, results):
            ax.set_visible(False)
    for ax in flat[len(PANELS) :]:
        ax.set_visible(False)
    p, m = results["params"], results["machine"]
    fig.suptitle(
        f"nrtrec query node: {p['n']:,} vectors, dim {p['dim']}, {p['metric']}, "
        f"M={p['M']}, ef_construction={p['ef_construction']}, {p['queries']} queries\n"
        f"{m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, "
        f"hnswlib {m['versions']['hnswlib']}, {m['date']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


# ---- report -------------------------------------------------------------------------------


def summary(results: dict[str, Any]) -> Table:
    table = Table(title="query node benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    build = results.get("build")
    if build:
        for name in ("hnswlib", "in_process", "http"):
            table.add_row(f"build {name} items/s", f"{build[name]['items_per_s']:,.0f}")
    for key, search in results.get("search", {}).items():
        for name in SEARCH_PATHS:
            s = search[name]
            recall_text = f"  recall {s['recall']:.3f}" if "recall" in s else ""
            table.add_row(
                f"{key} {name} p50/p95/p99 ms",
                f"{s['p50_ms']:.3f}/{s['p95_ms']:.3f}/{s['p99_ms']:.3f}{recall_text}",
            )
        table.add_row(
            f"{key} (p95 http - p95 healthz)/p95 hnswlib",
            f"{search['ratios']['http_overhead_p95']:.2f}",
        )
    for entry in results.get("filtered", {}).get("by_selectivity", []):
        for key in (k for k in entry if k.startswith("k")):
            r = entry[key]
            table.add_row(
                f"filter {entry['selectivity']:.0%} {key} http recall, p50/p95 ms, strategy",
                f"{r['http']['recall']:.3f}, {r['http']['p50_ms']:.3f}/{r['http']['p95_ms']:.3f}"
                f", {','.join(r['in_process']['strategies'])}",
            )
    fresh = results.get("freshness")
    if fresh and "error" in fresh:
        table.add_row("freshness", f"[red]failed: {fresh['error']}[/red]")
    elif fresh:
        if fresh["found"]:
            table.add_row(
                "freshness p50/p95/p99/max ms (target p95 <= 1000)",
                f"{fresh['p50_ms']:.1f}/{fresh['p95_ms']:.1f}/{fresh['p99_ms']:.1f}"
                f"/{fresh['max_ms']:.1f}",
            )
        table.add_row(
            f"freshness at {fresh['rate_per_s']:g}/s: found / not found in "
            f"{fresh['deadline_s']:g} s",
            f"{fresh['found']} / {fresh['not_found']}",
        )
    return table


def _write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


# ---- command line -------------------------------------------------------------------------

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
_defaults = QueryNodeSettings()


@app.command()
def main(
    n: Annotated[int, typer.Option(min=1000, help="vectors in the index")] = 100_000,
    dim: Annotated[int, typer.Option(min=2, max=4096, help="vector dimension")] = 64,
    queries: Annotated[int, typer.Option(min=10, help="queries per unfiltered k")] = 1000,
    filter_queries: Annotated[
        int, typer.Option(min=10, help="queries per selectivity and k (the first of --queries)")
    ] = 200,
    clusters: Annotated[
        int | None, typer.Option(min=1, help="Gaussian clusters; default n / 100")
    ] = None,
    spread: Annotated[
        float, typer.Option(min=0.0, help="noise norm around a cluster centre (unit norm)")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the data and queries")] = 0,
    m: Annotated[int, typer.Option("--m", min=2, help="HNSW M")] = _defaults.M,
    ef_construction: Annotated[int, typer.Option(min=1)] = _defaults.ef_construction,
    batch: Annotated[int, typer.Option(min=1, help="items per upsert call")] = 1000,
    warmup: Annotated[int, typer.Option(min=0, help="untimed queries per loop")] = 50,
    freshness: Annotated[
        bool, typer.Option(help="delta freshness: starts Kafka and a second query node")
    ] = True,
    freshness_rate: Annotated[
        float, typer.Option(min=0.1, max=5000.0, help="item deltas per second")
    ] = 50.0,
    freshness_seconds: Annotated[
        float, typer.Option(min=1.0, max=600.0, help="seconds of item deltas at that rate")
    ] = 20.0,
    freshness_preload: Annotated[
        int, typer.Option(min=0, help="items in the freshness node's index first (at most n)")
    ] = 10_000,
    out: Annotated[Path, typer.Option(help="directory for query_node.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Benchmark a query node against in-process hnswlib on the same data; see bench/README.md."""
    settings = Settings().query_node
    if batch > settings.max_batch:
        raise typer.BadParameter(f"the node takes at most {settings.max_batch} items per call")
    params = Params(
        n=n,
        dim=dim,
        queries=queries,
        filter_queries=min(filter_queries, queries),
        clusters=clusters or max(1, n // 100),
        spread=spread,
        seed=seed,
        M=m,
        ef_construction=ef_construction,
        batch=batch,
        warmup=warmup,
        freshness=freshness,
        freshness_rate=freshness_rate,
        freshness_seconds=freshness_seconds,
        freshness_preload=freshness_preload,
    )
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    results: dict[str, Any] = {
        "benchmark": "query_node",
        "machine": machine,
        "params": {**asdict(params), "ef_by_k": {k: node_ef(settings, k) for k in params.ks}},
        "node_settings": settings.model_dump(mode="json"),
        "timings_s": {},
    }
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-bench-")))
        progress = stack.enter_context(
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            )
        )
        t0 = time.perf_counter()
        task = progress.add_task(f"data: {n:,} x {dim} vectors, exact top-{max(KS)}", total=None)
        data = make_data(params)
        progress.update(task, total=1, completed=1)
        results["timings_s"]["data"] = time.perf_counter() - t0
        node = NodeProcess(workdir)
        stack.callback(node.close)
        node.wait_healthy()
        results["params"]["node_command"] = " ".join(node.command[1:])
        bench = Bench(params, settings, data, progress, node=node, results=results)
        try:
            for name, section in SECTIONS.items():
                if name == "freshness" and not params.freshness:
                    continue
                t0 = time.perf_counter()
                results[name] = section(bench)
                results["timings_s"][name] = time.perf_counter() - t0
        except Exception:
            console.print(f"[red]query node log (tail):[/red]\n{node.tail()}")
            raise
        # Dropping the index first spares the node saving a snapshot of it on shutdown.
        node.client.delete(f"/v1/indexes/{INDEX}").raise_for_status()
    machine["loadavg_end"] = list(os.getloadavg())
    results["timings_s"]["total"] = time.perf_counter() - started
    results["targets"] = targets(params, results)

    json_path, png_path = out / "query_node.json", out / "query_node.png"
    _write(json_path, lambda p: p.write_text(json.dumps(results, indent=2) + "\n"))
    _write(png_path, lambda p: plot(results, p))
    console.print(summary(results))
    console.print(f"wrote {json_path} and {png_path} in {results['timings_s']['total']:.0f} s")
    if "error" in results.get("freshness", {}):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
