"""The PNG: one panel per figure (``PANELS``), drawn from the results' JSON alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Panel, draw_panels
from bench.query_node.params import (
    DELTA_TO_NODE,
    FILTER_PATHS,
    HTTP_OVERHEAD_TARGET,
    LABELS,
    RECALL_TARGET,
    SEARCH_PATHS,
    UPSERT_RATIO_TARGET,
)
from bench.query_node.plots_serving import (
    panel_during_search,
    panel_during_upsert,
    panel_matched,
    panel_sweep,
)

COLOURS = {"p50": "#4c72b0", "p95": "#dd8452", "p99": "#c44e52"}


def _bar_labels(ax: Any, bars: Any, fmt: str = "{:.2f}") -> None:
    for bar in bars:
        height = bar.get_height()
        if height > 0:
            ax.annotate(
                fmt.format(height),
                (bar.get_x() + bar.get_width() / 2, height),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )


def _panel_latency(k: int) -> Panel:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        search = results.get("search", {}).get(f"k{k}")
        if not search:
            return False
        x = np.arange(len(SEARCH_PATHS))
        width = 0.26
        for j, q in enumerate(("p50", "p95", "p99")):
            values = [search[name][f"{q}_ms"] for name in SEARCH_PATHS]
            bars = ax.bar(x + (j - 1) * width, values, width, label=q, color=COLOURS[q])
            _bar_labels(ax, bars)
        ticks = []
        for name in SEARCH_PATHS:
            label = LABELS[name]
            if "recall" in search[name]:
                label += f"\nrecall@{k} {search[name]['recall']:.3f}"
            ticks.append(label)
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_ylabel("latency per query (ms)")
        ax.set_title(f"Search latency, k={k}, ef={search['ef']} (sequential, single query)")
        ratios = search["ratios"]
        target = f" (target <= {HTTP_OVERHEAD_TARGET:g})" if k == 100 else ""
        ax.text(
            0.02,
            0.97,
            f"(p95 search - p95 healthz) / p95 hnswlib = {ratios['http_overhead_p95']:.2f}"
            f"{target}\np95 VectorIndex / p95 hnswlib = {ratios['in_process_p95']:.2f}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
        )
        ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
        ax.legend(loc="upper right", fontsize=8)
        return True

    return panel


def _panel_build(ax: Any, results: dict[str, Any]) -> bool:
    build = results.get("build")
    if not build:
        return False
    names = ("hnswlib", "in_process", "http")
    labels = ("hnswlib\nadd_items", "VectorIndex\nupsert", "query node\nHTTP upsert")
    values = [build[name]["items_per_s"] for name in names]
    bars = ax.bar(labels, values, color=["#4c72b0", "#55a868", "#dd8452"])
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(
            f"{bar.get_height():,.0f}/s\n({build['ratio_to_hnswlib'][name]:.2f}x)",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    target = UPSERT_RATIO_TARGET * build["hnswlib"]["items_per_s"]
    ax.axhline(
        target,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"target: HTTP ≥ {UPSERT_RATIO_TARGET:g}x hnswlib",
    )
    ax.set_ylim(0, max(values) * 1.25)
    ax.set_ylabel("items per second")
    threads = build["insert_threads"]
    ax.set_title(
        f"Build: upsert throughput (batches of {build['batch']:,}),\n"
        f"insert threads {threads['hnswlib_num_threads']} (= {threads['resolved']}) for all three"
    )
    ax.legend(fontsize=7, loc="upper right")
    return True


def _selectivity_ticks(filtered: dict[str, Any], k: int | None = None) -> list[str]:
    ticks = []
    for entry in filtered["by_selectivity"]:
        label = f"{entry['selectivity']:.0%} ({entry['matching']:,} items)"
        ks = [k] if k else [int(key[1:]) for key in entry if key.startswith("k")]
        # What the node reported in its /metrics.
        chosen = sorted({s for kk in ks for s in entry[f"k{kk}"]["http"]["strategies"]})
        ticks.append(f"{label}\nnode: {', '.join(chosen)}")
    return ticks


def _panel_filtered_recall(ax: Any, results: dict[str, Any]) -> bool:
    filtered = results.get("filtered")
    if not filtered:
        return False
    entries = filtered["by_selectivity"]
    ks = [int(key[1:]) for key in entries[0] if key.startswith("k")]
    series = [(name, k) for name in ("http", "hnswlib_filter") for k in ks]
    x = np.arange(len(entries))
    width = 0.8 / len(series)
    colours = ["#dd8452", "#c44e52", "#8da0cb", "#4c72b0"]
    lowest = 1.0
    for j, (name, k) in enumerate(series):
        values = [e[f"k{k}"][name]["recall"] for e in entries]
        lowest = min(lowest, *values)
        label = ("query node (HTTP)" if name == "http" else "hnswlib + filter callback") + f" @{k}"
        offset = x + (j - (len(series) - 1) / 2) * width
        bars = ax.bar(offset, values, width, label=label, color=colours[j % len(colours)])
        _bar_labels(ax, bars, "{:.3f}")
    ax.axhline(RECALL_TARGET, color="black", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_ylim(max(0.0, min(lowest, RECALL_TARGET) - 0.1), 1.04)
    ax.set_xticks(x, _selectivity_ticks(filtered), fontsize=8)
    ax.set_ylabel("recall vs exact search over matching items")
    ax.set_xlabel("filter selectivity (share of items kept)")
    ax.set_title(f"Filtered recall ({filtered['queries']} queries)")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.95)
    return True


def _panel_filtered_latency(k: int) -> Panel:
    def panel(ax: Any, results: dict[str, Any]) -> bool:
        filtered = results.get("filtered")
        if not filtered or f"k{k}" not in filtered["by_selectivity"][0]:
            return False
        entries = filtered["by_selectivity"]
        x = np.arange(len(entries))
        width = 0.8 / len(FILTER_PATHS)
        colours = {"hnswlib_filter": "#4c72b0", "in_process": "#55a868", "http": "#dd8452"}
        for j, name in enumerate(FILTER_PATHS):
            offset = x + (j - (len(FILTER_PATHS) - 1) / 2) * width
            p95 = [e[f"k{k}"][name]["p95_ms"] for e in entries]
            p50 = [e[f"k{k}"][name]["p50_ms"] for e in entries]
            bars = ax.bar(offset, p95, width, color=colours[name], label=f"{LABELS[name]} p95")
            ax.plot(offset, p50, "k_", markersize=14, markeredgewidth=2)
            _bar_labels(ax, bars)
        ax.plot([], [], "k_", markersize=14, markeredgewidth=2, label="p50")
        base = results.get("search", {}).get(f"k{k}", {}).get("hnswlib", {}).get("p95_ms")
        if base:
            ax.axhline(base, color="grey", linestyle=":", label="unfiltered hnswlib p95")
        ax.set_yscale("log")
        # Head room above the bars for the legend.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 8)
        ax.set_xticks(x, _selectivity_ticks(filtered, k), fontsize=8)
        ax.set_ylabel("latency per query (ms, log scale)")
        ax.set_xlabel("filter selectivity (share of items kept)")
        ax.set_title(f"Filtered search latency, k={k} (bar: p95, tick: p50)")
        ax.legend(fontsize=7, loc="upper left", ncols=2)
        return True

    return panel


def _panel_freshness(ax: Any, results: dict[str, Any]) -> bool:
    from matplotlib.ticker import FuncFormatter

    fresh = results.get("delta_to_node")
    if not fresh or not fresh.get("freshness_ms"):
        return False
    ms = np.sort(np.asarray(fresh["freshness_ms"], np.float64))
    share = np.arange(1, len(ms) + 1) / fresh["n"]  # not-found items never reach the top
    ax.step(ms, share, where="post", color="#4c72b0", label="delta → node (found items)")
    for q, colour in (("p50", COLOURS["p50"]), ("p95", COLOURS["p95"])):
        value = fresh[f"{q}_ms"]
        ax.axvline(value, color=colour, linestyle=":", label=f"{q} {value:.1f} ms")
    bound = fresh["bound_p95_ms"]
    ax.axvline(
        bound, color="black", linestyle="--", linewidth=1, label="this path's bound, p95 1 s"
    )
    ax.axhline(0.95, color="grey", linewidth=0.6)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    low = max(0.1, ms[0] / 1.5)
    ax.set_xlim(low, max(bound, ms[-1]) * 1.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ms from producer.produce() to the first search that returns the item (log)")
    ax.set_ylabel("share of items produced")
    ax.set_title(
        f"{DELTA_TO_NODE}\n{fresh['n']} new items at {fresh['rate_per_s']:g}/s (not end to end)",
        fontsize=9,
    )
    polling = fresh["polling"]
    ax.text(
        0.98,
        0.05,
        f"p50/p95/p99/max {fresh['p50_ms']:.1f}/{fresh['p95_ms']:.1f}/{fresh['p99_ms']:.1f}"
        f"/{fresh['max_ms']:.1f} ms\nfound {fresh['found']}, not found in "
        f"{fresh['deadline_s']:g} s: {fresh['not_found']}\n"
        f"polled every {polling['spacing_ms']:g} ms, {polling['searches_per_s']:,.0f} searches/s; "
        f"index {fresh['preload']:,} + new",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9},
    )
    ax.legend(loc="center", fontsize=8)
    return True


# Plot panels in order; a panel returns False when its section did not run. Add new ones here.
PANELS: list[Panel] = [
    _panel_latency(10),
    _panel_latency(100),
    _panel_build,
    panel_sweep(10),
    panel_sweep(100),
    panel_matched,
    panel_during_search,
    panel_during_upsert,
    _panel_freshness,
    _panel_filtered_recall,
    _panel_filtered_latency(10),
    _panel_filtered_latency(100),
]


def plot(results: dict[str, Any], path: Path) -> None:
    p, m = results["params"], results["machine"]
    title = (
        f"nrtrec query node, data {p['data']}: {p['n']:,} vectors, dim {p['dim']}, {p['metric']}, "
        f"M={p['M']}, ef_construction={p['ef_construction']}, {p['queries']} queries\n"
        f"{m['cpu']}, {m['usable_cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, "
        f"hnswlib {m['versions']['hnswlib']}, {m['date']}, commit {m['git_commit']}"
        + (" (dirty)" if m["git_dirty"] else "")
        + f", load {m['loadavg_start'][0]:.2f} → {m['loadavg_end'][0]:.2f}"
    )
    draw_panels(PANELS, results, path, title)
