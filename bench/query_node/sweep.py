"""Section ``sweep``: recall and latency over an ef sweep, per k, for raw hnswlib, VectorIndex
in process and the node over HTTP (the request's ``ef``), with two floors of HTTP in the same
loop: the node's ``/healthz`` and an empty ASGI app on the same server stack sent the same search
body (``floor``); then each path at its own smallest ef reaching each target recall
(``matched``), the issue's comparison: search over HTTP against in-process hnswlib."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.common import percentiles
from bench.query_node.data import recall
from bench.query_node.params import INDEX, MATCHED_RECALLS, SWEEP_PATHS
from bench.query_node.run import Bench

# The paths that answer (healthz and floor are floors of HTTP, no answer) and are matched on recall.
ANSWERING = ("hnswlib", "in_process", "http")


def section_sweep(bench: Bench) -> dict[str, Any]:
    p, data = bench.params, bench.data
    raw, index, node, floor = bench.raw, bench.index, bench.node, bench.floor
    assert raw is not None and index is not None and node is not None and floor is not None
    nq = min(p.sweep_queries, p.queries)
    queries = data.queries[:nq]
    single = [q[None, :] for q in queries]
    bodies = [q.tolist() for q in queries]
    path = f"/v1/indexes/{INDEX}/search"
    out: dict[str, Any] = {"queries": nq, "efs": list(p.efs), "by_k": {}}
    for k in p.ks:
        # Below k both search with ef = k (hnswlib's max(ef, k), the node's own bound).
        efs = sorted({max(k, ef) for ef in p.efs if ef <= bench.settings.max_ef})
        points = []
        for ef in efs:
            raw.set_ef(ef)

            def http(i: int, k: int = k, ef: int = ef) -> Any:
                return node.timed.post(path, {"vector": bodies[i], "k": k, "ef": ef})["items"]

            def empty(i: int, k: int = k, ef: int = ef) -> Any:
                return floor.timed.post("/", {"vector": bodies[i], "k": k, "ef": ef})

            paths: dict[str, Callable[[int], Any]] = {
                "hnswlib": lambda i, k=k: raw.knn_query(single[i], k=k, num_threads=1)[0][0],
                "in_process": lambda i, k=k, ef=ef: index.search(queries[i], k, ef=ef),
                "http": http,
                "healthz": lambda i: node.timed.get("/healthz"),
                "floor": empty,
            }
            before: Counter[str] = Counter()
            times, answers = bench.timed(
                f"sweep k={k} ef={ef}",
                paths,
                nq,
                after_warmup=lambda before=before: before.update(node.searches_by_strategy()),
            )
            node_strategies = node.searches_by_strategy() - before
            found = {
                "hnswlib": [a.tolist() for a in answers["hnswlib"]],
                "in_process": [[int(h.id) for h in a.hits] for a in answers["in_process"]],
                "http": [[int(item["id"]) for item in a] for a in answers["http"]],
            }
            point: dict[str, Any] = {"k": k, "ef": ef}
            for name in SWEEP_PATHS:
                point[name] = percentiles(times[name])
                if name in found:
                    point[name]["recall"] = recall(found[name], data.exact[:nq], k)
            point["in_process"]["strategies"] = dict(
                Counter(a.strategy.value for a in answers["in_process"])
            )
            point["http"]["strategies"] = dict(node_strategies)
            points.append(point)
        out["by_k"][f"k{k}"] = {"k": k, "points": points, "matched": matched(points)}
    return out


def _at(points: list[dict[str, Any]], name: str, target: float) -> dict[str, Any] | None:
    """Path ``name`` at its smallest ef whose recall reaches ``target``; None if none does."""
    for point in points:  # ef ascending
        if point[name]["recall"] >= target:
            return point
    return None


def matched(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each target recall: every path at its own smallest ef reaching it, and the ratios of
    the node over HTTP (and VectorIndex) to hnswlib there. ``healthz_p95_ms`` and
    ``floor_p95_ms`` are measured in the same loop as the HTTP point they sit beside.
    ``floor_p95_over_hnswlib_p95`` over 0.5 says the 1.5x target is about out of reach of any
    node behind this server stack, whatever its search costs (p95s do not add exactly)."""
    out = []
    for target in MATCHED_RECALLS:
        entry: dict[str, Any] = {"recall_target": target}
        at = {name: _at(points, name, target) for name in ANSWERING}
        for name, point in at.items():
            if point is None:
                best = max(points, key=lambda q, name=name: q[name]["recall"])
                entry[name] = {
                    "reached": False,
                    "best_recall": best[name]["recall"],
                    "best_ef": best["ef"],
                }
                continue
            s = point[name]
            entry[name] = {
                "reached": True,
                "ef": point["ef"],
                "recall": s["recall"],
                **{q: s[q] for q in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
            }
            if name == "http":
                entry[name]["healthz_p50_ms"] = point["healthz"]["p50_ms"]
                entry[name]["healthz_p95_ms"] = point["healthz"]["p95_ms"]
                entry[name]["floor_p50_ms"] = point["floor"]["p50_ms"]
                entry[name]["floor_p95_ms"] = point["floor"]["p95_ms"]
                entry[name]["strategies"] = s["strategies"]
        base, http, vi = entry["hnswlib"], entry["http"], entry["in_process"]
        ratios: dict[str, float | None] = {
            "http_p95_over_hnswlib_p95": None,
            "http_minus_healthz_p95_over_hnswlib_p95": None,
            "http_p50_over_hnswlib_p50": None,
            "floor_p95_over_hnswlib_p95": None,
            "in_process_p95_over_hnswlib_p95": None,
        }
        if base["reached"] and http["reached"]:
            ratios["http_p95_over_hnswlib_p95"] = http["p95_ms"] / base["p95_ms"]
            ratios["http_minus_healthz_p95_over_hnswlib_p95"] = (
                http["p95_ms"] - http["healthz_p95_ms"]
            ) / base["p95_ms"]
            ratios["http_p50_over_hnswlib_p50"] = http["p50_ms"] / base["p50_ms"]
            ratios["floor_p95_over_hnswlib_p95"] = http["floor_p95_ms"] / base["p95_ms"]
        if base["reached"] and vi["reached"]:
            ratios["in_process_p95_over_hnswlib_p95"] = vi["p95_ms"] / base["p95_ms"]
        entry["ratios"] = ratios
        out.append(entry)
    return out
