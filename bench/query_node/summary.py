"""The table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.query_node.params import SEARCH_PATHS


def summary(results: dict[str, Any]) -> Table:
    table = Table(title="query node benchmark")
    table.add_column("figure")
    table.add_column("value", justify="right")
    build = results.get("build")
    if build:
        for name in ("hnswlib", "in_process", "http"):
            table.add_row(f"build {name} items/s", f"{build[name]['items_per_s']:,.0f}")
    for key, search in results.get("search", {}).items():
        for name in SEARCH_PATHS:
            s = search[name]
            recall_text = f"  recall {s['recall']:.3f}" if "recall" in s else ""
            table.add_row(
                f"{key} {name} p50/p95/p99 ms",
                f"{s['p50_ms']:.3f}/{s['p95_ms']:.3f}/{s['p99_ms']:.3f}{recall_text}",
            )
        table.add_row(
            f"{key} (p95 http - p95 healthz)/p95 hnswlib",
            f"{search['ratios']['http_overhead_p95']:.2f}",
        )
    for entry in results.get("filtered", {}).get("by_selectivity", []):
        for key in (k for k in entry if k.startswith("k")):
            r = entry[key]
            table.add_row(
                f"filter {entry['selectivity']:.0%} {key} http recall, p50/p95 ms, strategy",
                f"{r['http']['recall']:.3f}, {r['http']['p50_ms']:.3f}/{r['http']['p95_ms']:.3f}"
                f", {','.join(r['in_process']['strategies'])}",
            )
    fresh = results.get("freshness")
    if fresh and "error" in fresh:
        table.add_row("freshness", f"[red]failed: {fresh['error']}[/red]")
    elif fresh:
        if fresh["found"]:
            table.add_row(
                "freshness p50/p95/p99/max ms (target p95 <= 1000)",
                f"{fresh['p50_ms']:.1f}/{fresh['p95_ms']:.1f}/{fresh['p99_ms']:.1f}"
                f"/{fresh['max_ms']:.1f}",
            )
        table.add_row(
            f"freshness at {fresh['rate_per_s']:g}/s: found / not found in "
            f"{fresh['deadline_s']:g} s",
            f"{fresh['found']} / {fresh['not_found']}",
        )
    return table
