"""Churn: a query node's index replaced ten times over, and its memory.

    python -m bench.churn --n 50000 --out bench/results

One ``nrtrec query-node`` process (standalone, over HTTP) holds ``--n`` items; then ten
turnovers each upsert ``--n`` new ids and delete as many of the oldest, in batches of 1,000
(each batch: 1,000 new, 1,000 deleted), so the index always holds ``--n``. After each turnover:
the process's resident memory (RSS), the index's count and allocated rows, and 50 searches
(k=100, plain and filtered) checked for any deleted id. The target (DESIGN.md): RSS growth
≤ 10 % after the first turnover, and no deleted id in any answer. The baseline is the same
process's RSS after the first turnover, in the same run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import psutil
import typer

from bench.common import machine_info, query_node_process, unit, write_results

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BATCH = 1000


def rss_mib(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def capacity(client: httpx.Client) -> int:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("nrtrec_query_node_index_capacity{"):
            return int(float(line.split()[-1]))
    raise RuntimeError("no index capacity in /metrics")


def run(n: int, dim: int, turnovers: int, seed: int, workdir: Path) -> dict[str, Any]:
    node = query_node_process(
        "query-node", workdir, workdir / "data", TOKEN, {"NRTREC_LOG_FORMAT": "text"}
    )
    rng = np.random.default_rng(seed)
    queries = unit(rng.standard_normal((50, dim), dtype=np.float32))
    try:
        node.wait_healthy()
        with httpx.Client(base_url=node.url, headers=AUTH, timeout=60) as client:
            spec = {"dim": dim, "metric": "cosine", "model_version": 1, "max_elements": n}
            client.put("/v1/indexes/items", json=spec).raise_for_status()
            live: list[str] = []
            deleted: set[str] = set()
            rows = []
            for turn in range(turnovers + 1):
                for start in range(0, n, BATCH):
                    ids = [f"t{turn}-{i}" for i in range(start, min(n, start + BATCH))]
                    vectors = unit(rng.standard_normal((len(ids), dim), dtype=np.float32))
                    items = [
                        {"id": i, "vector": v.tolist(), "attributes": {"bucket": j % 10}}
                        for j, (i, v) in enumerate(zip(ids, vectors, strict=True))
                    ]
                    client.post(
                        "/v1/indexes/items/upsert", json={"items": items}
                    ).raise_for_status()
                    if turn:
                        old, live = live[: len(ids)], live[len(ids) :]
                        client.post(
                            "/v1/indexes/items/delete", json={"ids": old}
                        ).raise_for_status()
                        deleted.update(old)
                    live += ids
                returned_deleted = 0
                for q in queries:
                    for body in ({}, {"filter": {"bucket": 3}}):
                        r = client.post(
                            "/v1/indexes/items/search",
                            json={"vector": q.tolist(), "k": 100, **body},
                        )
                        r.raise_for_status()
                        returned_deleted += sum(h["id"] in deleted for h in r.json()["items"])
                listing = client.get("/v1/indexes").json()
                rows.append(
                    {
                        "turnover": turn,
                        "rss_mib": rss_mib(node.proc.pid),
                        "count": listing[0]["count"],
                        "capacity": capacity(client),
                        "deleted_ids_returned": returned_deleted,
                    }
                )
                typer.echo(f"  {rows[-1]}")
    finally:
        node.close()
    first = rows[1]["rss_mib"] if len(rows) > 1 else rows[0]["rss_mib"]
    last = rows[-1]["rss_mib"]
    return {
        "params": {"n": n, "dim": dim, "turnovers": turnovers, "batch": BATCH, "seed": seed},
        "turnovers": rows,
        "rss_growth_after_first_turnover": round((last - first) / first, 4),
        "deleted_ids_returned": sum(r["deleted_ids_returned"] for r in rows),
        "targets": {
            "rss_growth_max": 0.10,
            "met": (last - first) / first <= 0.10
            and sum(r["deleted_ids_returned"] for r in rows) == 0,
        },
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["turnovers"]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot([r["turnover"] for r in rows], [r["rss_mib"] for r in rows], marker="o")
    if len(rows) > 1:
        base = rows[1]["rss_mib"]
        ax.axhline(base * 1.10, color="tab:red", linestyle="--", label="+10 % over turnover 1")
    ax.set_xlabel("turnovers (each: every item replaced by a new id)")
    ax.set_ylabel("query node RSS, MiB")
    p, m = results["params"], results["machine"]
    ax.set_title(
        f"{p['n']:,} items, dim {p['dim']}: growth after turnover 1 "
        f"{results['rss_growth_after_first_turnover']:+.1%}, deleted ids returned "
        f"{results['deleted_ids_returned']}\n{m['cpu']}, {m['cores']} cores",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def main(
    n: Annotated[int, typer.Option(help="items the index holds")] = 50_000,
    dim: Annotated[int, typer.Option()] = 64,
    turnovers: Annotated[int, typer.Option()] = 10,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option()] = Path("bench/results"),
) -> None:
    """Replace a node's whole index ``turnovers`` times; JSON and a plot of its memory."""
    machine = machine_info()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nrtrec-churn-") as tmp:
        results = run(n, dim, turnovers, seed, Path(tmp))
    results["machine"] = {**machine, "loadavg_end": list(os.getloadavg())}
    json_path, png_path = write_results(out, "churn", results, plot)
    typer.echo(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    typer.run(main)
