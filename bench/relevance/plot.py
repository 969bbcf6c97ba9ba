"""The figure: per protocol (rows) and slice (columns), every method's metrics with 95 % CIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Panel, draw_panels
from nrtrec.inference.training.metrics import METRICS

from .scoring import SLICES

COLOURS = {
    "most_popular": "tab:gray",
    "last_item_content": "tab:olive",
    "co_occurrence": "tab:blue",
    "sasrec": "tab:purple",
    "two_tower": "tab:red",
    "two_tower_prior": "tab:brown",
    "two_tower_served": "tab:green",
    "two_tower_id": "tab:orange",
}


def _panel(protocol: str, name: str, legend: bool) -> Panel:
    def draw(ax: Any, results: dict[str, Any]) -> bool:
        part = results["test"].get(protocol, {}).get(name)
        if not part or not part["users"]:
            return False
        methods = list(part["methods"])
        width = 0.8 / len(methods)
        x = np.arange(len(METRICS))
        for j, method in enumerate(methods):
            stats = [part["methods"][method][m] for m in METRICS]
            mean = np.array([s["mean"] for s in stats])
            lo = mean - np.array([s["ci95"][0] for s in stats])
            hi = np.array([s["ci95"][1] for s in stats]) - mean
            ax.bar(
                x + (j - (len(methods) - 1) / 2) * width, mean, width, yerr=[lo, hi],
                capsize=2, color=COLOURS[method], label=method,
            )  # fmt: skip
        ax.set_xticks(x, METRICS)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        v = part["verdict"]["ndcg@10"]
        few = " (too few users to read)" if v.get("too_few_users") else ""
        ax.set_title(
            f"{protocol} / {name}: {part['users']} users, {part['cases']} cases\n"
            f"NDCG@10 best: {v.get('best')}; {v.get('outcome')}{few}",
            fontsize=9,
        )
        if v.get("too_few_users"):
            ax.text(
                0.5, 0.5, f"only {part['users']} users: not readable", transform=ax.transAxes,
                ha="center", va="center", fontsize=10, color="gray",
            )  # fmt: skip
        if legend:
            ax.legend(fontsize=8, loc="upper left")
        return True

    return draw


def plot(results: dict[str, Any], path: Path) -> None:
    protocols = list(results["test"])
    panels = [
        _panel(p, s, legend=(i == 0 and j == 0))
        for i, p in enumerate(protocols)
        for j, s in enumerate(SLICES)
    ]
    m, c = results["machine"], results["split"]
    title = (
        f"Relevance on MovieLens-100k, global time split (val cut {c['val']['date']}, test cut "
        f"{c['test']['date']}); candidates: whole catalogue minus history; error bars: bootstrap "
        f"95 % CI over users\n{m['cpu']}, {m['cores']} cores, git {m['git_commit']}"
        f"{' (dirty)' if m['git_dirty'] else ''}, load {m['loadavg_start'][0]:.1f} -> "
        f"{m['loadavg_end'][0]:.1f}"
    )
    draw_panels(panels, results, path, title, cols=len(SLICES))
