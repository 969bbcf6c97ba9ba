"""The command line, ``python -m bench.recommender_app``: the sections in turn, then the JSON,
the PNG and the summary table."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console

from bench.common import gc_pauses, gc_pauses_between, machine_info, write_results
from bench.recommender_app.baseline import section_baseline
from bench.recommender_app.data import load_data
from bench.recommender_app.load import run_rate
from bench.recommender_app.params import APP_PATHS, Params
from bench.recommender_app.pipeline import section_pipeline
from bench.recommender_app.plots import plot
from bench.recommender_app.report import summary, targets
from bench.recommender_app.stack import Stack, start_stack
from nrtrec.core.settings import Settings
from nrtrec.user_store import open_store

console = Console(stderr=True)
cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(r) for r in text.split(",") if r.strip())


def _cpu_s(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) each server of the stack has used so far."""
    out = {}
    for server in stack.servers():
        times = psutil.Process(server.proc.pid).cpu_times()
        out[server.name] = times.user + times.system
    return out


def section_load(p: Params, stack: Stack, user_ids: list[str]) -> dict[str, Any]:
    """Each rate against each app in turn (the same rate back to back, so both see the same
    machine)."""
    out: dict[str, Any] = {"workers": p.workers, "seconds": p.seconds}
    for path in APP_PATHS:
        out[path] = {"by_rate": []}
    for rate in p.rates:
        for path in APP_PATHS:
            console.print(f"load: app reading {path}, {rate:g} requests/s for {p.seconds:g} s")
            before = _cpu_s(stack)
            gc_before = {s.name: gc_pauses(s.url) for s in stack.servers()}
            entry = run_rate(stack.apps[path].url, user_ids, p.k, rate, p.seconds, p.workers)
            # Where the cores went: each server's CPU (all its threads) per answered request.
            answered = max(1, entry["requests"])
            entry["cpu_ms_per_request"] = {
                name: 1e3 * (s - before[name]) / answered for name, s in _cpu_s(stack).items()
            }
            # The collector's pauses in each service meanwhile (nrtrec.core.heap).
            entry["gc_pauses"] = {
                s.name: gc_pauses_between(gc_before[s.name], gc_pauses(s.url))
                for s in stack.servers()
                if gc_before[s.name] is not None
            }
            out[path]["by_rate"].append(entry)
            r = entry["response"]
            if r:
                console.print(
                    f"  p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms, {entry['achieved_rate']:.0f}/s, "
                    f"degraded {entry['degraded']}"
                )
            cpu = ", ".join(f"{n} {ms:.1f}" for n, ms in entry["cpu_ms_per_request"].items())
            console.print(f"  CPU ms per request: {cpu}")
    return out


@cli.command()
def main(
    items: Annotated[int, typer.Option(min=100, help="catalogue items")] = 20_000,
    dim: Annotated[int, typer.Option(min=2, max=1024)] = 64,
    users: Annotated[int, typer.Option(min=10, help="users with a vector")] = 5_000,
    recent: Annotated[int, typer.Option(min=0, max=200, help="recent items per user")] = 20,
    shards: Annotated[int, typer.Option(min=1, max=4, help="query nodes behind the gateway")] = 2,
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    rates: Annotated[
        str, typer.Option(help="offered requests/s, comma-separated, one load run each")
    ] = "50,100,150,200",
    seconds: Annotated[float, typer.Option(min=1.0, max=300.0, help="per rate")] = 15.0,
    workers: Annotated[int, typer.Option(min=1, max=8, help="load-generator processes")] = 2,
    baseline_queries: Annotated[int, typer.Option(min=10)] = 500,
    warmup: Annotated[int, typer.Option(min=0)] = 50,
    seed: Annotated[int, typer.Option()] = 0,
    pipeline: Annotated[
        bool, typer.Option(help="also the whole stack of `nrtrec up` with clicks replayed")
    ] = False,
    pipeline_rates: Annotated[
        str, typer.Option(help="offered requests/s with the pipeline running")
    ] = "50,100,200",
    pipeline_click_rate: Annotated[
        float, typer.Option(min=1.0, help="clicks replayed into Kafka per second")
    ] = 200.0,
    pipeline_seconds: Annotated[float, typer.Option(min=1.0, max=300.0)] = 15.0,
    out: Annotated[Path, typer.Option(help="directory for recommender_app.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Benchmark the recommendations endpoint; see bench/README.md."""
    params = Params(
        items=items,
        dim=dim,
        users=users,
        recent=recent,
        shards=shards,
        k=k,
        rates=_rates(rates),
        seconds=seconds,
        workers=workers,
        baseline_queries=baseline_queries,
        warmup=warmup,
        seed=seed,
        pipeline=pipeline,
        pipeline_rates=_rates(pipeline_rates),
        pipeline_click_rate=pipeline_click_rate,
        pipeline_seconds=pipeline_seconds,
    )
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "recommender_app",
        "machine": machine_info(),
        "params": asdict(params),
        "app_settings": Settings().app.model_dump(mode="json"),
        "timings_s": {},
    }
    started = time.perf_counter()
    with contextlib.ExitStack() as exits:
        workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="nrtrec-bench-")))
        t0 = time.perf_counter()
        console.print("starting redis, query nodes, gateway, three apps")
        stack = start_stack(params, workdir, exits)
        store = exits.enter_context(open_store(stack.settings))
        results["commands"] = {s.name: s.argv for s in stack.servers()}
        t1 = time.perf_counter()
        console.print(f"loading {items:,} items and {users:,} users")
        data = load_data(params, stack, store)
        # The apps' popular list and version listing refresh in the background; let them.
        time.sleep(6)
        t2 = time.perf_counter()
        console.print("baseline: one request at a time")
        results["baseline"] = section_baseline(params, stack, store, data)
        t3 = time.perf_counter()
        results["load"] = section_load(params, stack, data.user_ids)
        results["timings_s"] = {
            "start": t1 - t0,
            "data": t2 - t1,
            "baseline": t3 - t2,
            "load": time.perf_counter() - t3,
        }
    if params.pipeline:
        t4 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="nrtrec-bench-pipeline-") as workdir:
            results["pipeline"] = section_pipeline(params, Path(workdir))
        results["timings_s"]["pipeline"] = time.perf_counter() - t4
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["targets"] = targets(results)
    results["timings_s"]["total"] = time.perf_counter() - started
    json_path, png_path = write_results(out, "recommender_app", results, plot, default=float)
    console.print(summary(results))
    console.print(f"wrote {json_path} and {png_path}")
