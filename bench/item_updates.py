"""Item-job benchmark: listing updates that change only attributes against updates that change
the text, through the whole pipeline.

    python -m bench.item_updates --out bench/results

Stands the pipeline up as ``bench.streaming`` does (Kafka, Redis, Triton, Flink on free ports,
encoders trained for real and both versions served, two query-node shards and a gateway, both
jobs submitted), loads the whole MovieLens catalogue, then alternates rounds of two kinds, each
a burst of one update per listing:

- ``text``: the title changes, so the item job encodes every listing again (both versions):
  **the baseline**;
- ``attributes``: only the price changes, so the job publishes the vectors in its keyed state.

A round's rate is its listings over the time from the first produce until the gateway serves
every listing's new value (``POST /v1/indexes/items/items``, version 2): listing produced →
searchable with its change, the end-to-end path. bench/README.md explains every figure.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from confluent_kafka import Producer
from rich.console import Console

from bench.common import draw_panels, machine_info, wait_for, write_results
from bench.streaming import MODEL_VERSION, make_settings
from nrtrec.cli.up import ensure_indexes, ensure_jobs, ensure_models
from nrtrec.core.datasets import load_movielens
from nrtrec.core.kafka import producer_config
from nrtrec.deploy import LocalRunner
from nrtrec.deploy.services.query_nodes import GatewayService, QueryNodeService
from nrtrec.schemas import ListingEvent, encode
from nrtrec.streaming.submit import ITEM_DELTAS, USER_VECTORS, running_jobs
from tests.models import train_test_models
from tests.stack import Stack

KINDS = ("text", "attributes")
CHUNK = 500
console = Console(stderr=True)
app = typer.Typer(add_completion=False)


def served(client: httpx.Client, url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The attributes the gateway serves for ``ids`` (version 2), by id."""
    out = {}
    for start in range(0, len(ids), CHUNK):
        r = client.post(
            f"{url}/v1/indexes/items/items",
            json={"ids": ids[start : start + CHUNK], "model_version": MODEL_VERSION},
            timeout=30,
        )
        r.raise_for_status()
        out.update({x["id"]: x["attributes"] for x in r.json()["items"]})
    return out


def run_round(
    settings, producer: Producer, client: httpx.Client, listings: list[ListingEvent], check
) -> float:
    """Seconds from the first produce until every listing's change is served."""
    ids = [x.item_id for x in listings]
    t0 = time.perf_counter()
    for listing in listings:
        producer.produce(settings.topics.listings, key=listing.item_id, value=encode(listing))
        producer.poll(0)
    producer.flush(60)

    def done() -> bool:
        got = served(client, settings.gateway.url, ids)
        return all(check(x, got.get(x.item_id) or {}) for x in listings)

    wait_for(done, 600, "every update served", interval_s=0.05)
    return time.perf_counter() - t0


def plot(results: dict[str, Any], path: Path) -> None:
    def rates(ax, r) -> bool:
        rounds = r["rounds"]
        for j, kind in enumerate(KINDS):
            ys = [x["listings_per_s"] for x in rounds if x["kind"] == kind]
            ax.bar(np.arange(len(ys)) + (j - 0.5) * 0.4, ys, 0.4, label=kind)
        ax.set_xlabel("round")
        ax.set_ylabel("listings per second, produced → served")
        ratio = r["summary"]["attributes_over_text"]
        ax.set_title(f"item job: attribute-only updates {ratio:.1f}x the rate of text updates")
        ax.legend()
        return True

    m = results["machine"]
    title = (
        f"{results['catalogue']} listings a round — {m['cpu']}, {m['usable_cores']} cores, "
        f"commit {m['git_commit']}" + (" (dirty)" if m["git_dirty"] else "")
    )
    draw_panels([rates], results, path, title, cols=1)


@app.command()
def main(
    rounds: Annotated[int, typer.Option(min=1, help="rounds of each kind")] = 3,
    out: Annotated[Path, typer.Option(help="folder for item_updates.json/.png")] = Path(
        "bench/results"
    ),
) -> None:
    """Attribute-only against text listing updates through the item job; see bench/README.md."""
    machine = machine_info()
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="nrtrec-bench-items-"))
    (tmp / "models").mkdir()
    settings = make_settings(tmp, tag)
    stack = Stack(settings)
    runner = flink = None
    results: dict[str, Any] = {"benchmark": "item_updates", "machine": machine, "rounds": []}
    try:
        with console.status("kafka, redis, triton, flink; training encoders"):
            bootstrap = stack.kafka()
            stack.redis()
            stack.triton()
            flink = stack.flink()
            train_test_models(settings.triton.model_repository)
        # The Kafka service made this run's topics, with their contract configs (compaction).
        runner = LocalRunner(
            settings,
            [QueryNodeService(settings, i) for i in (0, 1)] + [GatewayService(settings)],
        )
        with console.status("query nodes, gateway, models, jobs"):
            runner.up()
            versions = ensure_models(settings)
            ensure_indexes(settings, versions)
            ensure_jobs(settings, flink)
        movies = list(load_movielens().movies.values())
        results["catalogue"] = len(movies)
        producer = Producer(producer_config(bootstrap, "nrtrec-bench-items"))
        with httpx.Client() as client:
            with console.status(f"catalogue of {len(movies)} listings"):
                base = [m.listing(1_000) for m in movies]
                seconds = run_round(
                    settings, producer, client, base, lambda x, got: got.get("title") == x.title
                )
                results["catalogue_s"] = seconds
            # What each listing says now: an attribute round keeps the last round's titles.
            titles = {m.item_id: m.title for m in movies}
            for r in range(rounds):
                for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                    ts = 10_000 + 10 * r + KINDS.index(kind)
                    if kind == "text":
                        titles = {m.item_id: f"{m.title} #{r}" for m in movies}
                        listings = [
                            m.listing(ts).model_copy(update={"title": titles[m.item_id]})
                            for m in movies
                        ]

                        def check(x, got):
                            return got.get("title") == x.title
                    else:
                        listings = [
                            m.listing(ts).model_copy(
                                update={"title": titles[m.item_id], "price": 1_000.0 + r}
                            )
                            for m in movies
                        ]

                        def check(x, got):
                            return got.get("price") == x.price

                    with console.status(f"round {r}: {kind}"):
                        seconds = run_round(settings, producer, client, listings, check)
                    rate = len(listings) / seconds
                    console.print(f"round {r} {kind}: {seconds:.1f} s, {rate:.0f} listings/s")
                    results["rounds"].append(
                        {"round": r, "kind": kind, "seconds": seconds, "listings_per_s": rate}
                    )
        median = {
            kind: float(
                np.median([x["listings_per_s"] for x in results["rounds"] if x["kind"] == kind])
            )
            for kind in KINDS
        }
        results["summary"] = {
            "median_listings_per_s": median,
            "attributes_over_text": median["attributes"] / median["text"],
            "target": ">= 5",
            "served_versions": versions,
        }
        results["job_settings"] = {
            "flush_size": settings.streaming.flush_size,
            "flush_ms": settings.streaming.flush_ms,
            "parallelism": settings.streaming.parallelism,
            "encoder_batch_size": settings.inference.batch_size,
            "encoder_intra_op_threads": settings.inference.intra_op_num_threads,
            "kafka_partitions": settings.kafka.partitions,
        }
    finally:
        if flink is not None:
            for name, job_id in running_jobs(flink).items():
                if name in (ITEM_DELTAS.name, USER_VECTORS.name):
                    flink.cancel_job(job_id)
        if runner is not None:
            runner.down()
        stack.close()
    machine["loadavg_end"] = list(os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = write_results(out, "item_updates", results, plot)
    console.print(f"{results['summary']} -> {json_path}, {png_path}")


if __name__ == "__main__":
    app()
