"""The PNG's panels of the serving-speed sections: the ef sweep (recall against latency per path
and k), the ratios at matched recall, and search and upsert during a bulk upsert."""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import Panel
from bench.query_node.params import MATCHED_RATIO_TARGET

PATH_COLOURS = {"hnswlib": "#4c72b0", "in_process": "#55a868", "http": "#dd8452"}
PATH_NAMES = {"hnswlib": "hnswlib in-process", "in_process": "VectorIndex", "http": "node HTTP"}
BOX = {"boxstyle": "round", "facecolor": "white", "alpha": 0.9}


def panel_sweep(k: int) -> Panel:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        sweep = results.get("sweep", {}).get("by_k", {}).get(f"k{k}")
        if not sweep:
            return False
        points = sweep["points"]
        for name, colour in PATH_COLOURS.items():
            xs = [pt[name]["recall"] for pt in points]
            ax.plot(
                xs,
                [pt[name]["p95_ms"] for pt in points],
                "o-",
                color=colour,
                label=f"{PATH_NAMES[name]} p95",
            )
            ax.plot(
                xs,
                [pt[name]["p50_ms"] for pt in points],
                ".--",
                color=colour,
                linewidth=0.8,
                alpha=0.7,
            )
            if name != "in_process":
                for pt, x in zip(points, xs, strict=True):
                    # The node (like VectorIndex) may answer by exact search where it is cheaper.
                    exact = "exact" in pt[name].get("strategies", {})
                    ax.annotate(
                        f"{pt['ef']}{'*' if exact else ''}",
                        (x, pt[name]["p95_ms"]),
                        fontsize=6,
                        xytext=(2, 3),
                        textcoords="offset points",
                        color=colour,
                    )
        floor = float(np.median([pt["healthz"]["p95_ms"] for pt in points]))
        ax.axhline(floor, color="grey", linestyle=":", label=f"HTTP /healthz p95 {floor:.2f} ms")
        empty = float(np.median([pt["floor"]["p95_ms"] for pt in points]))
        ax.axhline(
            empty,
            color="black",
            linestyle="-.",
            linewidth=0.8,
            label=f"empty ASGI app p95 {empty:.2f} ms",
        )
        ax.plot([], [], "k.--", linewidth=0.8, label="p50 (dashed)")
        lines = []
        for entry in sweep["matched"]:
            target = entry["recall_target"]
            ax.axvline(target, color="black", linewidth=0.5, alpha=0.4)
            ratios = entry["ratios"]
            plain = ratios["http_p95_over_hnswlib_p95"]
            if plain is None:
                lines.append(
                    f"@{target:g}: not reached by "
                    + ", ".join(n for n in ("hnswlib", "http") if not entry[n]["reached"])
                )
                continue
            floorless = ratios["http_minus_healthz_p95_over_hnswlib_p95"]
            lines.append(
                f"@{target:g}: ef {entry['hnswlib']['ef']} / {entry['http']['ef']}, "
                f"p95 ratio {plain:.2f} (minus /healthz {floorless:.2f}; "
                f"empty app {ratios['floor_p95_over_hnswlib_p95']:.2f})"
            )
        ax.text(
            0.02,
            0.97,
            "HTTP / hnswlib, each at its smallest ef\n" + "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            fontsize=7,
            bbox=BOX,
        )
        ax.set_yscale("log")
        low = min(pt[n]["recall"] for pt in points for n in PATH_COLOURS)
        ax.set_xlim(max(0.0, low - 0.02), 1.005)
        ax.set_xlabel(f"recall@{k} (labels: ef; *: the node searched exactly)")
        ax.set_ylabel("latency per query, ms (log)")
        ax.set_title(f"ef sweep, k={k}: recall vs latency ({results['sweep']['queries']} queries)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        return True

    return panel


def panel_matched(ax: Any, results: dict[str, Any]) -> bool:
    sweep = results.get("sweep")
    if not sweep:
        return False
    labels, plain, floorless, empty = [], [], [], []
    for m in sweep["by_k"].values():
        for entry in m["matched"]:
            labels.append(f"k={m['k']}\n@{entry['recall_target']:g}")
            plain.append(entry["ratios"]["http_p95_over_hnswlib_p95"])
            floorless.append(entry["ratios"]["http_minus_healthz_p95_over_hnswlib_p95"])
            empty.append(entry["ratios"]["floor_p95_over_hnswlib_p95"])
    x = np.arange(len(labels))
    series = (
        ("p95 HTTP / p95 hnswlib", plain, "#dd8452"),
        ("(p95 HTTP - p95 /healthz) / p95 hnswlib", floorless, "#8da0cb"),
        ("p95 empty ASGI app / p95 hnswlib (over 0.5: 1.5x out of reach)", empty, "#999999"),
    )
    width = 0.27
    for j, (label, values, colour) in enumerate(series):
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(x + (j - 1) * width, heights, width, color=colour, label=label)
        for bar, v in zip(bars, values, strict=True):
            if v is None and j > 0:
                continue  # "not reached" once a group, over its first bar
            text = "not\nreached" if v is None else f"{v:.2f}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
            )
    ax.axhline(
        MATCHED_RATIO_TARGET,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"target ≤ {MATCHED_RATIO_TARGET:g}x (p95 HTTP / p95 hnswlib)",
    )
    ax.axhline(1.0, color="grey", linewidth=0.6)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, max([MATCHED_RATIO_TARGET, *(v or 0 for v in plain + empty)]) * 1.3)
    ax.set_ylabel("ratio to in-process hnswlib (p95)")
    ax.set_title("Search over HTTP vs hnswlib at matched recall (each its smallest ef)")
    ax.legend(fontsize=7, loc="upper left")
    return True


def panel_during_search(ax: Any, results: dict[str, Any]) -> bool:
    during = results.get("during_upsert")
    if not during or "stall" not in during:
        return False
    qs = ("p50", "p95", "p99")
    groups = (
        ("idle node", during["search_idle"]["response"], "#4c72b0"),
        ("during bulk upsert", during["search_with_searches"]["response"], "#c44e52"),
    )
    x = np.arange(len(qs))
    for j, (label, stats, colour) in enumerate(groups):
        values = [stats[f"{q}_ms"] for q in qs]
        bars = ax.bar(x + (j - 0.5) * 0.38, values, 0.38, color=colour, label=label)
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                f"{v:.2f}",
                (bar.get_x() + bar.get_width() / 2, v),
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
            )
    stall = during["stall"]
    ax.axhline(
        stall["batch_p50_ms"],
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"one upsert batch, p50 {stall['batch_p50_ms']:.0f} ms",
    )
    ratios = during["search_ratio_during_over_idle"]
    search = during["search"]
    ax.text(
        0.02,
        0.97,
        f"during / idle: p50 {ratios['response_p50']:.2f}x, p95 {ratios['response_p95']:.2f}x"
        f", p99 {ratios['response_p99']:.2f}x\nservice p99 during / batch p50 = "
        f"{stall['p99_over_batch_p50']:.2f} (stall if ≥ {stall['max_share']:g})\n"
        f"k={search['k']}, ef {search['ef']}, {search['rate_per_s']:g}/s, "
        f"{during['search_with_searches']['searches']} / {during['search_idle']['searches']} "
        "searches",
        transform=ax.transAxes,
        va="top",
        fontsize=7,
        bbox=BOX,
    )
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 10)
    ax.set_xticks(x, qs)
    ax.set_ylabel("search response time, ms (log; from its scheduled send)")
    ax.set_title(f"Search during a bulk HTTP upsert ({during['preload']:,} items first)")
    ax.legend(fontsize=7, loc="upper right")
    return True


def panel_during_upsert(ax: Any, results: dict[str, Any]) -> bool:
    during = results.get("during_upsert")
    if not during or "stall" not in during:
        return False
    names = ("upsert_alone", "upsert_with_searches")
    labels = ("HTTP upsert\nalone", f"HTTP upsert\n+ {during['search']['rate_per_s']:g} searches/s")
    values = [during[name]["items_per_s"] for name in names]
    bars = ax.bar(labels, values, color=["#4c72b0", "#c44e52"], width=0.5)
    for bar, name in zip(bars, names, strict=True):
        lat = during[name]["batch_latency"]
        ax.annotate(
            f"{bar.get_height():,.0f}/s\nbatch p50 {lat['p50_ms']:.0f} ms, "
            f"p95 {lat['p95_ms']:.0f} ms",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ratio = during["upsert_ratio_with_searches_over_alone"]
    ax.set_ylim(0, max(values) * 1.3)
    ax.set_ylabel("items per second")
    ax.set_title(
        f"Bulk upsert rate with and without searches (ratio {ratio:.2f}; "
        f"{during['rounds']} x {during['batches_per_window']} batches of {during['batch']:,} each)"
    )
    return True
