"""Recommender-app benchmark: ``GET /v1/users/{user_id}/recommendations`` under sustained load.

    python -m bench.recommender_app --out bench/results

Everything runs on this machine, each as its own process on a free loopback port: a Redis
(``redis-server``) holding the user vectors, ``--shards`` query nodes behind a gateway holding
the catalogue, and ``nrtrec app`` in front; this process builds the data and drives the load.

Two sections, one run:

- ``baseline``: one request at a time, interleaved per user, through five paths: the app's
  recommendations, the app's ``/healthz`` (HTTP and framework alone), the search the app sends
  to the gateway (same body), the same search on one query node, and the store's ``get`` called
  in this process. Every timing of the load section is set against these.
- ``load``: for each ``--rates`` value, ``--workers`` load-generator processes send requests
  open-loop (each at its scheduled time, however many are in flight, over keep-alive
  connections) for ``--seconds``.
  Latency counts from the scheduled send time, so a generator or app falling behind shows up
  (no coordinated omission). The app's ``Server-Timing`` header splits each request into the
  time spent on the store, on the gateway (search) and in the app itself.

bench/README.md explains every figure. Writes ``recommender_app.json`` and ``.png``.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from pydantic_core import from_json
from rich.console import Console
from rich.table import Table

from bench.common import (
    ServerProcess,
    free_port,
    machine_info,
    ms_percentiles,
    nrtrec_command,
    percentiles,
    timed_rounds,
    unit,
    write_results,
)
from nrtrec.core.settings import RedisSettings, Settings, UserStoreSettings
from nrtrec.schemas import UserVector
from nrtrec.user_store import UserVectorStore, open_store

INDEX = "items"
MODEL_VERSION = 1
TOKEN = "bench-token"
KEY_PREFIX = "bench:"
TARGET_P95_MS = 25.0
CATEGORIES = ("Comedy", "Drama", "Action", "Horror", "Romance", "Sci-Fi", "Thriller", "Animation")
BASELINE_PATHS = ("app", "app_healthz", "gateway_search", "node_search", "store_get")
LABELS = {
    "app": "app\nrecommendations",
    "app_healthz": "app\n/healthz",
    "gateway_search": "gateway\nsearch",
    "node_search": "one query node\nsearch",
    "store_get": "store get\n(in-process)",
}
STAGES = ("store", "search", "app")

console = Console(stderr=True)


@dataclass(frozen=True)
class Params:
    items: int
    dim: int
    users: int
    recent: int
    shards: int
    k: int
    rates: tuple[float, ...]
    seconds: float
    workers: int
    baseline_queries: int
    warmup: int
    seed: int


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Stack:
    redis: ServerProcess
    nodes: list[ServerProcess]
    gateway: ServerProcess
    app: ServerProcess
    settings: Settings

    def servers(self) -> list[ServerProcess]:
        return [self.app, self.gateway, *self.nodes, self.redis]


def start_stack(p: Params, workdir: Path, exits: contextlib.ExitStack) -> Stack:
    nrtrec = nrtrec_command()
    redis_port = free_port()
    redis = ServerProcess(
        "redis",
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", ""],
        workdir,
        redis_port,
    )
    exits.callback(redis.close)
    settings = Settings(
        redis=RedisSettings(port=redis_port),
        user_store=UserStoreSettings(key_prefix=KEY_PREFIX, timeout_s=1.0),
    )
    import redis as redis_client

    redis.wait(lambda: bool(redis_client.Redis(port=redis_port).ping()))
    quiet = {"NRTREC_LOG_FORMAT": "text", "NRTREC_RUN_DIR": str(workdir / "run")}
    nodes = []
    for shard in range(p.shards):
        port = free_port()
        argv = [*nrtrec, "query-node", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--data-dir", str(workdir / f"node{shard}"), "--token", TOKEN]
        node = ServerProcess(f"query-node-{shard}", argv, workdir, port, quiet)
        exits.callback(node.close)
        nodes.append(node)
    for node in nodes:
        node.wait_healthy()
    port = free_port()
    argv = [*nrtrec, "gateway", "--host", "127.0.0.1", "--port", str(port), "--token", TOKEN]
    argv += ["--num-partitions", "4"]
    for node in nodes:
        argv += ["--shard", node.url]
    gateway = ServerProcess("gateway", argv, workdir, port, quiet)
    exits.callback(gateway.close)
    gateway.wait_healthy()
    port = free_port()
    argv = [*nrtrec, "app", "--host", "127.0.0.1", "--port", str(port)]
    # No Kafka: the load is reads only; the producer is idle (a port where nothing listens).
    argv += ["--gateway-url", gateway.url, "--kafka", f"127.0.0.1:{free_port()}"]
    env = {
        **quiet,
        "NRTREC_REDIS__PORT": str(redis_port),
        "NRTREC_USER_STORE__KEY_PREFIX": KEY_PREFIX,
    }
    app = ServerProcess("app", argv, workdir, port, env)
    exits.callback(app.close)
    app.wait_healthy()
    return Stack(redis, nodes, gateway, app, settings)


# ---- data -----------------------------------------------------------------------------------


@dataclass
class Data:
    item_vectors: np.ndarray
    user_ids: list[str]
    user_vectors: np.ndarray
    recent: list[list[str]]


def load_data(p: Params, stack: Stack, store: UserVectorStore) -> Data:
    """Items (cosine, clustered like real embeddings, with titles and attributes) through the
    gateway; users, each near the items they viewed, into the store; view counts."""
    rng = np.random.default_rng(p.seed)
    centres = unit(rng.standard_normal((max(1, p.items // 100), p.dim)))
    which = rng.integers(0, len(centres), p.items)
    items = unit(centres[which] + 0.6 * rng.standard_normal((p.items, p.dim)) / np.sqrt(p.dim))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=stack.gateway.url, headers=auth, trust_env=False, timeout=120) as c:
        spec = {"dim": p.dim, "metric": "cosine", "model_version": MODEL_VERSION}
        c.put(f"/v1/indexes/{INDEX}", json={**spec, "max_elements": p.items}).raise_for_status()
        for lo in range(0, p.items, 1000):
            batch = [
                {
                    "id": str(i),
                    "vector": items[i].tolist(),
                    "attributes": {
                        "title": f"Item {i}",
                        "category": CATEGORIES[i % len(CATEGORIES)],
                        "price": float(5 + i % 95),
                        "year": 1950 + i % 70,
                    },
                }
                for i in range(lo, min(lo + 1000, p.items))
            ]
            c.post(f"/v1/indexes/{INDEX}/upsert", json={"items": batch}).raise_for_status()
    user_ids = [f"u{i}" for i in range(p.users)]
    recent = [
        [str(i) for i in rng.choice(p.items, p.recent, replace=False)] for _ in range(p.users)
    ]
    user_vectors = unit(
        np.stack([items[[int(i) for i in r]].mean(axis=0) for r in recent])
        + 0.1 * rng.standard_normal((p.users, p.dim))
    )
    now = time.time_ns() // 1_000_000
    for user_id, vector, viewed in zip(user_ids, user_vectors, recent, strict=True):
        store.put(
            UserVector(
                user_id=user_id,
                model_version=MODEL_VERSION,
                vector=vector.tolist(),
                source_ts=now,
                updated_ts=now,
            ),
            recent_items=viewed,
        )
    store.add_views(Counter(i for viewed in recent for i in viewed))
    return Data(items, user_ids, user_vectors, recent)


# ---- section: baseline (one request at a time) ----------------------------------------------


def server_timing(header: str) -> dict[str, float]:
    """``store;dur=0.4, search;dur=1.9, ...`` to ``{"store": 0.4, ...}`` (milliseconds)."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def section_baseline(p: Params, stack: Stack, store: UserVectorStore, data: Data) -> dict:
    """Each user's request through every path in turn (the order rotating), one at a time."""
    app = httpx.Client(base_url=stack.app.url, trust_env=False, timeout=10)
    gateway = httpx.Client(base_url=stack.gateway.url, trust_env=False, timeout=10)
    node = httpx.Client(base_url=stack.nodes[0].url, trust_env=False, timeout=10)
    split: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    sources: Counter[str] = Counter()

    def search_body(u: int) -> dict:
        # What the app sends: k plus the recent items it will drop, with attributes.
        return {
            "vector": data.user_vectors[u].tolist(),
            "k": p.k + p.recent,
            "model_version": MODEL_VERSION,
            "include_attributes": True,
        }

    def call_app(u: int) -> None:
        r = app.get(f"/v1/users/{data.user_ids[u]}/recommendations", params={"k": p.k})
        r.raise_for_status()
        sources[r.json()["source"]] += 1
        for name, ms in server_timing(r.headers["Server-Timing"]).items():
            split[name].append(ms)

    paths: dict[str, Callable[[int], Any]] = {
        "app": call_app,
        "app_healthz": lambda u: app.get("/healthz").raise_for_status(),
        "gateway_search": lambda u: gateway.post(
            f"/v1/indexes/{INDEX}/search", json=search_body(u)
        ).raise_for_status(),
        "node_search": lambda u: node.post(
            f"/v1/indexes/{INDEX}/search", json=search_body(u)
        ).raise_for_status(),
        "store_get": lambda u: store.get(data.user_ids[u]),
    }
    n = min(p.baseline_queries, p.users)

    def forget_warmup() -> None:
        for values in split.values():
            values.clear()
        sources.clear()

    times, _ = timed_rounds(paths, n, p.warmup, after_warmup=forget_warmup)
    for client in (app, gateway, node):
        client.close()
    out: dict[str, Any] = {"requests": n, "sources": dict(sources)}
    for name in paths:
        out[name] = percentiles(times[name])
    out["app_split_ms"] = {s: _ms_stats(v) for s, v in split.items()}
    base = out["app"]["p95_ms"]
    out["ratios_to_app_p95"] = {name: out[name]["p95_ms"] / base for name in paths}
    return out


def _ms_stats(values: Sequence[float]) -> dict[str, float]:
    return ms_percentiles(values) if values else {}


# ---- section: sustained load (separate processes) -------------------------------------------


def load_worker(
    url: str,
    user_ids: list[str],
    k: int,
    rate: float,
    start_at: float,
    seconds: float,
    warmup_s: float,
    results: Any,
) -> None:
    """Sends ``rate`` requests per second on a fixed schedule from ``start_at`` (monotonic
    time, shared by processes on Linux) for ``warmup_s + seconds``, each at its time whatever
    the others are doing (open loop: a slow answer does not delay the next request), over a
    pool of keep-alive connections; records the requests scheduled after the warm-up."""
    import asyncio

    import aiohttp

    response_ns: list[int] = []
    service_ns: list[int] = []
    stages: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    statuses: Counter[int] = Counter()
    sources: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    degraded = 0

    async def one(session: aiohttp.ClientSession, user: str, scheduled: float) -> None:
        nonlocal degraded
        sent = time.monotonic()
        try:
            async with session.get(
                f"{url}/v1/users/{user}/recommendations", params={"k": str(k)}
            ) as r:
                raw = await r.read()
                status, timing = r.status, r.headers.get("Server-Timing", "")
        except (aiohttp.ClientError, TimeoutError) as e:
            errors[type(e).__name__] += 1
            return
        done = time.monotonic()
        if scheduled < start_at + warmup_s:
            return
        statuses[status] += 1
        response_ns.append(int((done - scheduled) * 1e9))
        service_ns.append(int((done - sent) * 1e9))
        if status == 200:
            body = from_json(raw)
            sources[body["source"]] += 1
            degraded += bool(body["degraded"])
            for name, ms in server_timing(timing).items():
                stages[name].append(ms)

    async def run() -> None:
        interval = 1.0 / rate
        end = start_at + warmup_s + seconds
        connector = aiohttp.TCPConnector(limit=64)
        timeout = aiohttp.ClientTimeout(total=10.0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks = []
            i = 0
            while (scheduled := start_at + i * interval) < end:
                delay = scheduled - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                user = user_ids[i % len(user_ids)]
                tasks.append(asyncio.create_task(one(session, user, scheduled)))
                i += 1
            await asyncio.gather(*tasks)

    gc.disable()
    asyncio.run(run())
    results.put(
        {
            "response_ns": response_ns,
            "service_ns": service_ns,
            "stages": stages,
            "statuses": dict(statuses),
            "sources": dict(sources),
            "degraded": degraded,
            "errors": dict(errors),
        }
    )


def section_load(p: Params, stack: Stack, data: Data) -> dict:
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {"workers": p.workers, "seconds": p.seconds, "by_rate": []}
    for rate in p.rates:
        console.print(f"load: {rate:g} requests/s for {p.seconds:g} s")
        queue = ctx.Queue()
        warmup_s = 1.0
        start_at = time.monotonic() + 2.0  # time for the workers to start
        workers = [
            ctx.Process(
                target=load_worker,
                args=(
                    stack.app.url,
                    data.user_ids[w :: p.workers],
                    p.k,
                    rate / p.workers,
                    # Staggered, so the workers' requests interleave rather than collide.
                    start_at + w / rate,
                    p.seconds,
                    warmup_s,
                    queue,
                ),
            )
            for w in range(p.workers)
        ]
        load_before = os.getloadavg()
        for w in workers:
            w.start()
        parts = [queue.get(timeout=p.seconds + 120) for _ in workers]
        for w in workers:
            w.join()
        response = [x for part in parts for x in part["response_ns"]]
        service = [x for part in parts for x in part["service_ns"]]
        stages = {s: [x for part in parts for x in part["stages"][s]] for s in (*STAGES, "total")}
        entry: dict[str, Any] = {
            "offered_rate": rate,
            "requests": len(response),
            "achieved_rate": len(response) / p.seconds,
            "response": percentiles(response) if response else {},
            "service": percentiles(service) if service else {},
            "server_timing": {s: _ms_stats(v) for s, v in stages.items()},
            "statuses": dict(sum((Counter(part["statuses"]) for part in parts), Counter())),
            "sources": dict(sum((Counter(part["sources"]) for part in parts), Counter())),
            "degraded": sum(part["degraded"] for part in parts),
            "errors": dict(sum((Counter(part["errors"]) for part in parts), Counter())),
            "loadavg_before": list(load_before),
        }
        if response:
            p95 = entry["response"]["p95_ms"]
            entry["target_p95_met"] = p95 <= TARGET_P95_MS
            console.print(
                f"  p50 {entry['response']['p50_ms']:.2f} ms, p95 {p95:.2f} ms, "
                f"p99 {entry['response']['p99_ms']:.2f} ms, {entry['achieved_rate']:.0f}/s"
            )
        out["by_rate"].append(entry)
    return out


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """DESIGN: recommendations p95 <= 25 ms under sustained load on this 2-core machine; met at
    the highest offered rate whose p95 is within it."""
    by_rate = results.get("load", {}).get("by_rate", [])
    met = [e for e in by_rate if e.get("target_p95_met") and not e["errors"]]
    best = max(met, key=lambda e: e["achieved_rate"]) if met else None
    return {
        "recommendations_p95": {
            "bound_ms": TARGET_P95_MS,
            "met": best is not None,
            "highest_rate_within": None if best is None else best["offered_rate"],
            "p95_ms_at_that_rate": None if best is None else best["response"]["p95_ms"],
            "by_rate": {
                str(e["offered_rate"]): e.get("response", {}).get("p95_ms") for e in by_rate
            },
        }
    }


# ---- plot -----------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(21, 6))
    base = results["baseline"]
    ax = axes[0]
    x = np.arange(len(BASELINE_PATHS))
    for j, (q, colour) in enumerate(
        (("p50_ms", "#4c72b0"), ("p95_ms", "#dd8452"), ("p99_ms", "#c44e52"))
    ):
        values = [base[name][q] for name in BASELINE_PATHS]
        bars = ax.bar(x + (j - 1) * 0.27, values, 0.27, label=q[:3], color=colour)
        for bar in bars:
            ax.annotate(
                f"{bar.get_height():.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(x, [LABELS[name] for name in BASELINE_PATHS], fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title(f"One request at a time ({base['requests']} users): the app and its parts")
    ax.legend()

    by_rate = results["load"]["by_rate"]
    rates = [e["offered_rate"] for e in by_rate]
    ax = axes[1]
    for q, colour in (("p50_ms", "#4c72b0"), ("p95_ms", "#dd8452"), ("p99_ms", "#c44e52")):
        ax.plot(
            rates, [e["response"].get(q, np.nan) for e in by_rate], "o-", color=colour, label=q[:3]
        )
    ax.axhline(TARGET_P95_MS, color="black", ls="--", lw=1, label="target p95 25 ms")
    for e in by_rate:
        if e["response"]:
            ax.annotate(
                f"{e['achieved_rate']:.0f}/s",
                (e["offered_rate"], e["response"]["p95_ms"]),
                xytext=(4, 6),
                textcoords="offset points",
                fontsize=8,
            )
    ax.set_xlabel("offered requests/s (open loop)")
    ax.set_ylabel("response time, ms (from the scheduled send)")
    ax.set_yscale("log")
    ax.set_title(f"Sustained load: {results['load']['workers']} generator processes")
    ax.legend()

    ax = axes[2]
    bottom = np.zeros(len(by_rate))
    colours = {"store": "#55a868", "search": "#4c72b0", "app": "#8172b2", "outside": "#cccccc"}
    for stage in (*STAGES, "outside"):
        if stage == "outside":
            # Client-measured service time minus the handler's total: HTTP, framework, client.
            values = np.array(
                [
                    max(0.0, e["service"]["mean_ms"] - e["server_timing"]["total"]["mean_ms"])
                    if e["service"]
                    else 0.0
                    for e in by_rate
                ]
            )
        else:
            values = np.array([e["server_timing"][stage].get("mean_ms", 0.0) for e in by_rate])
        ax.bar([str(r) for r in rates], values, bottom=bottom, label=stage, color=colours[stage])
        bottom += values
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("mean ms per request")
    ax.set_title("Where a request's time goes (Server-Timing), mean")
    ax.legend()

    p, m = results["params"], results["machine"]
    fig.suptitle(
        f"nrtrec recommender app: {p['items']:,} items (dim {p['dim']}, {p['shards']} shards), "
        f"{p['users']:,} users, k={p['k']}, {p['recent']} recent items each\n"
        f"{m['cpu']}, {m['usable_cores']} cores, Python {m['python']}, {m['date']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def summary(results: dict[str, Any]) -> Table:
    table = Table(title="recommender app benchmark")
    table.add_column("figure")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    base = results["baseline"]
    for name in BASELINE_PATHS:
        b = base[name]
        table.add_row(f"baseline {name}", *(f"{b[q]:.2f}" for q in ("p50_ms", "p95_ms", "p99_ms")))
    for e in results["load"]["by_rate"]:
        if e["response"]:
            r = e["response"]
            label = f"load {e['offered_rate']:g}/s (got {e['achieved_rate']:.0f}/s)"
            table.add_row(label, *(f"{r[q]:.2f}" for q in ("p50_ms", "p95_ms", "p99_ms")))
    return table


# ---- command line ---------------------------------------------------------------------------

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


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
        rates=tuple(float(r) for r in rates.split(",") if r.strip()),
        seconds=seconds,
        workers=workers,
        baseline_queries=baseline_queries,
        warmup=warmup,
        seed=seed,
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
        console.print("starting redis, query nodes, gateway, app")
        stack = start_stack(params, workdir, exits)
        store = exits.enter_context(open_store(stack.settings))
        results["commands"] = {s.name: s.argv for s in stack.servers()}
        t1 = time.perf_counter()
        console.print(f"loading {items:,} items and {users:,} users")
        data = load_data(params, stack, store)
        # The app's popular list and version listing refresh in the background; let them.
        time.sleep(6)
        t2 = time.perf_counter()
        console.print("baseline: one request at a time")
        results["baseline"] = section_baseline(params, stack, store, data)
        t3 = time.perf_counter()
        results["load"] = section_load(params, stack, data)
        t4 = time.perf_counter()
        results["timings_s"] = {
            "start": t1 - t0,
            "data": t2 - t1,
            "baseline": t3 - t2,
            "load": t4 - t3,
        }
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["targets"] = targets(results)
    results["timings_s"]["total"] = time.perf_counter() - started
    json_path, png_path = write_results(out, "recommender_app", results, plot, default=float)
    console.print(summary(results))
    console.print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    cli()
