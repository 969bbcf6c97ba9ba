"""Faults: each process of the stack killed with SIGKILL under load, and what it cost.

    python -m bench.faults --out bench/results

The whole stack of ``nrtrec up`` (two shards of two replicas) runs under a steady load of
listings (Kafka), clicks (the app's ``POST /v1/events``) and recommendation reads
(``tests/faults/harness.py``, shared with the fault tests). Each fault kills its processes with
SIGKILL, one fault at a time, and measures from the kill:

- ``detect_s``: until supervisord saw the process gone (its state left RUNNING, or a new pid);
- ``restarted_s``: until every killed process runs again under a new pid;
- ``healthy_s``: until every service answers its health check;
- ``flowing_s``: until a listing produced after that is searchable and a click posted after it
  is in the store: the whole pipeline works again ("full health");
- the reads answered in that window: ``ok``, ``degraded`` (a 200 that says why), ``failed``
  (no answer, or a 5xx), and the clicks the app refused;
- at the end, over every fault: acknowledged listings and clicks not reflected (``lost``).

The heal times are wall-clock seconds on this machine (recorded with its load): outage
durations, with no in-process baseline to divide them by. The read latency during each outage
is given against its baseline in the same run, the same load's reads in the 10 s before the
kill (``read_p95_ratio``).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.common import machine_info, write_results
from tests.faults.harness import (
    FaultStack,
    Load,
    heal,
    settled,
    start_stack,
)
from tests.models import train_test_models
from tests.waiting import wait_until

FAULTS = {
    "query-node replica": ["query-node-0"],
    "whole shard": ["query-node-2", "query-node-3"],
    "gateway": ["gateway"],
    "app": ["app"],
    "flink taskmanager": ["flink-taskmanager"],
    "triton": ["triton"],
    "redis": ["redis"],
    "kafka broker": ["kafka"],
}
QUIET_S = 10.0
HEAL_S = 300.0


def measure(stack: FaultStack, load: Load, fault: str, processes: list[str]) -> dict[str, Any]:
    quiet_from = time.monotonic()
    time.sleep(QUIET_S)  # a stretch of normal operation just before: the baseline
    start = time.monotonic()
    baseline = [r.ms for r in load.reads if quiet_from <= r.at < start and r.status == 200]
    killed = stack.kill(processes)
    since = lambda: round(time.monotonic() - start, 3)  # noqa: E731

    def noticed() -> bool:
        infos = stack.runner.supervisor.info()
        return all(
            (i := infos.get(name)) is None or i.state != "RUNNING" or i.pid != pid
            for name, pid in killed.items()
        )

    wait_until(f"{fault}: supervisord noticed", noticed, HEAL_S, interval_s=0.01)
    detect = since()
    wait_until(f"{fault}: restarted", lambda: stack.restarted(killed), HEAL_S, interval_s=0.05)
    restarted = since()
    wait_until(f"{fault}: healthy", stack.healthy, HEAL_S, interval_s=0.1)
    healthy = since()
    heal(stack, load, killed, HEAL_S)
    flowing = since()
    end = time.monotonic()
    during = [r for r in load.reads if start <= r.at <= end]
    answered = [r.ms for r in during if r.status == 200]
    refused = [c for c in load.refused_clicks if start <= c[0] <= end]
    base_p95, outage_p95 = _p95(baseline), _p95(answered)
    return {
        "processes": processes,
        "detect_s": detect,
        "restarted_s": restarted,
        "healthy_s": healthy,
        "flowing_s": flowing,
        "reads": {
            "ok": sum(1 for r in during if r.status == 200 and not r.degraded),
            "degraded": sum(1 for r in during if r.status == 200 and r.degraded),
            "failed": sum(1 for r in during if r.status is None or r.status >= 500),
            "reasons": sorted({r.reasons[0].split(":")[0] for r in during if r.reasons}),
        },
        "clicks_refused": len(refused),
        # Answered reads during the outage against the same load's reads just before it.
        "read_p95_ms": {"before": base_p95, "during": outage_p95},
        "read_p95_ratio": None
        if not base_p95 or outage_p95 is None
        else round(outage_p95 / base_p95, 2),
    }


def _p95(ms: list[float]) -> float | None:
    if not ms:
        return None
    ordered = sorted(ms)
    return round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = list(results["faults"])
    rows = [results["faults"][f] for f in faults]
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.2))
    stages = [("detect_s", "noticed"), ("restarted_s", "restarted"), ("healthy_s", "healthy"),
              ("flowing_s", "pipeline flowing")]  # fmt: skip
    y = range(len(faults))
    previous = [0.0] * len(faults)
    shades = ("#c6dbef", "#6baed6", "#2171b5", "#08306b")  # one hue: stages of one outage
    for (key, label), shade in zip(stages, shades, strict=True):
        values = [r[key] for r in rows]
        left.barh(y, [v - p for v, p in zip(values, previous, strict=True)], left=previous,
                  label=label, color=shade)  # fmt: skip
        previous = values
    left.set_yticks(list(y), faults)
    left.invert_yaxis()
    left.set_xlabel("seconds after the SIGKILL")
    left.set_title("Time to heal, by stage")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, fontsize=8)
    ok = [r["reads"]["ok"] for r in rows]
    degraded = [r["reads"]["degraded"] for r in rows]
    failed = [r["reads"]["failed"] for r in rows]
    right.barh(y, ok, color="tab:green", label="answered")
    right.barh(y, degraded, left=ok, color="tab:orange", label="answered, degraded (says why)")
    right.barh(y, failed, left=[a + b for a, b in zip(ok, degraded, strict=True)],
               color="tab:red", label="no answer (the app was down) / 5xx")  # fmt: skip
    right.set_yticks(list(y), faults)
    right.invert_yaxis()
    right.set_xlabel("recommendation reads until the pipeline flowed again")
    lost = results["lost"]
    right.set_title(
        f"Reads during each outage; lost at the end: {lost['listings']} listings, "
        f"{lost['clicks']} clicks"
    )
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8)
    m = results["machine"]
    fig.suptitle(
        f"SIGKILL of each process under load ({results['load']}); {m['cpu']}, {m['cores']} cores,"
        f" load {m['loadavg_start'][0]:.1f}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def replot(path: Path) -> None:
    """The plot again from a results file (``python -m bench.faults --replot faults.json``)."""
    import json

    plot(json.loads(path.read_text()), path.with_suffix(".png"))


def main(
    out: Annotated[Path, typer.Option(help="where faults.json and faults.png go")] = Path(
        "bench/results"
    ),
    only: Annotated[list[str] | None, typer.Option(help="run only these faults")] = None,
    replot_from: Annotated[
        Path | None, typer.Option("--replot", help="only draw the plot of this faults.json")
    ] = None,
) -> None:
    """Kill each process of the stack under load; JSON and a plot of what each cost."""
    if replot_from is not None:
        replot(replot_from)
        return
    machine = machine_info()
    out.mkdir(parents=True, exist_ok=True)
    chosen = {f: p for f, p in FAULTS.items() if not only or f in only}
    with tempfile.TemporaryDirectory(prefix="nrtrec-faults-") as tmp:
        root = Path(tmp)
        typer.echo("training the test encoders")
        models = train_test_models(root / "trained")
        typer.echo("starting the stack")
        stack = start_stack(root / "run", models.repository.path)
        load = Load(stack)
        try:
            load.seed_catalogue()
            gateway = stack.settings.gateway.url

            def indexed() -> bool:
                import httpx

                listing = httpx.get(f"{gateway}/v1/indexes").json()
                return {i["model_version"]: i["count"] for i in listing} == {1: 120, 2: 120}

            wait_until("catalogue indexed", indexed, HEAL_S, interval_s=1, ignoring=(Exception,))
            load.start()
            wait_until("users ready", lambda: len(load.users_ready) >= 3, HEAL_S)
            faults = {}
            for fault, processes in chosen.items():
                typer.echo(f"fault: {fault}")
                faults[fault] = measure(stack, load, fault, processes)
                typer.echo(f"  {faults[fault]}")
            load.stop()
            listings, clicks = settled(stack, load, HEAL_S)
        finally:
            with contextlib.suppress(Exception):
                load.stop()
            stack.close()
    results = {
        "machine": {**machine, "loadavg_end": list(os.getloadavg())},
        "load": (
            f"{load.listing_rate:g} listings/s, {load.click_rate:g} clicks/s, "
            f"{load.read_rate:g} reads/s"
        ),
        "faults": faults,
        "acknowledged": {"listings": len(load.listings), "clicks": len(load.clicks)},
        "lost": {
            "listings": len(listings),
            "clicks": len(clicks),
            "examples": (listings + clicks)[:10],
        },
        "median_flowing_s": statistics.median(f["flowing_s"] for f in faults.values()),
    }
    json_path, png_path = write_results(out, "faults", results, plot)
    typer.echo(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    typer.run(main)
