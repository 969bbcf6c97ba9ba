"""Pure merging of what shards answer: top-k hits by score, index listings by name and version."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nrtrec.schemas.query_api import Metric


def merge_hits(
    answers: Iterable[Sequence[Mapping[str, Any]]], k: int, metric: Metric | str
) -> list[dict[str, Any]]:
    """The ``k`` nearest of the shards' hits (``{id, score}``), nearest first.

    l2 and hamming scores are distances (ascending), ip and cosine scores similarities
    (descending): ``Metric.smaller_is_nearer``.
    An id that two shards both return (an item mid-move between shards) counts once, at its
    better score. Ties order by id, so the answer does not depend on which shard was faster.
    A hit's ``attributes`` (searches with ``include_attributes``) come along with it.
    """
    smaller_is_nearer = Metric(metric).smaller_is_nearer
    best: dict[str, tuple[float, Mapping[str, Any]]] = {}
    for hits in answers:
        for hit in hits:
            item_id, score = hit["id"], float(hit["score"])
            known = best.get(item_id)
            if known is None or (score < known[0] if smaller_is_nearer else score > known[0]):
                best[item_id] = (score, hit)
    if smaller_is_nearer:
        top = heapq.nsmallest(k, best.items(), key=lambda kv: (kv[1][0], kv[0]))
    else:
        top = heapq.nsmallest(k, best.items(), key=lambda kv: (-kv[1][0], kv[0]))
    merged = []
    for item_id, (score, hit) in top:
        out: dict[str, Any] = {"id": item_id, "score": score}
        if "attributes" in hit:
            out["attributes"] = hit["attributes"]
        merged.append(out)
    return merged


def merge_listings(listings: Iterable[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """``GET /v1/indexes`` over shards (one replica each): counts summed per name and version,
    memory per vector averaged over the shards' vectors, serving when every shard serves it.

    dim, metric, backend and quantization come from the first shard that lists the version
    (they are equal on every shard when the index was created through the gateway). Sorted by
    name, then version.
    """
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    memories: dict[tuple[str, int], list[tuple[int, Mapping[str, float]]]] = {}
    for listing in listings:
        for entry in listing:
            key = (entry["name"], int(entry["model_version"]))
            if entry.get("memory"):
                memories.setdefault(key, []).append((int(entry["count"]), entry["memory"]))
            if key in merged:
                merged[key]["count"] += int(entry["count"])
                merged[key]["serving"] &= bool(entry.get("serving", True))
            else:
                merged[key] = {
                    "name": entry["name"],
                    "model_version": int(entry["model_version"]),
                    "dim": int(entry["dim"]),
                    "metric": entry["metric"],
                    "count": int(entry["count"]),
                    "serving": bool(entry.get("serving", True)),
                    **{f: entry[f] for f in ("backend", "quantization") if f in entry},
                }
    for key, parts in memories.items():
        merged[key]["memory"] = _weighted_mean(parts)
    return [merged[key] for key in sorted(merged)]


def _weighted_mean(parts: list[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    total = sum(count for count, _ in parts)
    weights = [count / total if total else 1 / len(parts) for count, _ in parts]
    return {
        field: sum(w * memory[field] for w, (_, memory) in zip(weights, parts, strict=True))
        for field in parts[0][1]
    }
