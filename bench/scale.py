"""Cost curves of one query node's index as the catalogue grows: how each cost scales with N.

    python -m bench.scale --out bench/results

For N = 10k, 100k, 300k, 1M vectors (dim 64, cosine) of two kinds, neither made to flatter:

- ``uniform``: unit vectors uniform on the sphere, queries from the same distribution;
- ``tower_like``: drawn from a Gaussian with the mean and covariance of the item tower's own
  vectors of the MovieLens catalogue (a pair trained here), queried from the same fit of the
  user tower's vectors. The tower's catalogue has only 1,682 items; this keeps its shape (its
  anisotropy, its spread), not its items.

Per N, on the index a query node holds (``ann.VectorIndex``, hnsw backend, the node's M and
ef_construction and insert threads):

- **build**: the N vectors through ``upsert`` in batches of 10,000 (with one attribute each),
  and, in the same run, a bare hnswlib ``add_items`` of the same vectors (the baseline);
- **upsert into the full index**: 10,000 of its items replaced by new vectors of the same kind;
- **memory**: the process's resident set before and after the build, per vector, beside what
  ``/v1/indexes`` reports (``memory()``);
- **snapshot**: write (``SnapshotStore.save``) and restore (``load_path``) seconds;
- **search**: for k = 10 and 100, the smallest ef of 16 … 4096 whose recall reaches 0.95 (the
  graph only), and its p50/p95 on one thread, against exact search (one matrix product over all
  N, the baseline measured on the same queries);
- **filtered**: 10 % and 1 % filters at that ef with the node's defaults (which may answer
  exactly), p95 and recall.

Then the growth exponent of each cost, ``a`` in cost ∝ N^a, by least squares on log-log.
bench/README.md explains every figure.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import hnswlib
import numpy as np
import psutil
import typer
from rich.console import Console

from bench.common import draw_panels, machine_info, percentiles, unit, write_results
from bench.datasets import tower_like, uniform_data
from bench.query_node.data import exact_knn, recall
from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.ann.snapshots import SnapshotStore
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.core.threads import limit_blas_threads
from nrtrec.schemas.query_api import Metric

KS = (10, 100)
EFS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
RECALL = 0.95
BATCH = 10_000
REPLACED = 10_000
GRAPH_ONLY = {"exact_search_max_count": 0, "exact_search_max_fraction": 0.0,
              "exact_search_cost_ratio": 0.0}  # fmt: skip
FILTERS = {"ten_percent": ({"bucket": {"lt": 10}}, 10), "one_percent": ({"bucket": 42}, 1)}

console = Console(stderr=True)
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


# ---- data ---------------------------------------------------------------------------------------


def rss() -> int:
    """This process's resident set, after handing freed heap back to the system: glibc keeps
    what an earlier (deleted) index freed, and a new one reusing it would look free of cost."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


def timed(call, queries: np.ndarray) -> tuple[list[int], list[Any]]:
    """``call(query)``'s duration (ns) and answer for each query."""
    times, answers = [], []
    for query in queries:
        t0 = time.perf_counter_ns()
        answer = call(query)
        times.append(time.perf_counter_ns() - t0)
        answers.append(answer)
    return times, answers


def _search(index: VectorIndex, query: np.ndarray, *, k: int, ef: int, filter=None):
    return index.search(query, k, ef=ef, filter=filter)


# ---- one size -----------------------------------------------------------------------------------


def measure(vectors: np.ndarray, queries: np.ndarray, settings: QueryNodeSettings, work: Path):
    n, dim = vectors.shape
    ids = [str(i) for i in range(n)]
    buckets = np.arange(n) % 100
    out: dict[str, Any] = {"n": n}

    t0 = time.perf_counter()
    bare = hnswlib.Index(space="cosine", dim=dim)
    bare.init_index(max_elements=n, M=settings.M, ef_construction=settings.ef_construction)
    for start in range(0, n, BATCH):
        rows = np.arange(start, min(n, start + BATCH))
        bare.add_items(vectors[rows], rows, num_threads=settings.insert_threads)
    hnswlib_s = time.perf_counter() - t0
    del bare

    before = rss()
    spec = IndexSpec("scale", 1, dim, Metric.COSINE, M=settings.M,
                     ef_construction=settings.ef_construction, max_elements=n)  # fmt: skip
    index = VectorIndex(spec, settings.model_copy(update=GRAPH_ONLY))
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        attrs = [{"bucket": int(b)} for b in buckets[start:stop]]
        index.upsert(ids[start:stop], vectors[start:stop], attrs)
    build_s = time.perf_counter() - t0
    resident = rss() - before
    memory = index.memory()
    out["build"] = {
        "seconds": build_s, "vectors_per_s": n / build_s, "hnswlib_seconds": hnswlib_s,
        "rate_ratio_to_hnswlib": hnswlib_s / build_s,
        "rss_bytes_per_vector": resident / n,
        "reported_bytes_per_vector": memory.vectors + memory.links,
    }  # fmt: skip

    rng = np.random.default_rng(n)
    replaced = rng.choice(n, min(REPLACED, n), replace=False)
    # New vectors of the same kind: other items' vectors, moved a little (no exact duplicates).
    others = vectors[rng.choice(n, len(replaced), replace=False)]
    fresh = unit(others + 0.05 * rng.standard_normal(others.shape).astype(np.float32))
    t0 = time.perf_counter()
    for start in range(0, len(replaced), 1_000):
        rows = replaced[start : start + 1_000]
        attrs = [{"bucket": int(buckets[r])} for r in rows]
        index.upsert([ids[r] for r in rows], fresh[start : start + 1_000], attrs)
    out["upsert_full"] = {"vectors_per_s": len(replaced) / (time.perf_counter() - t0)}
    vectors = vectors.copy()
    vectors[replaced] = fresh  # what the index holds now: the truth below is of this

    store = SnapshotStore(work / f"snap-{n}", settings)
    t0 = time.perf_counter()
    snapshot = store.save(index)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    restored, _ = store.load_path(snapshot.path)
    restore_s = time.perf_counter() - t0
    assert restored.count == n, (restored.count, n)
    del restored
    out["snapshot"] = {"write_s": write_s, "restore_s": restore_s}

    exact = exact_knn(vectors, queries, max(KS))
    exact_times, _ = timed(lambda q: np.argpartition(-(vectors @ q), 10)[:10], queries)
    out["exact_search"] = percentiles(exact_times)
    out["search"] = {}
    for k in KS:
        tried = []
        for ef in (ef for ef in EFS if ef >= k):
            times, answers = timed(partial(_search, index, k=k, ef=ef), queries)
            found = [[int(h.id) for h in a.hits] for a in answers]
            point = {"ef": ef, **percentiles(times), "recall": recall(found, exact, k)}
            tried.append(point)
            if point["recall"] >= RECALL:
                break
        best = tried[-1]
        best["p95_over_exact"] = best["p95_ms"] / out["exact_search"]["p95_ms"]
        best["reached"] = best["recall"] >= RECALL
        out["search"][str(k)] = {"at_recall": best, "tried": tried}

    index._settings = settings  # the node's own choice between the graph and exact search
    out["filtered"] = {}
    for name, (raw, percent) in FILTERS.items():
        rows = np.flatnonzero(buckets == 42) if percent == 1 else np.flatnonzero(buckets < 10)
        for k in KS:
            ef = out["search"][str(k)]["at_recall"]["ef"]
            truth = exact_knn(vectors, queries, k, rows)
            times, answers = timed(partial(_search, index, k=k, ef=ef, filter=raw), queries)
            found = [[int(h.id) for h in a.hits] for a in answers]
            out["filtered"][f"{name}_k{k}"] = {
                "ef": ef, **percentiles(times), "recall": recall(found, truth, k),
                "strategies": sorted({a.strategy.value for a in answers}),
            }  # fmt: skip
    return out


def exponents(points: list[dict[str, Any]]) -> dict[str, float]:
    """``a`` in cost ∝ N^a for each cost, least squares on log-log over the sizes."""
    if len(points) < 2:
        return {}
    n = np.log([p["n"] for p in points])
    series = {
        "build_seconds": [p["build"]["seconds"] for p in points],
        "rss_bytes_per_vector": [p["build"]["rss_bytes_per_vector"] for p in points],
        "upsert_full_seconds_per_vector": [1 / p["upsert_full"]["vectors_per_s"] for p in points],
        "snapshot_write_s": [p["snapshot"]["write_s"] for p in points],
        "snapshot_restore_s": [p["snapshot"]["restore_s"] for p in points],
        "exact_search_p95": [p["exact_search"]["p95_ms"] for p in points],
    }
    for k in KS:
        series[f"search_k{k}_p95"] = [p["search"][str(k)]["at_recall"]["p95_ms"] for p in points]
        for f in FILTERS:
            series[f"{f}_k{k}_p95"] = [p["filtered"][f"{f}_k{k}"]["p95_ms"] for p in points]
    return {
        name: float(np.polyfit(n, np.log(np.maximum(v, 1e-12)), 1)[0]) for name, v in series.items()
    }


# ---- plot ---------------------------------------------------------------------------------------


def _curve(ax, results, what: str, get, ylabel: str) -> bool:
    for kind, data in results["kinds"].items():
        ns = [p["n"] for p in data["sizes"]]
        for label, fn in get.items():
            ax.loglog(ns, [fn(p) for p in data["sizes"]], marker="o", label=f"{kind}: {label}")
    ax.set(title=what, xlabel="vectors in the index (N)", ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return True


def plot(results: dict[str, Any], path: Path) -> None:
    def s(k):
        return lambda p: p["search"][k]["at_recall"]["p95_ms"]

    panels = [
        lambda ax, r: _curve(ax, r, "Build: upsert, and bare hnswlib add_items",
                             {"upsert": lambda p: p["build"]["seconds"],
                              "hnswlib": lambda p: p["build"]["hnswlib_seconds"]}, "seconds"),
        lambda ax, r: _curve(ax, r, "Resident memory per vector",
                             {"RSS": lambda p: p["build"]["rss_bytes_per_vector"]}, "bytes"),
        lambda ax, r: _curve(ax, r, f"Search p95 at recall ≥ {RECALL} (one thread)",
                             {"k=10": s("10"), "k=100": s("100"),
                              "exact k=10": lambda p: p["exact_search"]["p95_ms"]}, "ms"),
        lambda ax, r: _curve(ax, r, "Filtered search p95, node defaults",
                             {f"{f} k=10": (lambda p, f=f: p["filtered"][f"{f}_k10"]["p95_ms"])
                              for f in FILTERS}, "ms"),
        lambda ax, r: _curve(ax, r, "Snapshot",
                             {"write": lambda p: p["snapshot"]["write_s"],
                              "restore": lambda p: p["snapshot"]["restore_s"]}, "seconds"),
        lambda ax, r: _curve(ax, r, "Upserts into the full index",
                             {"replace 10k": lambda p: p["upsert_full"]["vectors_per_s"]},
                             "vectors/s"),
    ]  # fmt: skip
    m = results["machine"]
    title = (f"bench.scale: one query node's index, dim {results['params']['dim']}, cosine, "
             f"M={results['params']['M']}; {m['cpu']}, {m['usable_cores']} cores, "
             f"{m['date']}, {m['git_commit']}{' dirty' if m['git_dirty'] else ''}")  # fmt: skip
    draw_panels(panels, results, path, title)


# ---- command ------------------------------------------------------------------------------------


@cli.command()
def main(
    sizes: Annotated[str, typer.Option(help="N per point, comma-separated")] = (
        "10000,100000,300000,1000000"
    ),
    kinds: Annotated[str, typer.Option(help="uniform, tower_like")] = "tower_like,uniform",
    dim: Annotated[int, typer.Option(min=2, max=1024)] = 64,
    queries: Annotated[int, typer.Option(min=10)] = 200,
    epochs: Annotated[int, typer.Option(min=1, help="tower training (tower_like)")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="directory for scale.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Cost curves of one node's index from 10k to 1M vectors; see bench/README.md."""
    ns = sorted(int(x) for x in sizes.split(",") if x.strip())
    limit_blas_threads(1)  # as a query node runs (blas_threads): exact search on one thread
    settings = QueryNodeSettings()
    results: dict[str, Any] = {
        "benchmark": "scale",
        "machine": machine_info(),
        "params": {
            "sizes": ns,
            "dim": dim,
            "queries": queries,
            "seed": seed,
            "M": settings.M,
            "ef_construction": settings.ef_construction,
            "recall": RECALL,
            "insert_threads": settings.insert_threads,
        },
        "kinds": {},
    }
    started = time.perf_counter()
    for kind in (k.strip() for k in kinds.split(",") if k.strip()):
        console.print(f"{kind}: drawing {ns[-1]:,} vectors")
        if kind == "uniform":
            vectors, qs = uniform_data(ns[-1], dim, queries, seed)
        elif kind == "tower_like":
            if dim != 64:
                raise typer.BadParameter("tower_like has the towers' dimension, 64")
            vectors, qs = tower_like(ns[-1], queries, epochs, seed)
        else:
            raise typer.BadParameter(f"unknown kind {kind!r}")
        points = []
        with tempfile.TemporaryDirectory(prefix="nrtrec-scale-") as work:
            for n in ns:
                console.print(f"{kind}: N = {n:,}")
                point = measure(vectors[:n], qs, settings, Path(work))
                points.append(point)
                b, s10 = point["build"], point["search"]["10"]["at_recall"]
                console.print(
                    f"  build {b['seconds']:.1f} s ({b['rate_ratio_to_hnswlib']:.2f}x hnswlib), "
                    f"{b['rss_bytes_per_vector']:.0f} B/vector, k=10 ef {s10['ef']} "
                    f"p95 {s10['p95_ms']:.2f} ms recall {s10['recall']:.3f}"
                )
        results["kinds"][kind] = {"sizes": points, "exponents": exponents(points)}
        del vectors
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = write_results(out, "scale", results, plot, default=float)
    console.print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    cli()
