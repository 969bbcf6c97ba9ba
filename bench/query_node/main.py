"""The command line, ``python -m bench.query_node``: for each data set of ``--data``, one run of
every section (``SECTIONS``) with a query node of its own, then its JSON, PNG and summary table
(``query_node.json`` for clusters, ``query_node_<data>.json`` for the others)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.common import machine_info, progress_bar, write_results
from bench.query_node.build import section_build
from bench.query_node.data import WHAT, make_data
from bench.query_node.during_upsert import section_during_upsert
from bench.query_node.filtered import section_filtered
from bench.query_node.floor import FloorProcess
from bench.query_node.freshness import section_delta_to_node
from bench.query_node.node import NodeProcess
from bench.query_node.params import (
    DATASETS,
    INDEX,
    KS,
    SWEEP_EFS,
    Params,
    node_ef,
    output_name,
    resolved_threads,
)
from bench.query_node.plots import plot
from bench.query_node.run import Bench, console
from bench.query_node.search import section_search
from bench.query_node.summary import summary
from bench.query_node.sweep import section_sweep
from bench.query_node.targets import targets
from nrtrec.core.settings import QueryNodeSettings, Settings

# Sections run in this order; each one's dict lands in results[name]. Add new ones here.
SECTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "build": section_build,
    "search": section_search,
    "sweep": section_sweep,
    "filtered": section_filtered,
    "during_upsert": section_during_upsert,
    "delta_to_node": section_delta_to_node,
}

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
_defaults = QueryNodeSettings()


@app.command()
def main(
    data: Annotated[
        str,
        typer.Option(
            help="data sets, comma-separated, one run and one JSON/PNG each: clusters, uniform, "
            "tower (the item tower's MovieLens catalogue, 1,682 items)"
        ),
    ] = "clusters",
    n: Annotated[int, typer.Option(min=1000, help="vectors in the index (not tower)")] = 100_000,
    dim: Annotated[int, typer.Option(min=2, max=4096, help="vector dimension (not tower)")] = 64,
    epochs: Annotated[int, typer.Option(min=1, help="tower: training epochs of the pair")] = 1,
    queries: Annotated[int, typer.Option(min=10, help="queries per unfiltered k")] = 1000,
    filter_queries: Annotated[
        int, typer.Option(min=10, help="queries per selectivity and k (the first of --queries)")
    ] = 200,
    clusters: Annotated[
        int | None, typer.Option(min=1, help="clusters: Gaussian clusters; default n / 100")
    ] = None,
    spread: Annotated[
        float, typer.Option(min=0.0, help="clusters: noise norm around a centre (unit norm)")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the data and queries")] = 0,
    m: Annotated[int, typer.Option("--m", min=2, help="HNSW M")] = _defaults.M,
    ef_construction: Annotated[int, typer.Option(min=1)] = _defaults.ef_construction,
    insert_threads: Annotated[
        int,
        typer.Option(help="hnswlib add_items num_threads and the node's insert_threads; -1: all"),
    ] = _defaults.insert_threads,
    batch: Annotated[int, typer.Option(min=1, help="items per upsert call")] = 1000,
    warmup: Annotated[int, typer.Option(min=0, help="untimed queries per loop")] = 50,
    efs: Annotated[
        str, typer.Option(help="ef sweep, comma-separated (below k: ef = k)")
    ] = ",".join(map(str, SWEEP_EFS)),
    sweep_queries: Annotated[
        int, typer.Option(min=10, help="queries per sweep point (the first of --queries)")
    ] = 500,
    during_rate: Annotated[
        float, typer.Option(min=1.0, max=2000.0, help="searches/s during the bulk upsert")
    ] = 100.0,
    during_rounds: Annotated[
        int, typer.Option(min=1, help="rounds of upsert alone / with searches / idle")
    ] = 5,
    freshness: Annotated[
        bool,
        typer.Option(
            help="delta → node (produce to item-deltas → searchable on the node): starts Kafka "
            "and a second query node"
        ),
    ] = True,
    freshness_rate: Annotated[
        float, typer.Option(min=0.1, max=5000.0, help="item deltas per second")
    ] = 50.0,
    freshness_seconds: Annotated[
        float, typer.Option(min=1.0, max=600.0, help="seconds of item deltas at that rate")
    ] = 20.0,
    freshness_preload: Annotated[
        int, typer.Option(min=0, help="items in the delta → node index first (at most n)")
    ] = 10_000,
    out: Annotated[Path, typer.Option(help="directory for query_node[_<data>].json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Benchmark a query node against in-process hnswlib on the same data; see bench/README.md."""
    settings = Settings().query_node.model_copy(update={"insert_threads": insert_threads})
    if batch > settings.max_batch:
        raise typer.BadParameter(f"the node takes at most {settings.max_batch} items per call")
    datasets = [d.strip() for d in data.split(",") if d.strip()]
    if not datasets or any(d not in DATASETS for d in datasets):
        raise typer.BadParameter(f"--data takes {', '.join(DATASETS)}, got {data!r}")
    params = Params(
        n=n,
        dim=dim,
        queries=queries,
        filter_queries=min(filter_queries, queries),
        clusters=clusters,
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
        epochs=epochs,
        insert_threads=insert_threads,
        efs=tuple(sorted({int(ef) for ef in efs.split(",") if ef.strip()})),
        sweep_queries=sweep_queries,
        during_rate=during_rate,
        during_rounds=during_rounds,
    )
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in datasets:
        results = run(replace(params, data=name), settings, out)
        failed |= "error" in results.get("delta_to_node", {})
    if failed:
        raise typer.Exit(1)


def run(params: Params, settings: QueryNodeSettings, out: Path) -> dict[str, Any]:
    """Every section on the data set ``params.data``, with a query node of its own; writes the
    JSON and the PNG and prints the summary."""
    machine = machine_info()
    results: dict[str, Any] = {"benchmark": "query_node", "machine": machine}
    # In this order in the JSON; filled in once the data set is made.
    results.update(data=None, params=None, node_settings=None, timings_s={})
    started = time.perf_counter()
    # The node runs with the bench's insert threads: the same number on both sides.
    env = {"NRTREC_QUERY_NODE__INSERT_THREADS": str(settings.insert_threads)}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-bench-")))
        progress = stack.enter_context(progress_bar(console, remaining=True))
        t0 = time.perf_counter()
        task = progress.add_task(f"data: {params.data}, exact top-{max(KS)}", total=None)
        data = make_data(params)
        progress.update(task, total=1, completed=1)
        results["timings_s"]["data"] = time.perf_counter() - t0
        # The data set decides these for tower (its catalogue, its users).
        n, dim = data.vectors.shape
        nq = len(data.queries)
        params = replace(
            params,
            n=n,
            dim=dim,
            queries=nq,
            filter_queries=min(params.filter_queries, nq),
            clusters=(params.clusters or max(1, n // 100)) if params.data == "clusters" else None,
        )
        results["data"] = {"name": params.data, "n": n, "dim": dim, "queries": nq}
        results["data"]["what"] = WHAT[params.data]
        results["params"] = {
            **asdict(params),
            "ef_by_k": {k: node_ef(settings, k) for k in params.ks},
            "insert_threads_resolved": resolved_threads(settings.insert_threads),
        }
        results["node_settings"] = settings.model_dump(mode="json")
        node = NodeProcess(workdir, env=env)
        stack.callback(node.close)
        node.wait_healthy()
        results["params"]["node_command"] = " ".join(node.argv[1:])
        results["params"]["node_env"] = env
        floor = FloorProcess(workdir)
        stack.callback(floor.close)
        floor.wait_healthy()
        results["params"]["floor_command"] = " ".join(floor.argv[1:])
        bench = Bench(params, settings, data, progress, node=node, floor=floor, results=results)
        try:
            for name, section in SECTIONS.items():
                if name == "delta_to_node" and not params.freshness:
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

    json_path, png_path = write_results(out, output_name(params.data), results, plot)
    console.print(summary(results))
    console.print(f"wrote {json_path} and {png_path} in {results['timings_s']['total']:.0f} s")
    return results
