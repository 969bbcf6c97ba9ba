"""Section ``pipeline``: the recommendations endpoint of the whole stack of ``nrtrec up`` while
its pipeline runs.

The stack is the fault suite's (``tests/faults/harness.py``: Kafka, Flink with both jobs,
Triton, Redis, 2 shards of 2 replicas, the gateway, the app, all supervised, on free ports),
with encoders trained here. The MovieLens catalogue goes through the item job first; then
MovieLens clicks are replayed into Kafka at ``pipeline_click_rate`` (the user-vector job calls
the user tower on Triton for each, and writes the store) for the whole section, and after a
warm-up the open-loop load runs at each of ``pipeline_rates`` on the MovieLens users of the
warm-up's clicks, in random order: users with a vector, so that answers take the personalized
path (a search), not the cheaper popular one (``sources`` counts what each answer was).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console

from bench.recommender_app.load import run_rate
from bench.recommender_app.params import Params
from nrtrec.core.datasets import load_movielens
from nrtrec.streaming.replay import replay_clicks, replay_listings
from tests.faults.harness import FaultStack, start_stack
from tests.models import train_test_models
from tests.waiting import wait_until

WARMUP_S = 20.0

console = Console(stderr=True)


def _indexed(gateway: str, n: int) -> bool:
    """Every served version holds the whole catalogue."""
    listing = httpx.get(f"{gateway}/v1/indexes", timeout=5).json()
    counts = [e["count"] for e in listing if e["name"] == "items"]
    return bool(counts) and min(counts) >= n


def _cpu_seconds(stack: FaultStack) -> dict[str, float]:
    """CPU seconds (user + system) so far of each supervised process and its children (Flink's
    Python workers, Triton's stubs), and of the whole machine (``all``)."""
    out: dict[str, float] = {}
    for name, info in stack.runner.supervisor.info().items():
        if info.pid is None:
            continue
        try:
            root = psutil.Process(info.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        seconds = 0.0
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seconds += times.user + times.system
        out[name] = seconds
    machine = psutil.cpu_times()
    out["all"] = machine.user + machine.system + getattr(machine, "nice", 0.0)
    return out


def _cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores each process used over ``seconds`` (1.0: one core the whole time); ``other`` is
    what the machine used beyond the stack's processes (the load generators, this process)."""
    used = {n: round((after[n] - before[n]) / seconds, 3) for n in after if n in before}
    stack = sum(v for n, v in used.items() if n != "all")
    used["other"] = round(used.get("all", 0.0) - stack, 3)
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))


def section_pipeline(p: Params, workdir: Path) -> dict[str, Any]:
    warm_clicks = load_movielens().interactions[: int(p.pipeline_click_rate * WARMUP_S)]
    users = sorted({x.user_id for x in warm_clicks})
    random.Random(p.seed).shuffle(users)
    console.print("pipeline: training the encoders, starting the whole stack")
    models = train_test_models(workdir / "trained")
    stack = start_stack(workdir / "run", models.repository.path)
    settings = stack.settings
    out: dict[str, Any] = {
        "click_rate": p.pipeline_click_rate,
        "warmup_s": WARMUP_S,
        "users": len(users),
        "by_rate": [],
    }
    try:
        t0 = time.monotonic()
        n = replay_listings(settings)
        wait_until(
            "the catalogue indexed", lambda: _indexed(settings.gateway.url, n), 600, interval_s=1
        )
        out["catalogue"] = {"items": n, "indexed_s": round(time.monotonic() - t0, 1)}
        seconds = WARMUP_S + len(p.pipeline_rates) * (p.pipeline_seconds + 5) + 30
        clicks = int(p.pipeline_click_rate * seconds)
        sent: list[int] = []
        replay = threading.Thread(
            target=lambda: sent.append(replay_clicks(settings, p.pipeline_click_rate, clicks)),
            name="click-replay",
            daemon=True,
        )
        replay_from = time.monotonic()
        replay.start()
        console.print(f"pipeline: replaying clicks at {p.pipeline_click_rate:g}/s")
        time.sleep(WARMUP_S)
        app = f"http://{settings.app.host}:{settings.app.port}"
        for rate in p.pipeline_rates:
            console.print(f"pipeline: {rate:g} requests/s for {p.pipeline_seconds:g} s")
            cpu_before, t_before = _cpu_seconds(stack), time.monotonic()
            entry = run_rate(app, users, p.k, rate, p.pipeline_seconds, p.workers)
            entry["loadavg_during"] = list(os.getloadavg())
            # Over the whole run_rate (its workers' start and warm-up second included).
            entry["cpu_cores"] = _cores(
                cpu_before, _cpu_seconds(stack), time.monotonic() - t_before
            )
            out["by_rate"].append(entry)
            r = entry["response"]
            console.print(
                f"  p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, degraded "
                f"{entry['degraded']} {entry['degraded_reasons']}, {entry['sources']}"
            )
        replay.join(timeout=seconds * 2)
        out["clicks"] = {
            "sent": sent[0] if sent else None,
            "seconds": round(time.monotonic() - replay_from, 1),
        }
        out["clicks"]["achieved_rate"] = (
            None if not sent else round(sent[0] / out["clicks"]["seconds"], 1)
        )
    finally:
        stack.close()
    return out
