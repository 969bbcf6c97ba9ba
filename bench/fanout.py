"""Shard fan-out: one catalogue split over 1, 2, 4 and 8 query-node shards behind the gateway.

    python -m bench.fanout --out bench/results

The catalogue (default 1M ``tower_like`` vectors, ``bench.datasets``) is placed on
shards as the pipeline places items: by ``partition_for(item_id)`` over ``--partitions``
partitions, shard ``s`` owning partitions ``s, s + S, ...``. Each shard's index is built in
this process with the node's own settings and saved as a snapshot; one query-node process per
shard loads it (``POST /v1/indexes/items/load``), and a gateway fans out over them. Then, one
request at a time (so latency is not queueing), for k = 10 and 100 at a fixed ef:

- **gateway**: ``POST /v1/indexes/items/search`` through the gateway, as a client sees it;
- **slowest shard**: the same query sent to every shard directly, the slowest of them (the
  baseline: what a fan-out can at best cost);
- **fan-out overhead**: gateway minus slowest shard, per query, and per shard;
- **merge**: the gateway's ``merge_hits`` of the shards' real answers, in process (its pure
  CPU part);
- recall@k of the gateway's answers against exact search over the whole catalogue, and each
  node's resident memory with its shard loaded.

All processes share this machine's cores: with 8 shards on 2 cores the fan-out is bounded by
the CPU, not the network, and the JSON records the machine and its load. bench/README.md
explains every figure.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import psutil
import typer
from rich.console import Console

from bench.common import (
    ServerProcess,
    draw_panels,
    free_port,
    machine_info,
    nrtrec_command,
    percentiles,
    query_node_process,
    write_results,
)
from bench.datasets import tower_like, uniform_data
from bench.query_node.data import exact_knn, recall
from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.ann.snapshots import SnapshotStore
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.core.threads import limit_blas_threads
from nrtrec.query_node.fanout import merge_hits
from nrtrec.schemas.partitioning import ShardMap, partition_for
from nrtrec.schemas.query_api import Metric

INDEX = "items"
TOKEN = "bench-fanout-token"
BATCH = 10_000

console = Console(stderr=True)
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


# ---- building the shards ------------------------------------------------------------------------


def place(ids: list[str], shards: int, partitions: int) -> list[np.ndarray]:
    """The rows each shard holds: its partitions' items, as the item job would route them."""
    owner = np.empty(partitions, np.int64)
    for shard, owned in enumerate(ShardMap.of(shards, partitions).partitions):
        owner[list(owned)] = shard
    of_item = owner[[partition_for(i, partitions) for i in ids]]
    return [np.flatnonzero(of_item == s) for s in range(shards)]


def build_snapshot(
    vectors: np.ndarray, ids: list[str], rows: np.ndarray, settings: QueryNodeSettings, at: Path
) -> float:
    """One shard's index built and saved under ``at``; returns the build seconds."""
    spec = IndexSpec(INDEX, 1, vectors.shape[1], Metric.COSINE, M=settings.M,
                     ef_construction=settings.ef_construction, max_elements=len(rows))  # fmt: skip
    index = VectorIndex(spec, settings)
    t0 = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        chunk = rows[start : start + BATCH]
        index.upsert([ids[r] for r in chunk], vectors[chunk], [{} for _ in chunk])
    seconds = time.perf_counter() - t0
    SnapshotStore(at, settings).save(index)
    del index
    gc.collect()
    return seconds


# ---- serving them -------------------------------------------------------------------------------


@contextlib.contextmanager
def serve(shard_dirs: list[Path], import_root: Path, work: Path, partitions: int):
    """A query node per shard with its snapshot loaded, a gateway over them, and each node's
    resident set before its load."""
    nrtrec = nrtrec_command()
    env = {
        "NRTREC_LOG_FORMAT": "text",
        "NRTREC_RUN_DIR": str(work / "run"),
        "NRTREC_QUERY_NODE__IMPORT_ROOT": str(import_root),
    }
    with contextlib.ExitStack() as exits:
        nodes = []
        for s in range(len(shard_dirs)):
            node = query_node_process(f"query-node-{s}", work, work / f"node{s}", TOKEN, env)
            exits.callback(node.close)
            nodes.append(node)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        idle_rss = []
        for node, snapshots in zip(nodes, shard_dirs, strict=True):
            node.wait_healthy()
            idle_rss.append(psutil.Process(node.proc.pid).memory_info().rss)
            r = httpx.post(
                f"{node.url}/v1/indexes/{INDEX}/load",
                json={"snapshot_dir": str(snapshots)},
                headers=auth,
                timeout=600,
                trust_env=False,
            )
            if r.status_code != 200:
                raise RuntimeError(f"{node.name} did not load {snapshots}: {r.text}")
        port = free_port()
        argv = [*nrtrec, "gateway", "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN]
        argv += ["--num-partitions", str(partitions)]
        for node in nodes:
            argv += ["--shard", node.url]
        gateway = ServerProcess("gateway", argv, work, port, env)
        exits.callback(gateway.close)
        gateway.wait_healthy()
        yield gateway, nodes, idle_rss


def timed_post(client: httpx.Client, url: str, body: dict) -> tuple[int, list[dict]]:
    t0 = time.perf_counter_ns()
    r = client.post(url, json=body)
    elapsed = time.perf_counter_ns() - t0
    r.raise_for_status()
    return elapsed, r.json()["items"]


def health_ns(client: httpx.Client, url: str, rounds: int) -> list[int]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        client.get(f"{url}/healthz").raise_for_status()
        times.append(time.perf_counter_ns() - t0)
    return times


def measure(
    gateway: ServerProcess,
    nodes: list[ServerProcess],
    queries: np.ndarray,
    truth: np.ndarray,
    ks: dict[int, int],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    path = f"/v1/indexes/{INDEX}/search"
    with httpx.Client(trust_env=False, timeout=30) as client:
        for k, ef in ks.items():
            # Warm every connection and code path before timing.
            for q in queries[:20]:
                body = {"vector": q.tolist(), "k": k, "ef": ef}
                timed_post(client, gateway.url + path, body)
                for node in nodes:
                    timed_post(client, node.url + path, body)
            gw_ns, slowest_ns, overhead_ns, merge_ns, found = [], [], [], [], []
            for q in queries:
                body = {"vector": q.tolist(), "k": k, "ef": ef}
                t_gw, hits = timed_post(client, gateway.url + path, body)
                answers = [timed_post(client, node.url + path, body) for node in nodes]
                slowest = max(t for t, _ in answers)
                t0 = time.perf_counter_ns()
                merge_hits([a for _, a in answers], k, Metric.COSINE)
                merge_ns.append(time.perf_counter_ns() - t0)
                gw_ns.append(t_gw)
                slowest_ns.append(slowest)
                overhead_ns.append(t_gw - slowest)
                found.append([int(h["id"][1:]) for h in hits])
            overhead, merge = percentiles(overhead_ns), percentiles(merge_ns)
            out[str(k)] = {
                "ef": ef,
                "gateway": percentiles(gw_ns),
                "slowest_shard": percentiles(slowest_ns),
                "overhead": overhead,
                "overhead_per_shard_p50_ms": overhead["p50_ms"] / len(nodes),
                "merge": merge,
                "merge_per_shard_us": merge["p50_ms"] * 1000 / len(nodes),
                "recall": recall(found, truth, k),
            }
        out["healthz"] = {
            "gateway": percentiles(health_ns(client, gateway.url, 200)),
            "node": percentiles(health_ns(client, nodes[0].url, 200)),
        }
    rss = [psutil.Process(n.proc.pid).memory_info().rss for n in nodes]
    out["node_rss_bytes"] = rss
    return out


# ---- the plot -----------------------------------------------------------------------------------


def _xs(results: dict[str, Any]) -> list[int]:
    return [p["shards"] for p in results["points"]]


def _shard_axis(ax, xs: list[int]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(xs, [str(x) for x in xs])


def _lines(ax, results: dict[str, Any], series, ylabel: str, title: str) -> bool:
    """One line per ``(label, style, value of a point)`` over the shard counts."""
    xs = _xs(results)
    for label, style, value in series:
        ax.plot(xs, [value(p) for p in results["points"]], style, label=label)
    ax.set(xlabel="shards", ylabel=ylabel, title=title)
    _shard_axis(ax, xs)
    ax.legend(fontsize=7)
    return True


def _per_k(make):
    """``make(k)`` -> that k's series, for k = 10 and 100."""
    return [line for k in ("10", "100") for line in make(k)]


def _latency(ax, results: dict[str, Any]) -> bool:
    series = _per_k(lambda k: [
        (f"k={k}: through the gateway", "o-", lambda p: p[k]["gateway"]["p95_ms"]),
        (f"k={k}: slowest shard, direct", "s--", lambda p: p[k]["slowest_shard"]["p95_ms"]),
    ])  # fmt: skip
    return _lines(ax, results, series, "p95 ms", "Search p95, one at a time")


def _overhead(ax, results: dict[str, Any]) -> bool:
    series = _per_k(lambda k: [
        (f"k={k} {q[:3]}", "o-", lambda p, q=q: p[k]["overhead"][q]) for q in ("p50_ms", "p95_ms")
    ])  # fmt: skip
    return _lines(ax, results, series, "ms", "Fan-out overhead: gateway minus slowest shard")


def _merge(ax, results: dict[str, Any]) -> bool:
    series = _per_k(lambda k: [(f"k={k}", "o-", lambda p: p[k]["merge"]["p50_ms"] * 1000)])
    return _lines(ax, results, series, "µs (p50)", "merge_hits in process")


def _recall(ax, results: dict[str, Any]) -> bool:
    series = _per_k(lambda k: [(f"k={k}", "o-", lambda p: p[k]["recall"])])
    return _lines(ax, results, series, "recall@k", "Recall of the merged answer")


def _memory(ax, results: dict[str, Any]) -> bool:
    xs, n = _xs(results), results["params"]["n"]
    points = results["points"]
    ax.plot(xs, [sum(p["node_rss_bytes"]) / n for p in points], "o-", label="all of it")
    loaded = [sum(p["node_rss_bytes"]) - sum(p["node_rss_before_load_bytes"]) for p in points]
    ax.plot(xs, [b / n for b in loaded], "s--", label="the shards' indexes (minus idle nodes)")
    ax.set(xlabel="shards", ylabel="bytes per vector",
           title="The nodes' resident memory per vector")  # fmt: skip
    ax.legend(fontsize=7)
    _shard_axis(ax, xs)
    return True


def plot(results: dict[str, Any], path: Path) -> None:
    m, p = results["machine"], results["params"]
    title = (
        f"bench.fanout: {p['n']:,} {p['kind']} vectors (dim {p['dim']}) over shards behind the "
        f"gateway; {m['cpu']}, {m['cores']} cores, {m['date']}, {m['git_commit']}"
    )
    draw_panels([_latency, _overhead, _merge, _recall, _memory], results, path, title)


# ---- main ---------------------------------------------------------------------------------------


def main(
    n: Annotated[int, typer.Option(min=1000, help="catalogue size")] = 1_000_000,
    shards: Annotated[str, typer.Option(help="shard counts, comma-separated")] = "1,2,4,8",
    kind: Annotated[str, typer.Option(help="tower_like or uniform")] = "tower_like",
    partitions: Annotated[int, typer.Option(min=1, help="item-deltas partitions")] = 8,
    queries: Annotated[int, typer.Option(min=10)] = 300,
    ef10: Annotated[int, typer.Option(help="ef at k=10")] = 128,
    ef100: Annotated[int, typer.Option(help="ef at k=100")] = 256,
    epochs: Annotated[int, typer.Option(min=1, help="tower training (tower_like)")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="directory for fanout.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """One catalogue over 1, 2, 4, 8 shards behind the gateway; see bench/README.md."""
    counts = sorted(int(x) for x in shards.split(",") if x.strip())
    if max(counts) > partitions:
        raise typer.BadParameter(f"{max(counts)} shards need at least as many partitions")
    limit_blas_threads(1)
    settings = QueryNodeSettings()
    ks = {10: ef10, 100: ef100}
    if kind == "tower_like":
        vectors, qs = tower_like(n, queries, epochs, seed)
    elif kind == "uniform":
        vectors, qs = uniform_data(n, 64, queries, seed)
    else:
        raise typer.BadParameter(f"unknown kind {kind!r}")
    ids = [f"i{i}" for i in range(n)]
    console.print(f"exact top-100 of {queries} queries over {n:,} vectors")
    truth = exact_knn(vectors, qs, max(ks))
    results: dict[str, Any] = {
        "benchmark": "fanout",
        "machine": machine_info(),
        "params": {
            "n": n, "kind": kind, "dim": int(vectors.shape[1]), "shards": counts,
            "partitions": partitions, "queries": queries, "ef": {str(k): v for k, v in ks.items()},
            "M": settings.M, "ef_construction": settings.ef_construction, "seed": seed,
        },
        "points": [],
    }  # fmt: skip
    started = time.perf_counter()
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="nrtrec-fanout-") as tmp:
            work = Path(tmp)
            rows = place(ids, count, partitions)
            dirs, build_s = [], []
            for s, shard_rows in enumerate(rows):
                at = work / "import" / f"shard{s}"
                console.print(f"{count} shards: building shard {s} ({len(shard_rows):,} items)")
                build_s.append(build_snapshot(vectors, ids, shard_rows, settings, at))
                dirs.append(at)
            with serve(dirs, work / "import", work, partitions) as (gateway, nodes, idle_rss):
                console.print(f"{count} shards: searching")
                point = measure(gateway, nodes, qs, truth, ks)
                point["node_rss_before_load_bytes"] = idle_rss
            point.update(
                shards=count, items_per_shard=[len(r) for r in rows], build_seconds=build_s,
                loadavg=list(os.getloadavg()),
            )  # fmt: skip
            results["points"].append(point)
            p10 = point["10"]
            console.print(
                f"  k=10 gateway p95 {p10['gateway']['p95_ms']:.2f} ms, slowest shard "
                f"{p10['slowest_shard']['p95_ms']:.2f} ms, overhead p50 "
                f"{p10['overhead']['p50_ms']:.2f} ms, recall {p10['recall']:.3f}"
            )
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = write_results(out, "fanout", results, plot, default=float)
    console.print(f"wrote {json_path} and {png_path}")


cli.command()(main)

if __name__ == "__main__":
    cli()
