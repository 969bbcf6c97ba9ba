"""The table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from bench.query_node.params import DELTA_TO_NODE, SEARCH_PATHS


def summary(results: dict[str, Any]) -> Table:
    table = Table(title=f"query node benchmark, data {results['data']['name']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    build = results.get("build")
    if build:
        for name in ("hnswlib", "in_process", "http"):
            table.add_row(
                f"build {name} items/s (x hnswlib)",
                f"{build[name]['items_per_s']:,.0f} ({build['ratio_to_hnswlib'][name]:.2f})",
            )
        threads = build["insert_threads"]
        table.add_row(
            "build insert threads (all three)",
            f"{threads['hnswlib_num_threads']} (= {threads['resolved']})",
        )
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
    for m in results.get("sweep", {}).get("by_k", {}).values():
        for entry in m["matched"]:
            r, base, http = entry["ratios"], entry["hnswlib"], entry["http"]
            label = f"k{m['k']} @recall {entry['recall_target']:g}: ef hnswlib/http, p95 ms"
            if r["http_p95_over_hnswlib_p95"] is None:
                table.add_row(label, "not reached")
                continue
            table.add_row(
                label,
                f"{base['ef']}/{http['ef']}, {base['p95_ms']:.3f}/{http['p95_ms']:.3f}, "
                f"ratio {r['http_p95_over_hnswlib_p95']:.2f} "
                f"(minus healthz {r['http_minus_healthz_p95_over_hnswlib_p95']:.2f}; "
                f"empty app alone {r['floor_p95_over_hnswlib_p95']:.2f})",
            )
    during = results.get("during_upsert", {})
    if "stall" in during:
        idle, busy = during["search_idle"]["response"], during["search_with_searches"]["response"]
        table.add_row(
            "search p50/p95/p99 ms idle -> during upsert",
            f"{idle['p50_ms']:.2f}/{idle['p95_ms']:.2f}/{idle['p99_ms']:.2f} -> "
            f"{busy['p50_ms']:.2f}/{busy['p95_ms']:.2f}/{busy['p99_ms']:.2f}",
        )
        table.add_row(
            "upsert items/s alone -> with searches",
            f"{during['upsert_alone']['items_per_s']:,.0f} -> "
            f"{during['upsert_with_searches']['items_per_s']:,.0f}",
        )
        table.add_row(
            "search service p99 / upsert batch p50", f"{during['stall']['p99_over_batch_p50']:.2f}"
        )
    elif during:
        table.add_row("during upsert", f"skipped: {during['skipped']}")
    for entry in results.get("filtered", {}).get("by_selectivity", []):
        for key in (k for k in entry if k.startswith("k")):
            r = entry[key]
            table.add_row(
                f"filter {entry['selectivity']:.0%} {key} http recall, p50/p95 ms, strategy",
                f"{r['http']['recall']:.3f}, {r['http']['p50_ms']:.3f}/{r['http']['p95_ms']:.3f}"
                f", {','.join(r['in_process']['strategies'])}",
            )
    fresh = results.get("delta_to_node")
    if fresh:
        table.add_row(DELTA_TO_NODE, "")
    if fresh and "error" in fresh:
        table.add_row("delta → node", f"[red]failed: {fresh['error']}[/red]")
    elif fresh:
        if fresh["found"]:
            table.add_row(
                "delta → node p50/p95/p99/max ms (bound p95 <= 1000)",
                f"{fresh['p50_ms']:.1f}/{fresh['p95_ms']:.1f}/{fresh['p99_ms']:.1f}"
                f"/{fresh['max_ms']:.1f}",
            )
        table.add_row(
            f"delta → node at {fresh['rate_per_s']:g}/s: found / not found in "
            f"{fresh['deadline_s']:g} s",
            f"{fresh['found']} / {fresh['not_found']}",
        )
    return table
