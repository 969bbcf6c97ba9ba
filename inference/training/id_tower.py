"""An experiment, not served: the two towers plus a learned id vector per item seen in training.

Text alone makes items with similar descriptions near neighbours; an id vector, added to the
item head's output before the norm, lets the model learn what the text does not say (who
watches the film). An item with no training event keeps a zero id vector, so its vector is
the text tower's: the cold-start path is unchanged. Same examples, loss, optimiser and seed
as :mod:`.train` (``bench.relevance --id-embedding`` reports it as its own method).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nrtrec.inference.towers import EPS, MASKED, TowerWeights, normalize, user_tower
from nrtrec.inference.training.data import histories
from nrtrec.inference.training.train import TrainConfig


@dataclass(frozen=True)
class IdTowers:
    weights: TowerWeights
    ids: np.ndarray  # [items, dim], zero rows for items unseen in training
    text: np.ndarray  # [items, 384] MiniLM vectors

    def item_vectors(self) -> np.ndarray:
        w = self.weights
        hidden = np.maximum(self.text @ w.w1 + w.b1, 0.0)
        return normalize(hidden @ w.w2 + w.b2 + self.ids)

    def scores(self, history: Sequence[np.ndarray], history_ts: Sequence[np.ndarray]) -> np.ndarray:
        items = self.item_vectors()
        rows, mask = histories(list(history), self.weights.max_history)
        users = user_tower(self.weights, items[rows] * mask[..., None], mask)
        return users @ items.T


def train_with_ids(
    text: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray,
    targets: np.ndarray,
    seen: np.ndarray,
    config: TrainConfig,
) -> IdTowers:
    """``train.train`` with the id table; ``seen[item]``: the item has a training event."""
    import jax
    import jax.numpy as jnp
    import optax

    init = TowerWeights.initial(
        np.random.default_rng(config.seed), config.dim, config.hidden, config.max_history
    )
    params = {name: jnp.asarray(getattr(init, name)) for name in TowerWeights.ARRAYS}
    params["ids"] = jnp.zeros((len(text), config.dim), jnp.float32)
    text_j, seen_j = jnp.asarray(text), jnp.asarray(seen, jnp.float32)[:, None]

    def normalize_j(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)

    def loss_fn(p, hist_rows, hist_mask, target):
        head = jax.nn.relu(text_j @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        items = normalize_j(head + p["ids"] * seen_j)  # unseen rows: no id, no gradient
        history = items[hist_rows] * hist_mask[..., None]
        scores = history @ p["query"] + p["position_bias"] + (1.0 - hist_mask) * MASKED
        pooled = jnp.einsum("bn,bnd->bd", jax.nn.softmax(scores, axis=1), history)
        users = normalize_j(pooled + pooled @ p["wu"] + p["bu"])
        logits = users @ items.T / config.tau
        return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()

    optimizer = optax.adam(config.learning_rate)
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, hist_rows, hist_mask, target):
        loss, grads = jax.value_and_grad(loss_fn)(p, hist_rows, hist_mask, target)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    order_rng = np.random.default_rng(config.seed)
    steps_per_epoch = len(targets) // config.batch
    for _ in range(config.epochs):
        order = order_rng.permutation(len(targets))
        for b in range(steps_per_epoch):
            idx = order[b * config.batch : (b + 1) * config.batch]
            params, state, _ = step(params, state, rows[idx], mask[idx], targets[idx])
    arrays = {name: np.asarray(params[name], np.float32) for name in TowerWeights.ARRAYS}
    ids = np.asarray(params["ids"], np.float32) * np.asarray(seen, np.float32)[:, None]
    return IdTowers(TowerWeights(**arrays), ids, text)
