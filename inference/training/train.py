"""Fit the item head and the user tower together, with jax, on next-item prediction.

For every past event with a past of its own, the user tower reads up to ``max_history``
earlier items and must score the actual next item above every other item of the catalogue
(full softmax over 1,682 items, temperature ``tau``). Item vectors come from the item head
over frozen MiniLM text vectors, so gradients reach both towers. Deterministic for a seed.

Two options for experiments (``bench.relevance``): per-example weights (e.g. recency: a
catalogue's tastes drift, so recent next-items may say more about tomorrow than old ones), and
an id table (:mod:`.id_tower`: a learned vector per item seen in training, added to the item
head's output). The served pair (:func:`train`) uses weights but no id table: an ONNX item
tower over text cannot look an id up.
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
    # Examples weighted 0.5 ** (age / half_life_days) before the newest one; None: all equal.
    half_life_days: float | None = None


@dataclass(frozen=True)
class Fitted:
    weights: TowerWeights
    ids: np.ndarray | None  # [items, dim]: zero rows for unseen items; None without a table
    losses: list[float]  # mean training loss per epoch


def recency_weights(target_ts: np.ndarray, half_life_days: float | None) -> np.ndarray | None:
    """Per-example weights from the targets' seconds, mean 1 (so the loss keeps its scale)."""
    if half_life_days is None:
        return None
    age_days = (target_ts.max() - target_ts) / 86_400.0
    w = 0.5 ** (age_days / half_life_days)
    return (w / w.mean()).astype(np.float32)


def fit_towers(
    text: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    example_weights: np.ndarray | None = None,
    seen: np.ndarray | None = None,
    progress=None,
) -> Fitted:
    """The training loop. ``seen[item]`` (bool) adds the id table, learned for seen items only;
    ``example_weights`` weights each example's loss."""
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", False)
    init = TowerWeights.initial(
        np.random.default_rng(config.seed), config.dim, config.hidden, config.max_history
    )
    params = {name: jnp.asarray(getattr(init, name)) for name in TowerWeights.ARRAYS}
    if seen is not None:
        params["ids"] = jnp.zeros((len(text), config.dim), jnp.float32)
        seen_j = jnp.asarray(seen, jnp.float32)[:, None]
    text_j = jnp.asarray(text)
    weights_all = np.ones(len(targets), np.float32) if example_weights is None else example_weights

    def normalize(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS)

    def loss_fn(p, hist_rows, hist_mask, target, weight):
        head = jax.nn.relu(text_j @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        if seen is not None:
            head = head + p["ids"] * seen_j  # unseen rows: no id, no gradient
        items = normalize(head)
        history = items[hist_rows] * hist_mask[..., None]
        scores = history @ p["query"] + p["position_bias"] + (1.0 - hist_mask) * MASKED
        attention = jax.nn.softmax(scores, axis=1)
        pooled = jnp.einsum("bn,bnd->bd", attention, history)
        users = normalize(pooled + pooled @ p["wu"] + p["bu"])
        logits = users @ items.T / config.tau
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, target)
        return (losses * weight).mean()

    optimizer = optax.adam(config.learning_rate)
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, hist_rows, hist_mask, target, weight):
        loss, grads = jax.value_and_grad(loss_fn)(p, hist_rows, hist_mask, target, weight)
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
            params, state, loss = step(
                params, state, rows[idx], mask[idx], targets[idx], weights_all[idx]
            )
            total += float(loss)
            if progress:
                progress(epoch, b, steps_per_epoch)
        losses.append(total / max(steps_per_epoch, 1))

    arrays = {name: np.asarray(params[name], np.float32) for name in TowerWeights.ARRAYS}
    ids = None
    if seen is not None:
        ids = np.asarray(params["ids"], np.float32) * np.asarray(seen, np.float32)[:, None]
    return Fitted(TowerWeights(**arrays), ids, losses)


def train(
    text: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray,
    targets: np.ndarray,
    config: TrainConfig,
    *,
    data_version: str,
    command: str,
    example_weights: np.ndarray | None = None,
    progress=None,
) -> TowerWeights:
    """The served pair: both towers, with the run's provenance."""
    fitted = fit_towers(
        text, rows, mask, targets, config, example_weights=example_weights, progress=progress
    )
    run = TrainingRun(
        seed=config.seed,
        data_version=data_version,
        command=command,
        epochs=config.epochs,
        metrics={f"train_loss_epoch{i + 1}": round(v, 5) for i, v in enumerate(fitted.losses)},
    )
    return TowerWeights(**{n: getattr(fitted.weights, n) for n in TowerWeights.ARRAYS}, run=run)
