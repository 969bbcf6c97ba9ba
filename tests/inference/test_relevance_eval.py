"""The time split's tie rules and the ranking metrics of ``bench.relevance``, on tiny logs."""

from __future__ import annotations

import numpy as np
import pytest

from nrtrec.inference.training.baselines import CoOccurrence, co_view_counts
from nrtrec.inference.training.metrics import (
    bootstrap_indices,
    case_metrics,
    per_user_means,
    summary,
    target_ranks,
    verdict,
)
from nrtrec.inference.training.sequential import windows
from nrtrec.inference.training.timesplit import (
    EventLog,
    cut_at_quantile,
    last_second_items,
    next_cases,
    rolling_cases,
    sequences_before,
)
from nrtrec.inference.training.train import TrainConfig, recency_weights


def make_log(events: list[tuple[int, int, int]], n_items: int = 10) -> EventLog:
    """(user, item, second) triples, put in the loader's order (time, user, item)."""
    events = sorted(events, key=lambda e: (e[2], e[0], e[1]))
    return EventLog(
        user=np.array([e[0] for e in events], np.int32),
        item=np.array([e[1] for e in events], np.int32),
        ts=np.array([e[2] for e in events], np.int64),
        item_ids=[str(i) for i in range(n_items)],
        texts=[""] * n_items,
        n_users=max(e[0] for e in events) + 1,
    )


# user 0: items 1, 2 at second 10; 3 at 20; then 4 and 5 together at 30 (after the cut), 6 at 40.
# user 1: only after the cut. user 2: item 7 at 25, 7 again at 30 (no target: seen), 8 at 35.
LOG = make_log(
    [
        (0, 1, 10),
        (0, 2, 10),
        (0, 3, 20),
        (0, 5, 30),
        (0, 4, 30),
        (0, 6, 40),
        (1, 2, 30),
        (2, 7, 25),
        (2, 7, 30),
        (2, 8, 35),
    ]
)


def test_events_in_the_cut_second_go_wholly_after_it() -> None:
    cut = 30
    assert sequences_before(LOG, cut)[0].tolist() == [1, 2, 3]
    assert sequences_before(LOG, cut)[1].tolist() == []
    q = cut_at_quantile(LOG, 0.5)
    assert q == 30 and not np.any((LOG.ts < q) & (LOG.ts == 30))


def test_next_targets_are_the_whole_first_second_after_the_cut() -> None:
    cases = next_cases(LOG, 30)
    by_user = {int(u): i for i, u in enumerate(cases.user)}
    assert set(by_user) == {0}  # user 1 has no history; user 2 only re-views item 7 at 30
    c = by_user[0]
    assert cases.history[c].tolist() == [1, 2, 3]
    assert cases.targets[c].tolist() == [4, 5]  # tied in their second: both targets, a set
    assert cases.dropped == {"no_history": 1, "no_targets": 1}


def test_next_events_takes_whole_seconds() -> None:
    cases = next_cases(LOG, 30, n_events=3)
    assert cases.targets[0].tolist() == [4, 5, 6]
    assert next_cases(LOG, 30, n_events=2).targets[0].tolist() == [4, 5]
    assert next_cases(LOG, 30, end=40, n_events=3).targets[0].tolist() == [4, 5]


def test_rolling_histories_end_before_the_targets_second() -> None:
    cases = rolling_cases(LOG, 30)
    triples = zip(cases.user, cases.history, cases.targets, strict=True)
    rows = [(int(u), h.tolist(), t.tolist()) for u, h, t in triples]
    assert rows == [(0, [1, 2, 3], [4, 5]), (0, [1, 2, 3, 4, 5], [6]), (2, [7, 7], [8])]
    for h_ts, u, t in zip(cases.history_ts, cases.user, cases.targets, strict=True):
        target_seconds = LOG.ts[(LOG.user == u) & np.isin(LOG.item, t)]
        assert h_ts.max() < target_seconds.min()


def test_new_targets_are_items_unseen_before_the_cut() -> None:
    cases = rolling_cases(LOG, 30)
    # Items seen before 30: 1, 2, 3, 7. Everything user 0 and 2 get after is new.
    assert [t.tolist() for t in cases.new_targets] == [[4, 5], [6], [8]]
    assert [t.tolist() for t in next_cases(LOG, 25).new_targets] == [[4, 5]]


def test_last_item_is_every_item_of_the_last_second() -> None:
    assert last_second_items(
        np.array([1, 2, 3, 5, 4]), np.array([10, 10, 20, 30, 30])
    ).tolist() == [5, 4]


def test_ranks_mask_history_and_break_ties_by_the_tie_order() -> None:
    scores = np.array([[5.0, 9.0, 1.0, 1.0, 1.0]])
    tie_position = np.array([0, 1, 4, 3, 2])  # among equals, item 4 first, then 3, then 2
    # item 1 (score 9) is history: masked. Item 0 is ahead of everything left.
    ranks = target_ranks(scores, [np.array([1])], [np.array([2, 3, 0])], tie_position)
    assert ranks[0].tolist() == [3, 2, 0]


def test_ndcg_and_recall_of_a_known_ranking() -> None:
    m = case_metrics(
        [np.array([0]), np.array([1]), np.array([0, 10]), np.array([60]), np.array([])]
    )
    assert m["ndcg@10"][0] == pytest.approx(1.0)
    assert m["ndcg@10"][1] == pytest.approx(1 / np.log2(3))
    assert m["ndcg@10"][2] == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert m["recall@10"][:4].tolist() == [1.0, 1.0, 0.5, 0.0]
    assert m["recall@50"][:4].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert np.isnan(m["ndcg@10"][4])


def test_each_user_weighs_the_same() -> None:
    users, means = per_user_means(np.array([1.0, 0.0, 0.0, np.nan]), np.array([0, 1, 1, 2]))
    assert users.tolist() == [0, 1] and means.tolist() == [1.0, 0.0]


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_users() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    s, s_large = (
        summary(small, bootstrap_indices(50, 500, 0)),
        summary(large, bootstrap_indices(5000, 500, 0)),
    )
    assert s["ci95"][0] < s["mean"] < s["ci95"][1]
    assert s_large["ci95"][1] - s_large["ci95"][0] < s["ci95"][1] - s["ci95"][0]
    assert np.array_equal(bootstrap_indices(50, 5, 3), bootstrap_indices(50, 5, 3))


def test_verdict_is_paired_and_says_who_wins() -> None:
    base = np.random.default_rng(2).random(200)
    draws = bootstrap_indices(200, 500, 0)
    lost = verdict({"two_tower": base, "other": base + 0.01}, draws)
    assert lost["best"] == "other" and lost["outcome"] == "two_tower_loses"
    won = verdict({"two_tower": base + 0.01, "other": base}, draws)
    assert won["outcome"] == "two_tower_wins"
    assert verdict({"two_tower": np.array([])}, draws[:, :0])["outcome"] == "no_users_in_slice"
    zeros = verdict({"a": np.zeros(200), "two_tower": np.zeros(200)}, draws)
    assert (
        zeros["best_tied_with"] == ["two_tower"]
        and zeros["outcome"] == "two_tower_no_clear_difference"
    )


def test_co_views_within_a_window_and_recency_votes() -> None:
    counts = co_view_counts([np.array([0, 1, 2]), np.array([2, 0])], 3, window=1)
    assert counts.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    assert co_view_counts([np.array([0, 1, 2])], 3, window=None)[0].tolist() == [0, 1, 1]
    model = CoOccurrence.fit(counts, np.ones(3), "none", last_n=2, decay=0.5)
    # History 0 then 1: item 2 gets 1 (from 1, weight 1) + 0.5 (from 0) votes.
    s = model.scores([np.array([0, 1])], [np.array([5, 6])])
    assert s[0, 2] == pytest.approx(1.5, abs=1e-9)
    tied = model.scores([np.array([0, 1])], [np.array([6, 6])])  # one second: equal weights
    assert tied[0, 2] == pytest.approx(2.0, abs=1e-9)


def test_sequence_windows_cover_every_next_item_step_once() -> None:
    x, y = windows([np.arange(7)], max_len=3, pad=99)
    assert y[y >= 0].tolist() == [4, 5, 6, 1, 2, 3] and (x[y < 0] == 99).all()
    assert x[0].tolist() == [3, 4, 5] and x[1].tolist() == [0, 1, 2]


def test_recency_weights_halve_every_half_life_and_keep_the_mean() -> None:
    day = 86_400
    w = recency_weights(np.array([0, 10 * day, 20 * day]), half_life_days=10.0)
    assert w.mean() == pytest.approx(1.0)
    assert w[2] / w[1] == pytest.approx(2.0) and w[1] / w[0] == pytest.approx(2.0)
    assert recency_weights(np.array([0, day]), None) is None


def test_fit_examples_carry_the_seconds_of_their_targets() -> None:
    # Fit.examples pairs next_item_examples with each target's second: check on LOG at cut 30.
    from bench.relevance.methods import Fit

    fit = Fit(LOG, np.zeros((10, 384), np.float32), cut=30, data_version="t", seed=0)
    config = TrainConfig(max_history=4, half_life_days=1e-6)
    rows, mask, targets, weights = fit.examples(config)
    # Before 30: user 0 has 1, 2 (second 10) and 3 (second 20); user 2 only 7: one event, no
    # example. Examples: 1 -> 2 (target at 10), 1 2 -> 3 (target at 20).
    assert targets.tolist() == [2, 3]
    assert rows[1, :2].tolist() == [2, 1] and mask.sum(axis=1).tolist() == [1, 2]
    # A tiny half-life: the older target weighs almost nothing against the newer.
    assert weights[0] < 1e-6 < weights[1]


def test_verdict_against_named_rivals_only() -> None:
    """The served ranking is judged against the baselines, not against its own variants."""
    base = np.random.default_rng(3).random(200)
    draws = bootstrap_indices(200, 500, 0)
    per_user = {"served": base + 0.01, "variant": base + 0.05, "baseline": base}
    v = verdict(per_user, draws, "served", rivals=["baseline"])
    assert v["best"] == "variant" and v["best_other"] == "baseline"
    assert v["outcome"] == "served_wins"
    assert verdict(per_user, draws, "served")["outcome"] == "served_loses"


def test_cases_carry_their_second() -> None:
    log = make_log([(0, 1, 10), (0, 2, 20), (0, 3, 30), (0, 4, 30)])
    rolling = rolling_cases(log, 20)
    assert rolling.at.tolist() == [20, 30]
    assert next_cases(log, 25).at.tolist() == [30]


def test_the_served_prior_only_for_users_back_after_the_session_gap() -> None:
    """bench.relevance's two_tower_prior: the app's prior of the pool's views, added with the
    prior's weight when the case's second is past the session gap after the history's last."""
    from bench.relevance.methods import WithPrior, pool_priors
    from nrtrec.recommender_app.prior import PopularityPrior

    counts = np.array([0.0, 100.0, 10.0, 50.0])
    priors = pool_priors(counts, pool=2)  # items 1 and 3 only
    assert priors[1] == 1.0 and priors[2] == 0.0 and priors[0] == 0.0
    assert priors[3] == np.log1p(10 * 0.5) / np.log1p(10)

    class Flat:
        def scores(self, history, history_ts, at=None):
            return np.zeros((len(history), 4))

    served = WithPrior(Flat(), priors, PopularityPrior(weight=2.0, session_gap_s=60))  # type: ignore[arg-type]
    scores = served.scores(
        [np.array([0]), np.array([0])], [np.array([100]), np.array([100])], np.array([130, 200])
    )
    assert scores[0].tolist() == [0.0, 0.0, 0.0, 0.0]  # 30 s later: the same session
    assert np.allclose(scores[1], 2.0 * priors)


def test_listed_at_is_the_first_event_before_the_cut_or_the_cut() -> None:
    from bench.relevance.methods import listed_at

    log = make_log([(0, 1, 10), (1, 1, 5), (0, 2, 30), (1, 3, 40)], n_items=4)
    # Item 1 first at 5; item 2 only after the cut (25): unseen, so listed at the cut; item 3's
    # event after the cut is never read.
    assert listed_at(log, 25).tolist() == [25.0, 5.0, 25.0, 25.0]


def test_the_served_fresh_boost_is_the_apps_rule() -> None:
    """bench.relevance's two_tower_served adds the app's FreshBoost to listings no older than
    its window at each case's second; the app reads the same rule off listed_at (ms)."""
    from bench.relevance.methods import WithFresh
    from nrtrec.recommender_app.fresh import FreshBoost

    fresh = FreshBoost(boost=0.5, fresh_s=100)

    class Flat:
        def scores(self, history, history_ts, at=None):
            return np.zeros((len(history), 3))

    served = WithFresh(Flat(), np.array([0.0, 150.0, 200.0]), fresh)  # type: ignore[arg-type]
    scores = served.scores([np.array([0])] * 2, [np.array([1])] * 2, np.array([120, 260]))
    assert scores.tolist() == [[0.0, 0.5, 0.5], [0.0, 0.0, 0.5]]
    now_s = 1_000.0
    assert fresh.boost_of({"listed_at": 900_000}, now_s) == 0.5  # 100 s old: still fresh
    assert fresh.boost_of({"listed_at": 899_999}, now_s) == 0.0
    assert fresh.boost_of({"listed_at": True}, now_s) == 0.0  # not a time
    assert fresh.boost_of({}, now_s) == fresh.boost_of(None, now_s) == 0.0
    assert FreshBoost(0.0, 100).boost_of({"listed_at": 999_000}, now_s) == 0.0


def test_the_fresh_boost_is_the_least_that_reaches_the_baselines_on_new_items() -> None:
    from bench.relevance.methods import choose_fresh

    trials = [
        {"fresh_boost": 0.0, "val_ndcg@10": 0.11, "val_new_items_ndcg@10": 0.000},
        {"fresh_boost": 0.1, "val_ndcg@10": 0.10, "val_new_items_ndcg@10": 0.015},
        {"fresh_boost": 0.2, "val_ndcg@10": 0.06, "val_new_items_ndcg@10": 0.070},
    ]
    assert choose_fresh(trials, floor=0.009)["fresh_boost"] == 0.1
    assert choose_fresh(trials, floor=0.5)["fresh_boost"] == 0.0  # none reaches: best overall
