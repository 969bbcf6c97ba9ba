"""Section ``search``: unfiltered recall and latency, per k, for the three indexes and the cost of
HTTP alone (``/healthz``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.common import percentiles
from bench.query_node.data import recall
from bench.query_node.params import INDEX, SEARCH_PATHS, node_ef
from bench.query_node.run import Bench


def section_search(bench: Bench) -> dict[str, Any]:
    """Recall and latency at the node's default ef, per k, for the three indexes and /healthz."""
    p, data = bench.params, bench.data
    raw, index, node = bench.raw, bench.index, bench.node
    assert raw is not None and index is not None and node is not None
    single = [q[None, :] for q in data.queries]
    out: dict[str, Any] = {}
    for k in p.ks:
        ef = node_ef(bench.settings, k)
        raw.set_ef(ef)
        path = f"/v1/indexes/{INDEX}/search"

        def http(i: int, k: int = k, path: str = path) -> Any:
            return node.timed.post(path, {"vector": data.queries[i].tolist(), "k": k})["items"]

        def healthz(i: int) -> Any:
            return node.timed.get("/healthz")

        paths: dict[str, Callable[[int], Any]] = {
            "hnswlib": lambda i, k=k: raw.knn_query(single[i], k=k, num_threads=1)[0][0],
            "in_process": lambda i, k=k: index.search(data.queries[i], k),
            "http": http,
            "healthz": healthz,
        }
        times, answers = bench.timed(f"search k={k} (ef {ef})", paths, p.queries)
        found = {
            "hnswlib": [a.tolist() for a in answers["hnswlib"]],
            "in_process": [[int(h.id) for h in a.hits] for a in answers["in_process"]],
            "http": [[int(item["id"]) for item in a] for a in answers["http"]],
        }
        result: dict[str, Any] = {"k": k, "ef": ef}
        for name in SEARCH_PATHS:
            result[name] = percentiles(times[name])
            if name in found:
                result[name]["recall"] = recall(found[name], data.exact, k)
        strategies = Counter(a.strategy.value for a in answers["in_process"])
        result["in_process"]["strategies"] = dict(strategies)
        base = result["hnswlib"]["p95_ms"]
        result["ratios"] = {
            # The DESIGN target: what a search costs over HTTP beyond a no-op request.
            "http_overhead_p95": (result["http"]["p95_ms"] - result["healthz"]["p95_ms"]) / base,
            "http_overhead_p50": (result["http"]["p50_ms"] - result["healthz"]["p50_ms"])
            / result["hnswlib"]["p50_ms"],
            "in_process_p95": result["in_process"]["p95_ms"] / base,
            "http_p95": result["http"]["p95_ms"] / base,
            "healthz_p95": result["healthz"]["p95_ms"] / base,
        }
        out[f"k{k}"] = result
    return out
