"""ANN backend benchmark: every backend and quantization on the same data, in one run.

    python -m bench.backends --out bench/results

Two datasets, neither made to flatter:

- ``uniform``: ``--n`` unit vectors drawn uniformly on the sphere (``--dim``), queries from the
  same distribution: no clusters for a graph to exploit;
- ``tower``: the item tower's own vectors of the whole MovieLens-100k catalogue (a pair trained
  here for ``--epochs``), queried by the user tower's vectors of real users' histories.

For each backend (``hnsw``, ``faiss``, ``faiss`` + ``int8``) an ``ann.VectorIndex`` is built
with the node's build parameters, beside **the baseline**: a bare hnswlib index with the same M,
ef_construction and threads, searched with ``knn_query`` in this process. Then:

- ``sweep``: recall@k and latency for k = 10 and 100 over an ef sweep, each query going through
  every path in turn (the order rotating), so the machine's drift hits all alike; ratios are
  each path's p95 over the baseline's at the same ef;
- ``filters``: p95 and recall with a 10 % and a 1 % filter at the node's default ef, against the
  same backend's unfiltered p95 (the strategy the index chose is recorded);
- ``build``: vectors per second through ``upsert`` (batches of 1,000) against hnswlib's
  ``add_items``, and memory per vector as ``/v1/indexes`` reports it.

Searches run on one thread, as a query node runs each. bench/README.md explains every figure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import hnswlib
import numpy as np
import typer
from rich.console import Console

from bench.common import (
    VERSIONS,
    draw_panels,
    machine_info,
    percentiles,
    progress_bar,
    timed_rounds,
    write_results,
)
from bench.datasets import tower_data, uniform_data
from bench.query_node.data import exact_knn, recall
from nrtrec.ann import IndexSpec, VectorIndex
from nrtrec.core.settings import QueryNodeSettings
from nrtrec.schemas.query_api import Backend, Metric, Quantization

KINDS = {
    "hnsw": (Backend.HNSW, Quantization.NONE),
    "faiss": (Backend.FAISS, Quantization.NONE),
    "faiss_int8": (Backend.FAISS, Quantization.INT8),
}
BASELINE = "hnswlib"
KS = (10, 100)
EFS = (16, 32, 64, 128, 256, 512)
BATCH = 1_000
# The graph is what is measured in the sweep: exact search only where the filters section asks.
GRAPH_ONLY = {
    "exact_search_max_count": 0,
    "exact_search_max_fraction": 0.0,
    "exact_search_cost_ratio": 0.0,
}

console = Console()
cli = typer.Typer(add_completion=False)


# ---- one dataset ----------------------------------------------------------------------------


def build(kind: str, vectors: np.ndarray, settings: QueryNodeSettings) -> tuple[Any, float]:
    """The index (or bare hnswlib graph for the baseline) and the seconds its inserts took."""
    n, dim = vectors.shape
    ids = [str(i) for i in range(n)]
    t0 = time.perf_counter()
    if kind == BASELINE:
        graph = hnswlib.Index(space="cosine", dim=dim)
        graph.init_index(max_elements=n, M=settings.M, ef_construction=settings.ef_construction)
        for start in range(0, n, BATCH):
            rows = np.arange(start, min(n, start + BATCH))
            graph.add_items(vectors[rows], rows, num_threads=settings.insert_threads)
        return graph, time.perf_counter() - t0
    backend, quantization = KINDS[kind]
    spec = IndexSpec(
        "bench", 1, dim, Metric.COSINE, M=settings.M, ef_construction=settings.ef_construction,
        max_elements=n, backend=backend, quantization=quantization,
    )  # fmt: skip
    index = VectorIndex(spec, settings)
    buckets = np.arange(n) % 100
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        attrs = [{"bucket": int(b)} for b in buckets[start:stop]]
        index.upsert(ids[start:stop], vectors[start:stop], attrs)
    return index, time.perf_counter() - t0


def run_dataset(
    name: str, vectors: np.ndarray, queries: np.ndarray, settings: QueryNodeSettings, progress
) -> dict[str, Any]:
    n = len(vectors)
    exact = exact_knn(vectors, queries, max(KS))
    out: dict[str, Any] = {"n": n, "dim": int(vectors.shape[1]), "queries": len(queries)}
    built: dict[str, Any] = {}
    out["build"] = {}
    for kind in (BASELINE, *KINDS):
        task = progress.add_task(f"{name}: build {kind}", total=None)
        built[kind], seconds = build(kind, vectors, settings)
        progress.update(task, total=1, completed=1)
        entry: dict[str, Any] = {"seconds": seconds, "vectors_per_s": n / seconds}
        if kind != BASELINE:
            memory = built[kind].memory()
            entry["memory_per_vector"] = {
                "graph_vector_bytes": memory.vectors,
                "graph_link_bytes": memory.links,
                "full_precision_bytes": built[kind].full_precision_bytes,
            }
        out["build"][kind] = entry
    base_rate = out["build"][BASELINE]["vectors_per_s"]
    for entry in out["build"].values():
        entry["rate_ratio"] = entry["vectors_per_s"] / base_rate

    single = [q[None, :] for q in queries]
    out["sweep"] = []
    for k in KS:
        for ef in EFS:
            if ef < k:
                continue
            raw = built[BASELINE]
            raw.set_ef(ef)
            paths: dict[str, Callable[[int], Any]] = {
                BASELINE: lambda i, k=k, raw=raw: raw.knn_query(single[i], k=k, num_threads=1)[0][
                    0
                ],
            }
            for kind in KINDS:
                paths[kind] = lambda i, k=k, ef=ef, kind=kind: built[kind].search(
                    queries[i], k, ef=ef
                )
            times, answers = timed_rounds(
                paths, len(queries), warmup=20, progress=progress, what=f"{name}: k={k} ef={ef}"
            )
            point: dict[str, Any] = {"k": k, "ef": ef}
            for kind in paths:
                found = (
                    [a.tolist() for a in answers[kind]]
                    if kind == BASELINE
                    else [[int(h.id) for h in a.hits] for a in answers[kind]]
                )
                point[kind] = {**percentiles(times[kind]), "recall": recall(found, exact, k)}
            base = point[BASELINE]["p95_ms"]
            for kind in KINDS:
                point[kind]["p95_ratio"] = point[kind]["p95_ms"] / base
            out["sweep"].append(point)

    out["filters"] = run_filters(name, vectors, queries, built, progress)
    return out


def run_filters(name, vectors, queries, built, progress) -> dict[str, Any]:
    """Filtered against unfiltered search at the node's defaults (exact search allowed)."""
    defaults = QueryNodeSettings()
    buckets = np.arange(len(vectors)) % 100
    filters = {
        "none": (None, np.arange(len(vectors))),
        "ten_percent": ({"bucket": {"lt": 10}}, np.flatnonzero(buckets < 10)),
        "one_percent": ({"bucket": 42}, np.flatnonzero(buckets == 42)),
    }
    out: dict[str, Any] = {}
    for k in KS:
        for kind in KINDS:
            index = built[kind]
            index._settings = defaults  # the node's choice between graph and exact search
            paths = {
                f: (lambda i, raw=raw, k=k, index=index: index.search(queries[i], k, filter=raw))
                for f, (raw, _) in filters.items()
            }
            times, answers = timed_rounds(
                paths, len(queries), warmup=20, progress=progress, what=f"{name}: {kind} k={k}"
            )
            result: dict[str, Any] = {}
            for f, (_, rows) in filters.items():
                truth = exact_knn(vectors, queries, k, rows)
                found = [[int(h.id) for h in a.hits] for a in answers[f]]
                strategies = Counter(a.strategy.value for a in answers[f])
                result[f] = {
                    **percentiles(times[f]),
                    "recall": recall(found, truth, k),
                    "strategies": dict(strategies),
                }
            for f in filters:
                result[f]["p95_over_unfiltered"] = result[f]["p95_ms"] / result["none"]["p95_ms"]
            out[f"{kind}_k{k}"] = result
    return out


# ---- plots ----------------------------------------------------------------------------------

COLOURS = {BASELINE: "#555555", "hnsw": "#1f77b4", "faiss": "#2ca02c", "faiss_int8": "#d62728"}


def sweep_panel(dataset: str, k: int):
    def panel(ax, results) -> bool:
        data = results["datasets"].get(dataset)
        if not data:
            return False
        points = [p for p in data["sweep"] if p["k"] == k]
        for kind in (BASELINE, *KINDS):
            xs = [p[kind]["recall"] for p in points]
            ys = [p[kind]["p95_ms"] for p in points]
            ax.plot(xs, ys, "o-", color=COLOURS[kind], label=kind)
            for p, x, y in zip(points, xs, ys, strict=True):
                if kind == "hnsw":
                    ax.annotate(f"ef {p['ef']}", (x, y), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k}")
        ax.set_ylabel("p95 latency, ms (log)")
        ax.set_title(f"{dataset} ({data['n']:,} x {data['dim']}): recall@{k} vs p95, ef sweep")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return True

    return panel


def filter_panel(dataset: str):
    def panel(ax, results) -> bool:
        data = results["datasets"].get(dataset)
        if not data:
            return False
        labels, width = list(KINDS), 0.25
        for j, f in enumerate(("none", "ten_percent", "one_percent")):
            ys = [data["filters"][f"{kind}_k100"][f]["p95_ms"] for kind in labels]
            ax.bar(np.arange(len(labels)) + (j - 1) * width, ys, width, label=f)
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_ylabel("p95 latency, ms")
        ax.set_title(f"{dataset}: k=100, no filter vs 10 % and 1 % filters")
        ax.legend(fontsize=8)
        return True

    return panel


def memory_panel(ax, results) -> bool:
    data = results["datasets"].get("uniform") or next(iter(results["datasets"].values()))
    labels = list(KINDS)
    parts = ("graph_vector_bytes", "graph_link_bytes", "full_precision_bytes")
    bottom = np.zeros(len(labels))
    for part in parts:
        ys = np.array([data["build"][kind]["memory_per_vector"][part] for kind in labels])
        ax.bar(labels, ys, bottom=bottom, label=part)
        bottom += ys
    ax.set_ylabel("bytes per vector")
    ax.set_title(f"memory per vector (dim {data['dim']})")
    ax.legend(fontsize=8)
    return True


def plot(results: dict[str, Any], path: Path) -> None:
    panels = []
    for dataset in results["datasets"]:
        panels += [sweep_panel(dataset, 10), sweep_panel(dataset, 100), filter_panel(dataset)]
    panels.append(memory_panel)
    m = results["machine"]
    title = (
        f"ANN backends, in process, one search thread — {m['cpu']}, {m['usable_cores']} cores, "
        f"load {m['loadavg_start'][0]:.2f}; commit {m['git_commit']}"
        + (" (dirty)" if m["git_dirty"] else "")
    )
    draw_panels(panels, results, path, title)


# ---- entry point ----------------------------------------------------------------------------


@cli.command()
def main(
    out: Annotated[Path, typer.Option(help="folder for backends.json and .png")] = Path(
        "bench/results"
    ),
    n: Annotated[int, typer.Option(help="uniform vectors")] = 100_000,
    dim: Annotated[int, typer.Option(help="uniform dimension")] = 64,
    queries: Annotated[int, typer.Option(help="queries per dataset")] = 300,
    epochs: Annotated[int, typer.Option(help="training epochs of the tower pair")] = 1,
    datasets: Annotated[str, typer.Option(help="comma-separated: uniform,tower")] = "uniform,tower",
    seed: int = 0,
) -> None:
    """Benchmark the ANN backends in process; see bench/README.md."""
    out.mkdir(parents=True, exist_ok=True)
    settings = QueryNodeSettings(**GRAPH_ONLY)
    results: dict[str, Any] = {
        "benchmark": "backends",
        "machine": machine_info((*VERSIONS, "faiss-cpu")),
        "params": {"n": n, "dim": dim, "queries": queries, "epochs": epochs, "seed": seed,
                   "ks": KS, "efs": EFS, "batch": BATCH, "M": settings.M,
                   "ef_construction": settings.ef_construction,
                   "insert_threads": settings.insert_threads,
                   "rescore_factor": settings.rescore_factor},
        "datasets": {},
    }  # fmt: skip
    started = time.perf_counter()
    with progress_bar(console) as progress:
        for name in datasets.split(","):
            if name == "uniform":
                vectors, qs = uniform_data(n, dim, queries, seed)
            elif name == "tower":
                task = progress.add_task("tower: train a pair and encode", total=None)
                vectors, qs = tower_data(epochs, queries, seed)
                progress.update(task, total=1, completed=1)
            else:
                raise typer.BadParameter(f"unknown dataset {name!r}")
            results["datasets"][name] = run_dataset(name, vectors, qs, settings, progress)
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - started
    json_path, png_path = write_results(out, "backends", results, plot)
    console.print(f"wrote {json_path} and {png_path}")
    with contextlib.suppress(KeyError):
        for name, data in results["datasets"].items():
            for f, v in data["filters"].items():
                console.print(name, f, {x: round(v[x]["p95_over_unfiltered"], 2) for x in v})


if __name__ == "__main__":
    cli()
