"""Fit the item head and the user tower together, with jax, on next-item prediction.

For every past event with a past of its own, the user tower reads up to ``max_history``
earlier items and must score the actual next item above every other item of the catalogue
(full softmax over 1,682 items, temperature ``tau``). Item vectors come from the item head
over frozen MiniLM text vectors, so gradients reach both towers. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nrtrec.inference.towers import EPS, MASKED, TowerWeights, TrainingRun


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    dim: int = 64
    hidden: int = 256
    max_history: int = 20
    epochs: int = 6
    batch: int = 512
    learning_rate: float = 3e-3
    tau: float = 0.07


def train(
    text: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    data_version: str,
    command: str,
    progress=None,
) -> TowerWeights:
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", False)
    init = TowerWeights.initial(
        np.random.default_rng(config.seed), config.dim, config.hidden, config.max_history
    )
    params = {name: jnp.asarray(getattr(init, name)) for name in TowerWeights.ARRAYS}
    text_j = jnp.asarray(text)

    def normalize(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)

    def loss_fn(p, hist_rows, hist_mask, target):
        items = normalize(jax.nn.relu(text_j @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])
        history = items[hist_rows] * hist_mask[..., None]
        scores = history @ p["query"] + p["position_bias"] + (1.0 - hist_mask) * MASKED
        attention = jax.nn.softmax(scores, axis=1)
        pooled = jnp.einsum("bn,bnd->bd", attention, history)
        users = normalize(pooled + pooled @ p["wu"] + p["bu"])
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
    n = len(targets)
    steps_per_epoch = n // config.batch  # drop the ragged tail: one compiled shape
    losses = []
    for epoch in range(config.epochs):
        order = order_rng.permutation(n)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * config.batch : (b + 1) * config.batch]
            params, state, loss = step(params, state, rows[idx], mask[idx], targets[idx])
            total += float(loss)
            if progress:
                progress(epoch, b, steps_per_epoch)
        losses.append(total / max(steps_per_epoch, 1))

    arrays = {name: np.asarray(params[name], np.float32) for name in TowerWeights.ARRAYS}
    run = TrainingRun(
        seed=config.seed,
        data_version=data_version,
        command=command,
        epochs=config.epochs,
        metrics={f"train_loss_epoch{i + 1}": round(v, 5) for i, v in enumerate(losses)},
    )
    return TowerWeights(**arrays, run=run)
