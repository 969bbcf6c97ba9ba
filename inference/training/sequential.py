"""A small SASRec-style next-item model in jax/optax: the standard sequential baseline.

Causal self-attention blocks (pre-LayerNorm, one head) over the user's last ``max_len`` items
with learned positions; the output at the last position is scored against the item
embeddings, shared with the input as in SASRec, by a full softmax over the catalogue (1,682
items: cheaper and better than sampled negatives at this size). It learns one embedding per
item id, so an item with no training event keeps its random start: it cannot recommend cold
items, which is what the text-based towers are for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SeqConfig:
    seed: int = 0
    dim: int = 64
    layers: int = 2
    max_len: int = 50
    dropout: float = 0.2
    learning_rate: float = 3e-3
    batch: int = 128
    epochs: int = 20


def windows(
    sequences: Sequence[np.ndarray], max_len: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), both [windows, max_len]: each sequence cut from its end into pieces of
    ``max_len`` next-item steps (the latest piece has the fullest context), left-padded with
    ``pad``; a target of -1 is no target."""
    inputs, targets = [], []
    for seq in sequences:
        for end in range(len(seq), 1, -max_len):
            piece = seq[max(0, end - max_len - 1) : end]
            x = np.full(max_len, pad, np.int32)
            y = np.full(max_len, -1, np.int32)
            x[max_len - len(piece) + 1 :] = piece[:-1]
            y[max_len - len(piece) + 1 :] = piece[1:]
            inputs.append(x)
            targets.append(y)
    return np.stack(inputs), np.stack(targets)


def _init(rng: np.random.Generator, n_items: int, config: SeqConfig) -> dict[str, Any]:
    d = config.dim

    def dense(n_in: int, n_out: int) -> np.ndarray:
        return (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)

    blocks = [
        {
            **{name: np.ones(d, np.float32) for name in ("ln1", "ln2")},
            **{name: dense(d, d) for name in ("wq", "wk", "wv", "wo", "w1", "w2")},
            **{name: np.zeros(d, np.float32) for name in ("b1", "b2")},
        }
        for _ in range(config.layers)
    ]
    return {
        "item": (0.02 * rng.standard_normal((n_items + 1, d))).astype(np.float32),
        "pos": (0.02 * rng.standard_normal((config.max_len, d))).astype(np.float32),
        "blocks": blocks,
        "ln_f": np.ones(d, np.float32),
    }


def _forward(p, inputs, pad: int, config: SeqConfig, key=None):
    """[batch, max_len] item ids -> [batch, max_len, dim] states (dropout when ``key``)."""
    import jax
    import jax.numpy as jnp

    def layer_norm(x, gain):
        mu = x.mean(-1, keepdims=True)
        return gain * (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)

    def dropout(x, k):
        if key is None or config.dropout == 0:
            return x
        keep = jax.random.bernoulli(k, 1.0 - config.dropout, x.shape)
        return jnp.where(keep, x / (1.0 - config.dropout), 0.0)

    n_keys = 2 * config.layers + 1
    keys = list(jax.random.split(key, n_keys)) if key is not None else [None] * n_keys
    real = (inputs != pad)[..., None]
    x = (p["item"][inputs] * np.sqrt(config.dim) + p["pos"]) * real
    x = dropout(x, keys[0])
    n = inputs.shape[1]
    # A position sees itself and earlier real items: never the future, never padding (itself
    # always, so no row of the softmax is empty).
    allowed = jnp.tril(jnp.ones((n, n), bool))[None] & (
        (inputs != pad)[:, None, :] | jnp.eye(n, dtype=bool)[None]
    )
    for i, b in enumerate(p["blocks"]):
        h = layer_norm(x, b["ln1"])
        q, k, v = h @ b["wq"], h @ b["wk"], h @ b["wv"]
        att = jnp.where(allowed, q @ k.transpose(0, 2, 1) / np.sqrt(config.dim), -1e9)
        x = x + dropout(jax.nn.softmax(att, axis=-1) @ v @ b["wo"], keys[2 * i + 1])
        h = layer_norm(x, b["ln2"])
        ff = jax.nn.gelu(h @ b["w1"] + b["b1"]) @ b["w2"] + b["b2"]
        x = (x + dropout(ff, keys[2 * i + 2])) * real
    return layer_norm(x, p["ln_f"])


@dataclass(frozen=True)
class SeqModel:
    params: dict[str, Any]
    n_items: int
    config: SeqConfig

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
        batch: int = 256,
    ) -> np.ndarray:
        import jax

        cfg, pad = self.config, self.n_items
        forward = _jitted_last_state(cfg, pad)
        out = np.empty((len(history), self.n_items), np.float32)
        for start in range(0, len(history), batch):
            chunk = history[start : start + batch]
            x = np.full((batch, cfg.max_len), pad, np.int32)  # one shape: one compilation
            for i, rows in enumerate(chunk):
                recent = rows[-cfg.max_len :]
                x[i, cfg.max_len - len(recent) :] = recent
            last = np.asarray(jax.device_get(forward(self.params, x)))[: len(chunk)]
            out[start : start + len(chunk)] = last @ np.asarray(self.params["item"][:pad]).T
        return out


_JITTED: dict[tuple[SeqConfig, int], Callable] = {}


def _jitted_last_state(config: SeqConfig, pad: int) -> Callable:
    import jax

    if (config, pad) not in _JITTED:
        _JITTED[(config, pad)] = jax.jit(lambda p, x: _forward(p, x, pad, config)[:, -1])
    return _JITTED[(config, pad)]


def train_sequential(
    sequences: Sequence[np.ndarray],
    n_items: int,
    config: SeqConfig,
    on_epoch: Callable[[int, SeqModel], None] | None = None,
) -> SeqModel:
    """Fit on every next-item step of ``sequences`` (item rows in time order); ``on_epoch``
    sees the model after each epoch (1-based), so validation can pick the epoch count in one
    run. Deterministic for a seed."""
    import jax
    import jax.numpy as jnp
    import optax

    pad = n_items
    inputs, targets = windows(sequences, config.max_len, pad)
    params = jax.tree_util.tree_map(
        jnp.asarray, _init(np.random.default_rng(config.seed), n_items, config)
    )

    def loss_fn(p, x, y, key):
        states = _forward(p, x, pad, config, key)
        logits = states @ p["item"][:pad].T
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0))
        real = (y >= 0).astype(jnp.float32)
        return (ce * real).sum() / jnp.maximum(real.sum(), 1.0)

    optimizer = optax.adam(config.learning_rate)
    state = optimizer.init(params)

    @jax.jit
    def step(p, s, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y, key)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    order_rng = np.random.default_rng(config.seed)
    key = jax.random.PRNGKey(config.seed)
    steps = max(len(inputs) // config.batch, 1)  # drop the ragged tail: one compiled shape
    model = SeqModel(params, n_items, config)
    for epoch in range(1, config.epochs + 1):
        order = order_rng.permutation(len(inputs))
        for b in range(steps):
            idx = order[b * config.batch : (b + 1) * config.batch]
            key, sub = jax.random.split(key)
            params, state, _ = step(params, state, inputs[idx], targets[idx], sub)
        model = SeqModel(params, n_items, config)
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model
