"""Every method on the same cases: per-case metrics, slices, bootstrap intervals, verdicts.

Slices (per case; a user's cases in a slice are averaged, then users are averaged):

- ``overall``: every case;
- ``short_history``: cases whose history holds at most ``SHORT_HISTORY`` events;
- ``new_items``: only the targets with no event before the cut (cold items) count as relevant;
  cases without one are out. The ranking is the same full catalogue.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nrtrec.inference.training.baselines import Scorer
from nrtrec.inference.training.metrics import (
    METRICS,
    bootstrap_indices,
    case_metrics,
    per_user_means,
    summary,
    target_ranks,
    verdict,
)
from nrtrec.inference.training.timesplit import Cases

SLICES = ("overall", "short_history", "new_items")
# What the app serves (the towers, its popularity prior and its fresh-listing boost), and what
# it is measured against.
SERVED = "two_tower_served"
BASELINES = ("most_popular", "last_item_content", "co_occurrence", "sasrec")
SHORT_HISTORY = 5
CHUNK = 2048  # cases scored at a time: [2048, 1682] float64 is 28 MB
MIN_USERS = 30  # below this a slice's verdict says its interval is too wide to read


def case_table(
    scorer: Scorer, cases: Cases, tie_position: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """Per slice, per metric, one value per case (NaN: the case is not in the slice)."""
    parts: dict[str, list[dict[str, np.ndarray]]] = {"all": [], "new": []}
    for start in range(0, len(cases), CHUNK):
        window = slice(start, start + CHUNK)
        history, history_ts = cases.history[window], cases.history_ts[window]
        scores = scorer.scores(history, history_ts, cases.at[window])
        ranks = target_ranks(scores, history, cases.targets[window], tie_position)
        parts["all"].append(case_metrics(ranks))
        # The new targets' ranks are the same ranks, restricted: a cold target's rank among
        # the catalogue does not depend on which co-targets are counted.
        is_new = [
            np.isin(t, n)
            for t, n in zip(cases.targets[window], cases.new_targets[window], strict=True)
        ]
        parts["new"].append(case_metrics([r[m] for r, m in zip(ranks, is_new, strict=True)]))
    joined = {
        part: {m: np.concatenate([p[m] for p in chunks]) for m in METRICS}
        for part, chunks in parts.items()
    }
    short = cases.history_lengths() <= SHORT_HISTORY
    return {
        "overall": joined["all"],
        "short_history": {m: np.where(short, v, np.nan) for m, v in joined["all"].items()},
        "new_items": joined["new"],
    }


def validation_ndcg(scorer: Scorer, cases: Cases, tie_position: np.ndarray) -> dict[str, float]:
    """The tuning criteria: NDCG@10 over all cases (``val_ndcg@10``) and over the new-items
    slice (``val_new_items_ndcg@10``), a user's cases averaged first."""
    table = case_table(scorer, cases, tie_position)
    out = {}
    for key, name in (("val_ndcg@10", "overall"), ("val_new_items_ndcg@10", "new_items")):
        means = per_user_means(table[name]["ndcg@10"], cases.user)[1]
        out[key] = float(means.mean()) if len(means) else 0.0
    return out


def report(
    tables: dict[str, dict[str, dict[str, np.ndarray]]],
    cases: Cases,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Per slice: users and cases, each method's mean and 95 % interval per metric, and the
    verdict per metric. The bootstrap draws are the same for every method (paired)."""
    out: dict[str, Any] = {}
    for name in SLICES:
        per_user: dict[str, dict[str, np.ndarray]] = {m: {} for m in METRICS}
        users = np.array([], np.int32)
        for method, table in tables.items():
            for metric in METRICS:
                users, means = per_user_means(table[name][metric], cases.user)
                per_user[metric][method] = means
        in_slice = ~np.isnan(next(iter(tables.values()))[name]["ndcg@10"])
        rivals = [m for m in BASELINES if m in tables]
        draws = bootstrap_indices(len(users), resamples, seed)
        out[name] = {
            "users": len(users),
            "cases": int(in_slice.sum()),
            "methods": {
                method: {m: summary(per_user[m][method], draws) for m in METRICS}
                for method in tables
            },
            # The served ranking, and the towers alone, each against the baselines.
            **{
                key: {
                    m: {
                        **verdict(per_user[m], draws, ours, m, rivals),
                        "too_few_users": len(users) < MIN_USERS,
                    }
                    for m in METRICS
                }
                for key, ours in (("verdict", SERVED), ("towers_alone", "two_tower"))
                if ours in tables
            },
        }
    return out
