"""The command line, ``python -m bench.query_node``: one run of every section (``SECTIONS``)
on one data set, then the JSON, the PNG and the summary table."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.common import machine_info, progress_bar, write_results
from bench.query_node.build import section_build
from bench.query_node.data import make_data
from bench.query_node.filtered import section_filtered
from bench.query_node.freshness import section_freshness
from bench.query_node.node import NodeProcess
from bench.query_node.params import INDEX, KS, Params, node_ef
from bench.query_node.plots import plot
from bench.query_node.run import Bench, console
from bench.query_node.search import section_search
from bench.query_node.summary import summary
from bench.query_node.targets import targets
from nrtrec.core.settings import QueryNodeSettings, Settings

# Sections run in this order; each one's dict lands in results[name]. Add new ones here.
SECTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "build": section_build,
    "search": section_search,
    "filtered": section_filtered,
    "freshness": section_freshness,
}

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
        progress = stack.enter_context(progress_bar(console, remaining=True))
        t0 = time.perf_counter()
        task = progress.add_task(f"data: {n:,} x {dim} vectors, exact top-{max(KS)}", total=None)
        data = make_data(params)
        progress.update(task, total=1, completed=1)
        results["timings_s"]["data"] = time.perf_counter() - t0
        node = NodeProcess(workdir)
        stack.callback(node.close)
        node.wait_healthy()
        results["params"]["node_command"] = " ".join(node.argv[1:])
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

    json_path, png_path = write_results(out, "query_node", results, plot)
    console.print(summary(results))
    console.print(f"wrote {json_path} and {png_path} in {results['timings_s']['total']:.0f} s")
    if "error" in results.get("freshness", {}):
        raise typer.Exit(1)
