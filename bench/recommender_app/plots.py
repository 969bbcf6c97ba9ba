"""The PNG: the baseline's paths, the load curves of both apps, where a request's time goes,
and the load curve with the pipeline running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.recommender_app.params import (
    APP_PATHS,
    BASELINE_PATHS,
    LABELS,
    STAGES,
    TARGET_P95_MS,
    TARGET_PIPELINE_P95_MS,
)

QUANTILES = (("p50_ms", "#4c72b0"), ("p95_ms", "#dd8452"), ("p99_ms", "#c44e52"))


def _baseline(ax, results: dict[str, Any]) -> None:
    base = results["baseline"]
    x = np.arange(len(BASELINE_PATHS))
    for j, (q, colour) in enumerate(QUANTILES):
        values = [base[name][q] for name in BASELINE_PATHS]
        bars = ax.bar(x + (j - 1) * 0.27, values, 0.27, label=q[:3], color=colour)
        for bar in bars:
            ax.annotate(
                f"{bar.get_height():.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=6,
            )
    ax.set_xticks(x, [LABELS[name] for name in BASELINE_PATHS], fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title(f"One request at a time ({base['requests']} users): the app and its parts")
    ax.legend()


def _curves(ax, series: dict[str, list[dict[str, Any]]], bound_ms: float, title: str) -> None:
    styles = ("o-", "s--", "^:")
    for (label, by_rate), style in zip(series.items(), styles, strict=False):
        rates = [e["offered_rate"] for e in by_rate]
        for q, colour in QUANTILES:
            values = [e["response"].get(q, np.nan) for e in by_rate]
            ax.plot(rates, values, style, color=colour, label=f"{label} {q[:3]}")
        for e in by_rate:
            if e["response"] and e["degraded"]:
                ax.annotate(
                    f"{e['degraded']} degraded",
                    (e["offered_rate"], e["response"]["p95_ms"]),
                    xytext=(4, 6),
                    textcoords="offset points",
                    fontsize=7,
                )
    ax.axhline(bound_ms, color="black", ls="--", lw=1, label=f"target p95 {bound_ms:g} ms")
    ax.set_xlabel("offered requests/s (open loop)")
    ax.set_ylabel("response time, ms (from the scheduled send)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _stages(ax, by_rate: list[dict[str, Any]]) -> None:
    rates = [e["offered_rate"] for e in by_rate]
    bottom = np.zeros(len(by_rate))
    colours = {"store": "#55a868", "search": "#4c72b0", "app": "#8172b2", "outside": "#cccccc"}
    for stage in (*STAGES, "outside"):
        if stage == "outside":
            # Client-measured service time minus the handler's total: HTTP, framework, client.
            values = np.array(
                [
                    max(0.0, e["service"]["mean_ms"] - e["server_timing"]["total"]["mean_ms"])
                    if e["service"]
                    else 0.0
                    for e in by_rate
                ]
            )
        else:
            values = np.array([e["server_timing"][stage].get("mean_ms", 0.0) for e in by_rate])
        ax.bar([str(r) for r in rates], values, bottom=bottom, label=stage, color=colours[stage])
        bottom += values
    ax.set_xlabel("offered requests/s")
    ax.set_ylabel("mean ms per request")
    ax.set_title("App reading the shards: where a request's time goes (Server-Timing)")
    ax.legend()


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(18, 12))
    _baseline(axes[0][0], results)
    load = results["load"]
    series = {f"reads {path}": load[path]["by_rate"] for path in APP_PATHS if path in load}
    _curves(
        axes[0][1],
        series,
        TARGET_P95_MS,
        f"Serving path alone: {load['workers']} generator processes",
    )
    _stages(axes[1][0], load["shards"]["by_rate"])
    ax = axes[1][1]
    if "pipeline" in results:
        pipe = results["pipeline"]
        _curves(
            ax,
            {"whole stack": pipe["by_rate"]},
            TARGET_PIPELINE_P95_MS,
            f"Whole stack of nrtrec up, clicks replayed at {pipe['click_rate']:g}/s",
        )
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "pipeline section not run (--pipeline)", ha="center", va="center")
    p, m = results["params"], results["machine"]
    fig.suptitle(
        f"nrtrec recommender app: {p['items']:,} items (dim {p['dim']}, {p['shards']} shards), "
        f"{p['users']:,} users, k={p['k']}, {p['recent']} recent items each\n"
        f"{m['cpu']}, {m['usable_cores']} cores, Python {m['python']}, {m['date']}, "
        f"commit {m.get('git_commit')}{' (dirty)' if m.get('git_dirty') else ''}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
