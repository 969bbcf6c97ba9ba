"""The methods, fitted on the events before a cut, and their knobs tuned on validation.

Four baselines, the two towers alone, and what the app serves: the towers plus its popularity
prior for a user back after a break (``two_tower_prior``, :mod:`nrtrec.recommender_app.prior`),
plus its boost of fresh listings (``two_tower_served``, :mod:`nrtrec.recommender_app.ranking`).

Tuning fits every method before ``T_val`` and scores the validation cases in ``[T_val, T)`` by
NDCG@10 (:func:`bench.relevance.scoring.validation_ndcg`); the test cases never reach it. The
chosen settings are then refitted on everything before ``T``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nrtrec.core.settings import AppSettings
from nrtrec.inference.towers import TowerWeights, item_head, user_tower
from nrtrec.inference.training.baselines import (
    CoOccurrence,
    LastItemContent,
    Popularity,
    Scorer,
    co_view_counts,
    event_counts,
)
from nrtrec.inference.training.data import histories, next_item_examples, target_seconds
from nrtrec.inference.training.id_tower import IdTowers, train_with_ids
from nrtrec.inference.training.sequential import SeqConfig, SeqModel, train_sequential
from nrtrec.inference.training.timesplit import Cases, EventLog, sequences_before
from nrtrec.inference.training.train import TrainConfig, recency_weights, train
from nrtrec.recommender_app.fresh import FreshBoost
from nrtrec.recommender_app.prior import PopularityPrior, prior

from .scoring import BASELINES, validation_ndcg

METHODS = (
    "most_popular", "last_item_content", "co_occurrence", "sasrec", "two_tower", "two_tower_prior",
    "two_tower_served",
)  # fmt: skip
# --id-embedding adds "two_tower_id": the towers plus an id vector per seen item (not served).


@dataclass(frozen=True)
class Grids:
    """Every setting tried on validation, per method."""

    popularity_days: tuple[int | None, ...] = (None, 60, 30, 14, 7)
    co_window: tuple[int | None, ...] = (3, 10, 50, None)
    co_norm: tuple[str, ...] = ("none", "cosine")
    co_last_n: tuple[int, ...] = (1, 5, 20)
    co_decay: tuple[float, ...] = (1.0, 0.8)
    sasrec_dropout: tuple[float, ...] = (0.2, 0.5)
    sasrec_epochs: tuple[int, ...] = (4, 8, 12, 16)  # one run per dropout, read at each
    tower_epochs: tuple[int, ...] = (2, 4, 6, 10)
    tower_tau: tuple[float, ...] = (0.05, 0.07, 0.1)
    # Recency-weighted examples (TrainConfig.half_life_days), tried at the chosen epochs and tau.
    tower_half_life: tuple[float | None, ...] = (None, 60.0, 30.0, 15.0)
    # The served prior (two_tower_prior), at the towers' chosen settings and most_popular's
    # chosen window: its weight and the session gap.
    prior_weight: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    session_gap_s: tuple[float, ...] = (600.0, 1800.0, 3600.0, 14400.0)
    # The served ranking (two_tower_served), at two_tower_prior's chosen settings: the boost of
    # a fresh listing and how long a listing stays fresh.
    fresh_boost: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2)
    fresh_days: tuple[float, ...] = (3.0, 7.0, 14.0, 30.0)
    # The experiment (--id-embedding): epochs tried at the two towers' chosen temperature.
    id_embedding: bool = False
    id_epochs: tuple[int, ...] = (4, 6, 10)

    @classmethod
    def quick(cls, id_embedding: bool = False) -> Grids:
        return cls(
            (None, 30), (10,), ("cosine",), (5,), (0.8,), (0.2,), (2, 4), (2,), (0.07,),
            (None, 30.0), (4.0,), (1800.0,), (0.0, 0.1), (14.0,), id_embedding, (2,),
        )  # fmt: skip


@dataclass(frozen=True)
class Fit:
    """What a method may learn from: the log before ``cut`` (and the item texts, which exist
    before any event: a listing is published before it is viewed)."""

    log: EventLog
    text: np.ndarray  # [items, 384] MiniLM vectors
    cut: int
    data_version: str
    seed: int

    @property
    def sequences(self) -> list[np.ndarray]:
        return sequences_before(self.log, self.cut)

    def examples(self, config: TrainConfig) -> tuple[np.ndarray, ...]:
        """The towers' training examples before the cut, and their recency weights (or None)."""
        rows, mask, targets = next_item_examples(self.sequences, config.max_history)
        target_ts = target_seconds([ts[ts < self.cut] for _, ts in self.log.per_user()])
        return rows, mask, targets, recency_weights(target_ts, config.half_life_days)


@dataclass(frozen=True)
class TwoTower:
    """The served towers' numpy forward (the ONNX graphs compute the same functions)."""

    weights: TowerWeights
    text: np.ndarray

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        items = item_head(self.weights, self.text)
        rows, mask = histories(list(history), self.weights.max_history)
        users = user_tower(self.weights, items[rows] * mask[..., None], mask)
        return users @ items.T


@dataclass(frozen=True)
class WithPrior:
    """What the app serves: the towers' scores, plus, for a case whose user was away longer
    than the session gap, the prior's weight times each item's prior. The prior is the app's
    own function of the popular pool's views (the pool: the ``pool`` most viewed items in the
    window before the cut; 0 for every other item)."""

    towers: TwoTower
    priors: np.ndarray  # [items]
    prior: PopularityPrior

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        if at is None:
            raise ValueError("the popularity prior needs each case's second (at)")
        scores = self.towers.scores(history, history_ts)
        away = np.asarray(at) - np.array([ts[-1] for ts in history_ts])
        return scores + self.prior.weights_after(away)[:, None] * self.priors[None, :]


def pool_priors(counts: np.ndarray, pool: int) -> np.ndarray:
    """Per item, its prior as the app computes it: the ``pool`` most viewed (store order: most
    views first) get ``prior.prior`` of their views, every other item 0."""
    top = np.argsort(-counts, kind="stable")[:pool]
    top = top[counts[top] > 0]
    out = np.zeros(len(counts), np.float64)
    out[top] = prior(counts[top])
    return out


def fit_with_prior(fit: Fit, towers: TwoTower, params: dict[str, Any]) -> WithPrior:
    counts = event_counts(fit.log, fit.cut, params["window_days"])
    priors = pool_priors(counts, AppSettings().popular_pool)
    return WithPrior(towers, priors, PopularityPrior(params["weight"], params["session_gap_s"]))


@dataclass(frozen=True)
class WithFresh:
    """What the app serves: ``ranking`` (the towers and the prior) plus the fresh boost for
    every listing no older than the boost's ``fresh_s`` at the case's second, the app's own
    rule (:class:`nrtrec.recommender_app.ranking.FreshBoost`)."""

    ranking: WithPrior
    listed_at: np.ndarray  # [items] seconds
    fresh: FreshBoost

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
        if at is None:
            raise ValueError("the fresh boost needs each case's second (at)")
        scores = self.ranking.scores(history, history_ts, at)
        age = np.asarray(at, np.float64)[:, None] - self.listed_at[None, :]
        return scores + self.fresh.boosts(age)


def listed_at(log: EventLog, cut: int) -> np.ndarray:
    """Per item, when it was listed as far as the log before ``cut`` tells: its first event
    (a listing is published before it is viewed), or the cut itself for an item nobody viewed
    before it (it is in the catalogue and unseen: a new listing). Nothing after the cut is read."""
    out = np.full(log.n_items, float(cut))
    before = log.ts < cut
    np.minimum.at(out, log.item[before], log.ts[before].astype(np.float64))
    return out


def fit_served(fit: Fit, ranking: WithPrior, params: dict[str, Any]) -> WithFresh:
    fresh = FreshBoost(params["fresh_boost"], params["fresh_days"] * 86_400)
    return WithFresh(ranking, listed_at(fit.log, fit.cut), fresh)


def fit_two_tower(
    fit: Fit, epochs: int, tau: float, half_life_days: float | None = None
) -> TwoTower:
    """``inference/training/train.py`` as ``nrtrec models train`` runs it, on this cut (with
    ``half_life_days``, its recency-weighted examples)."""
    config = TrainConfig(seed=fit.seed, epochs=epochs, tau=tau, half_life_days=half_life_days)
    rows, mask, targets, weights = fit.examples(config)
    towers = train(
        fit.text, rows, mask, targets, config,
        data_version=fit.data_version, command="python -m bench.relevance",
        example_weights=weights,
    )  # fmt: skip
    return TwoTower(towers, fit.text)


def fit_id_towers(
    fit: Fit, epochs: int, tau: float, half_life_days: float | None = None
) -> IdTowers:
    config = TrainConfig(seed=fit.seed, epochs=epochs, tau=tau, half_life_days=half_life_days)
    rows, mask, targets, weights = fit.examples(config)
    seen = event_counts(fit.log, fit.cut) > 0
    return train_with_ids(fit.text, rows, mask, targets, seen, config, weights)


def fit_method(fit: Fit, method: str, params: dict[str, Any]) -> Scorer:
    """One method with its chosen settings (as ``tune`` reports them)."""
    if method == "most_popular":
        return Popularity.fit(fit.log, fit.cut, params["window_days"])
    if method == "last_item_content":
        return LastItemContent(fit.text)
    if method == "co_occurrence":
        counts = co_view_counts(fit.sequences, fit.log.n_items, params["window"])
        return CoOccurrence.fit(
            counts, event_counts(fit.log, fit.cut), params["norm"], params["last_n"],
            params["decay"],
        )  # fmt: skip
    if method == "sasrec":
        config = SeqConfig(seed=fit.seed, dropout=params["dropout"], epochs=params["epochs"])
        return train_sequential(fit.sequences, fit.log.n_items, config)
    if method == "two_tower":
        return fit_two_tower(fit, params["epochs"], params["tau"], params["half_life_days"])
    if method in ("two_tower_prior", "two_tower_served"):
        towers = fit_two_tower(fit, params["epochs"], params["tau"], params["half_life_days"])
        ranking = fit_with_prior(fit, towers, params)
        return ranking if method == "two_tower_prior" else fit_served(fit, ranking, params)
    if method == "two_tower_id":
        return fit_id_towers(fit, params["epochs"], params["tau"], params["half_life_days"])
    raise ValueError(f"unknown method {method!r}")


Trial = dict[str, Any]


def tune(
    fit: Fit,
    cases: Cases,
    tie_position: np.ndarray,
    grids: Grids,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Per method: every setting tried with its validation NDCG@10 (overall and on new items),
    the chosen one, seconds. Every method's choice is its best overall NDCG@10, except the
    served ranking's fresh boost (``choose_fresh``)."""

    def score(scorer: Scorer) -> dict[str, float]:
        return validation_ndcg(scorer, cases, tie_position)

    out: dict[str, dict[str, Any]] = {}

    def record(method: str, trials: list[Trial], started: float, best: Trial | None = None):
        best = best or max(trials, key=lambda t: t["val_ndcg@10"])
        chosen = {k: v for k, v in best.items() if not k.startswith("val_")}
        val = {k: v for k, v in best.items() if k.startswith("val_")}
        out[method] = {
            "trials": trials, "chosen": chosen, "val": val, "seconds": time.perf_counter() - started
        }  # fmt: skip
        say(
            f"  {method}: chose {chosen} (val NDCG@10 {best['val_ndcg@10']:.4f}, new items "
            f"{best['val_new_items_ndcg@10']:.4f})"
        )

    t = time.perf_counter()
    trials = [
        {"window_days": d, **score(Popularity.fit(fit.log, fit.cut, d))}
        for d in grids.popularity_days
    ]
    record("most_popular", trials, t)

    t = time.perf_counter()
    record("last_item_content", [score(LastItemContent(fit.text))], t)

    t = time.perf_counter()
    trials, sequences, popularity = [], fit.sequences, event_counts(fit.log, fit.cut)
    for window in grids.co_window:
        counts = co_view_counts(sequences, fit.log.n_items, window)  # once per window
        for norm, last_n, decay in itertools.product(
            grids.co_norm, grids.co_last_n, grids.co_decay
        ):
            if last_n == 1 and decay != grids.co_decay[0]:
                continue  # one vote: the decay changes nothing
            scorer = CoOccurrence.fit(counts, popularity, norm, last_n, decay)  # type: ignore[arg-type]
            trials.append(
                {"window": window, "norm": norm, "last_n": last_n, "decay": decay,
                 **score(scorer)}
            )  # fmt: skip
    record("co_occurrence", trials, t)

    t = time.perf_counter()
    trials = []
    for dropout in grids.sasrec_dropout:
        config = SeqConfig(seed=fit.seed, dropout=dropout, epochs=max(grids.sasrec_epochs))

        def at_epoch(epoch: int, model: SeqModel, dropout: float = dropout) -> None:
            if epoch in grids.sasrec_epochs:
                trials.append({"dropout": dropout, "epochs": epoch, **score(model)})

        train_sequential(sequences, fit.log.n_items, config, on_epoch=at_epoch)
    record("sasrec", trials, t)

    t = time.perf_counter()
    trials = []
    for tau, epochs in itertools.product(grids.tower_tau, grids.tower_epochs):
        # train() has no per-epoch hook, so each epoch count is its own run (same seed: the
        # same first epochs as the longer runs).
        ndcg = score(fit_two_tower(fit, epochs, tau))
        trials.append({"epochs": epochs, "tau": tau, "half_life_days": None, **ndcg})
        say(f"    two_tower epochs={epochs} tau={tau}: {ndcg['val_ndcg@10']:.4f}")
    # Then the recency weighting, at the best epochs and tau (a full grid would be 4x longer).
    best = max(trials, key=lambda trial: trial["val_ndcg@10"])
    for half_life in grids.tower_half_life:
        if half_life is None:
            continue  # tried above
        ndcg = score(fit_two_tower(fit, best["epochs"], best["tau"], half_life))
        trials.append({**best, "half_life_days": half_life, **ndcg})
        say(f"    two_tower at the best, half_life_days={half_life}: {ndcg['val_ndcg@10']:.4f}")
    record("two_tower", trials, t)

    t, trials = time.perf_counter(), []
    chosen = {**out["two_tower"]["chosen"], **out["most_popular"]["chosen"]}
    towers = fit_two_tower(fit, chosen["epochs"], chosen["tau"], chosen["half_life_days"])
    for weight, gap in itertools.product(grids.prior_weight, grids.session_gap_s):
        params = {**chosen, "weight": weight, "session_gap_s": gap}
        trials.append({**params, **score(fit_with_prior(fit, towers, params))})
    record("two_tower_prior", trials, t)

    t, trials = time.perf_counter(), []
    chosen = out["two_tower_prior"]["chosen"]
    ranking = fit_with_prior(fit, towers, chosen)
    for boost, days in itertools.product(grids.fresh_boost, grids.fresh_days):
        params = {**chosen, "fresh_boost": boost, "fresh_days": days}
        trials.append({**params, **score(fit_served(fit, ranking, params))})
    floor = max(out[m]["val"]["val_new_items_ndcg@10"] for m in BASELINES)
    record("two_tower_served", trials, t, choose_fresh(trials, floor))
    out["two_tower_served"]["new_items_floor"] = floor

    if grids.id_embedding:
        t, trials = time.perf_counter(), []
        tau, half_life = (out["two_tower"]["chosen"][k] for k in ("tau", "half_life_days"))
        for epochs in grids.id_epochs:
            ndcg = score(fit_id_towers(fit, epochs, tau, half_life))
            trials.append({"epochs": epochs, "tau": tau, "half_life_days": half_life, **ndcg})
        record("two_tower_id", trials, t)
    return out


def choose_fresh(trials: list[Trial], floor: float) -> Trial:
    """The served fresh boost: of the settings whose new-items NDCG@10 reaches ``floor`` (the
    best baseline's, at its own chosen settings), the best overall; when none does, the best
    overall. The towers rank cold items well among themselves but far below the items they
    learned from (their vectors carry popularity); overall NDCG alone would always pick no
    boost, which leaves new listings unseen: the least boost that keeps them level is the
    trade an e-commerce catalogue wants, and it is chosen on validation like every knob."""
    enough = [t for t in trials if t["val_new_items_ndcg@10"] >= floor]
    return max(enough or trials, key=lambda t: t["val_ndcg@10"])


def refit(fit: Fit, tuning: dict[str, dict[str, Any]]) -> tuple[dict[str, Scorer], dict]:
    """Every method with its chosen settings on ``fit`` (the cut at ``T``); seconds each."""
    scorers, seconds = {}, {}
    for method in tuning:
        t = time.perf_counter()
        scorers[method] = fit_method(fit, method, tuning[method]["chosen"])
        seconds[method] = time.perf_counter() - t
    return scorers, seconds


def with_cut(fit: Fit, cut: int) -> Fit:
    return replace(fit, cut=cut)
