"""Ranking metrics per evaluation case, bootstrap confidence intervals over users, a verdict.

Each case ranks the whole catalogue minus its history items. Ties in a method's scores are
broken by one seeded random order of the items, the same for every method, so a method that
gives many items one score (popularity's zero counts) gets average luck, not the item-id order.
Users are the unit of resampling: a user's cases are not independent of each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (10, 50)
METRICS = ("recall@10", "recall@50", "ndcg@10")
_DISCOUNTS = 1.0 / np.log2(np.arange(2, 12))  # 0-based ranks 0..9


def target_ranks(
    scores: np.ndarray,
    histories: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    tie_position: np.ndarray,
) -> list[np.ndarray]:
    """Per case, the 0-based rank of each target among the catalogue minus the history: the
    items scored higher, plus those scored equal that come first in the tie order
    (``tie_position[item]``: the item's place in it). The same as its place in a full sort,
    without sorting."""
    scores = np.array(scores, np.float64)  # a copy: the history is masked in place
    ranks = []
    for i, (seen, target) in enumerate(zip(histories, targets, strict=True)):
        row = scores[i]
        row[seen] = -np.inf  # never above a target, and never a target itself
        own = row[target][:, None]
        ahead = (row > own) | ((row == own) & (tie_position < tie_position[target][:, None]))
        ranks.append(ahead.sum(axis=1))
    return ranks


def case_metrics(ranks: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Recall@10, Recall@50 and NDCG@10 (binary relevance) per case from its targets' ranks;
    NaN where a case has no targets (so a slice can leave it out)."""
    out = {name: np.full(len(ranks), np.nan) for name in METRICS}
    for i, r in enumerate(ranks):
        if len(r) == 0:
            continue
        for k in KS:
            out[f"recall@{k}"][i] = (r < k).sum() / len(r)
        ideal = _DISCOUNTS[: min(len(r), 10)].sum()
        out["ndcg@10"][i] = _DISCOUNTS[r[r < 10]].sum() / ideal
    return out


def per_user_means(values: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, mean of each user's non-NaN values); users with none are left out. Each user then
    weighs the same, however many cases they have."""
    keep = ~np.isnan(values)
    ids, inverse = np.unique(users[keep], return_inverse=True)
    sums = np.bincount(inverse, weights=values[keep], minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids))
    return ids, sums / np.maximum(counts, 1)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] indices drawn with replacement: the same draws for every method, so that
    differences between methods are paired."""
    if n == 0:
        return np.zeros((resamples, 0), np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def summary(values: np.ndarray, draws: np.ndarray) -> dict[str, float | list[float]]:
    """Mean and percentile 95 % interval of the mean over the bootstrap ``draws``."""
    if len(values) == 0:
        return {"mean": float("nan"), "ci95": [float("nan"), float("nan")]}
    means = values[draws].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "ci95": [float(lo), float(hi)]}


def verdict(
    per_user: dict[str, np.ndarray],
    draws: np.ndarray,
    ours: str = "two_tower",
    metric: str = "",
    rivals: Sequence[str] | None = None,
) -> dict[str, object]:
    """The best method by mean, whether ``ours`` lies within the best's 95 % interval, and the
    paired bootstrap interval of ``ours`` minus the best of ``rivals`` (None: every other
    method): above zero throughout, ``ours`` wins; below zero throughout, it loses; else no
    clear difference."""
    means = {name: float(v.mean()) for name, v in per_user.items() if len(v)}
    rivals = [m for m in (rivals if rivals is not None else means) if m != ours and m in means]
    if ours not in means or not rivals:
        return {"metric": metric, "best": None, "outcome": "no_users_in_slice"}
    best = max(means, key=means.__getitem__)
    rival = max(rivals, key=means.__getitem__)
    best_ci = summary(per_user[best], draws)["ci95"]
    diff = summary(per_user[ours] - per_user[rival], draws)
    lo, hi = diff["ci95"]
    outcome = "wins" if lo > 0 else "loses" if hi < 0 else "no_clear_difference"
    return {
        "metric": metric,
        "best": best,
        "best_mean": means[best],
        "best_ci95": best_ci,
        # Methods with exactly the best mean (an all-zero slice ties every method).
        "best_tied_with": [m for m in means if m != best and means[m] == means[best]],
        f"{ours}_mean": means[ours],
        f"{ours}_within_best_ci95": bool(best_ci[0] <= means[ours] <= best_ci[1]),
        "best_other": rival,
        f"{ours}_minus_best_other": diff,
        "outcome": f"{ours}_{outcome}",
    }
