"""Section ``filtered``: range filters on ``bucket`` that keep 50%, 10% and 1% of the items,
against exact search over the matching items and hnswlib's filter callback."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import percentiles
from bench.query_node.data import exact_knn, recall
from bench.query_node.params import BUCKETS, FILTER_PATHS, INDEX, node_ef
from bench.query_node.run import Bench


def section_filtered(bench: Bench) -> dict[str, Any]:
    """Range filters on `bucket` keeping 50%, 10% and 1% of the items."""
    p, data = bench.params, bench.data
    raw, index, node = bench.raw, bench.index, bench.node
    assert raw is not None and index is not None and node is not None
    nq = min(p.filter_queries, p.queries)
    queries = data.queries[:nq]
    single = [q[None, :] for q in queries]
    unfiltered = bench.results.get("search", {})
    out: dict[str, Any] = {"queries": nq, "by_selectivity": []}
    for selectivity in p.selectivities:
        below = round(selectivity * BUCKETS)
        flt = {"bucket": {"lt": below}}
        mask = data.buckets < below
        rows = np.flatnonzero(mask)
        exact = exact_knn(data.vectors, queries, max(p.ks), rows)
        entry: dict[str, Any] = {
            "selectivity": selectivity,
            "filter": flt,
            "matching": len(rows),
            "fraction": len(rows) / p.n,
        }
        for k in p.ks:
            ef = node_ef(bench.settings, k)
            raw.set_ef(ef)
            k_raw = min(k, len(rows))
            failed: list[int] = []
            path = f"/v1/indexes/{INDEX}/search"

            def hnswlib_filter(
                i: int,
                k_raw: int = k_raw,
                allowed: Any = mask.__getitem__,
                failed: list[int] = failed,
            ) -> Any:
                try:
                    return raw.knn_query(single[i], k=k_raw, num_threads=1, filter=allowed)[0][0]
                except RuntimeError:
                    # hnswlib found fewer than k that pass the filter.
                    failed.append(i)
                    return np.empty(0, np.int64)

            def http(i: int, k: int = k, path: str = path, flt: dict = flt) -> Any:
                body = {"vector": queries[i].tolist(), "k": k, "filter": flt}
                return node.timed.post(path, body)["items"]

            label = f"filter {selectivity:.0%} k={k} (ef {ef})"
            # The callback baseline walks much of the graph holding the GIL (milliseconds at
            # 1%): it runs in a loop of its own, so it neither delays nor evicts the caches of
            # the two paths compared with each other.
            times, answers = bench.timed(
                f"{label}: hnswlib",
                {"hnswlib_filter": hnswlib_filter},
                nq,
                after_warmup=failed.clear,
            )
            paths: dict[str, Callable[[int], Any]] = {
                "in_process": lambda i, k=k, flt=flt: index.search(queries[i], k, filter=flt),
                "http": http,
            }
            before: Counter[str] = Counter()
            node_times, node_answers = bench.timed(
                f"{label}: node",
                paths,
                nq,
                after_warmup=lambda before=before: before.update(node.searches_by_strategy()),
            )
            node_strategies = node.searches_by_strategy() - before
            times.update(node_times)
            answers.update(node_answers)
            found = {
                "hnswlib_filter": [a.tolist() for a in answers["hnswlib_filter"]],
                "in_process": [[int(h.id) for h in a.hits] for a in answers["in_process"]],
                "http": [[int(item["id"]) for item in a] for a in answers["http"]],
            }
            result: dict[str, Any] = {"k": k, "ef": ef}
            for name in FILTER_PATHS:
                result[name] = {
                    **percentiles(times[name]),
                    "recall": recall(found[name], exact, k),
                }
            result["hnswlib_filter"]["failures"] = len(failed)
            result["in_process"]["strategies"] = dict(
                Counter(a.strategy.value for a in answers["in_process"])
            )
            # The node's own count (its /metrics), for the timed queries.
            result["http"]["strategies"] = dict(node_strategies)
            base = unfiltered.get(f"k{k}", {}).get("hnswlib", {}).get("p95_ms")
            if base:
                result["ratio_p95_to_unfiltered_hnswlib"] = {
                    name: result[name]["p95_ms"] / base for name in FILTER_PATHS
                }
            entry[f"k{k}"] = result
        out["by_selectivity"].append(entry)
    return out
