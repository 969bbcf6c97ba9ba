"""Training is reproducible and the two towers learn something the baselines do not."""

from __future__ import annotations

import numpy as np
import pytest

from nrtrec.core.datasets import load_movielens
from nrtrec.inference.training.data import histories, next_item_examples, split
from nrtrec.inference.training.evaluate import evaluate, ranking_metrics
from nrtrec.inference.training.text_vectors import text_vectors
from nrtrec.inference.training.train import TrainConfig, fit_towers, train


@pytest.fixture(scope="module")
def data():
    movielens = load_movielens()
    held_out = split(movielens)
    return movielens, held_out, text_vectors(held_out.texts, 64)


def test_split_holds_out_each_users_later_events(data) -> None:
    movielens, held_out, _ = data
    assert len(held_out.train) == len(movielens.by_user) == 943
    row = {item: i for i, item in enumerate(held_out.item_ids)}
    for user_id, train_rows, test_rows in zip(
        sorted(movielens.by_user, key=int), held_out.train, held_out.test, strict=True
    ):
        events = movielens.by_user[user_id]
        assert len(train_rows) + len(test_rows) == len(events) and len(test_rows) >= 1
        last_train_ts = events[len(train_rows) - 1].ts_ms
        assert all(x.ts_ms >= last_train_ts for x in events[len(train_rows) :])
        assert [row[x.item_id] for x in events[: len(train_rows)]] == train_rows.tolist()


def test_histories_are_most_recent_first() -> None:
    rows, mask = histories([np.array([1, 2, 3]), np.array([4])], max_history=2)
    assert rows.tolist() == [[3, 2], [4, 0]]
    assert mask.tolist() == [[1, 1], [1, 0]]


def test_same_seed_same_weights_other_seed_other_weights(data) -> None:
    movielens, held_out, text = data
    users = held_out.train[:60]  # a slice keeps this fast; determinism does not need more
    rows, mask, targets = next_item_examples(users, 20)
    config = TrainConfig(seed=3, epochs=1, batch=256)
    a = train(text, rows, mask, targets, config, data_version=movielens.version, command="t")
    b = train(text, rows, mask, targets, config, data_version=movielens.version, command="t")
    c = train(
        text, rows, mask, targets, TrainConfig(seed=4, epochs=1, batch=256),
        data_version=movielens.version, command="t",
    )  # fmt: skip
    np.testing.assert_array_equal(a.w1, b.w1)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(a.w1, c.w1)
    assert a.run.seed == 3 and a.run.data_version == movielens.version


def test_example_weights_and_the_id_table_change_only_what_they_should(data) -> None:
    _, held_out, text = data
    rows, mask, targets = next_item_examples(held_out.train[:60], 20)
    config = TrainConfig(seed=3, epochs=1, batch=256)
    plain = fit_towers(text, rows, mask, targets, config)
    ones = fit_towers(text, rows, mask, targets, config, example_weights=np.ones(len(targets)))
    np.testing.assert_array_equal(plain.weights.w1, ones.weights.w1)  # weight 1 is no weight
    skewed = np.where(np.arange(len(targets)) % 2 == 0, 1.9, 0.1).astype(np.float32)
    weighted = fit_towers(text, rows, mask, targets, config, example_weights=skewed)
    assert not np.array_equal(plain.weights.w1, weighted.weights.w1)
    seen = np.zeros(len(text), bool)
    seen[np.unique(targets)[:50]] = True
    with_ids = fit_towers(text, rows, mask, targets, config, seen=seen)
    assert plain.ids is None and with_ids.ids is not None
    assert not with_ids.ids[~seen].any()  # an unseen item keeps its text vector alone
    assert (np.abs(with_ids.ids[seen]).sum(axis=1) > 0).all()


def test_ranking_metrics_on_a_known_ranking(data) -> None:
    _, held_out, _ = data
    # Score every user's held-out items highest: recall@50 is 1 wherever they fit in 50.
    scores = np.zeros((len(held_out.train), held_out.n_items))
    for u, rows in enumerate(held_out.test):
        scores[u, rows] = 1.0
    metrics = ranking_metrics(scores, held_out)
    assert metrics["ndcg@10"] == pytest.approx(1.0)
    assert metrics["recall@50"] > 0.9


def test_trained_towers_beat_both_baselines(trained_models, data) -> None:
    _, held_out, text = data
    result = evaluate(trained_models.weights[1], text, held_out)
    ours = result["two_tower"]
    for baseline in ("most_popular", "similar_to_last_viewed"):
        assert ours["recall@10"] > result[baseline]["recall@10"], (baseline, result)
        assert ours["ndcg@10"] > result[baseline]["ndcg@10"], (baseline, result)
