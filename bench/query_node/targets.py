"""The DESIGN targets ("Targets") this benchmark checks, from the sections' results."""

from __future__ import annotations

from typing import Any

from bench.query_node.params import (
    FRESHNESS_TARGET_MS,
    HTTP_OVERHEAD_MIN_N,
    HTTP_OVERHEAD_TARGET,
    RECALL_TARGET,
    Params,
)


def targets(p: Params, results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    search = results.get("search")
    if search:
        out["recall"] = {
            "min": RECALL_TARGET,
            "values": {
                f"{name}@{k}": search[f"k{k}"][name]["recall"]
                for k in p.ks
                for name in ("hnswlib", "in_process", "http")
            },
        }
        out["recall"]["met"] = all(v >= RECALL_TARGET for v in out["recall"]["values"].values())
        if 100 in p.ks:
            value = search["k100"]["ratios"]["http_overhead_p95"]
            out["http_overhead_k100"] = {
                "definition": "(p95 HTTP search - p95 HTTP /healthz) / p95 in-process hnswlib",
                "value": value,
                "max": HTTP_OVERHEAD_TARGET,
                "met": value <= HTTP_OVERHEAD_TARGET,
                "applies": p.n >= HTTP_OVERHEAD_MIN_N,
            }
    filtered = results.get("filtered")
    if filtered:
        tight = min(filtered["by_selectivity"], key=lambda e: e["selectivity"])
        values = {f"http@{k}": tight[f"k{k}"]["http"]["recall"] for k in p.ks}
        out["filtered_recall"] = {
            "selectivity": tight["selectivity"],
            "min": RECALL_TARGET,
            "values": values,
            "met": all(v >= RECALL_TARGET for v in values.values()),
        }
    freshness = results.get("freshness")
    if freshness and "error" not in freshness:
        out["freshness"] = {
            "definition": "p95 of produce to item-deltas -> first HTTP search that finds the item",
            "value_ms": freshness.get("p95_ms"),
            "max_ms": FRESHNESS_TARGET_MS,
            "not_found": freshness["not_found"],
            "met": freshness["met"],
        }
    return out
