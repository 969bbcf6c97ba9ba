"""The learned parts of the two towers: their weights, and a numpy reference of each forward.

- Item tower: MiniLM sentence vector (mean-pooled, L2-normalised, 384-d) -> two-layer MLP ->
  L2-normalised ``dim``-d item vector.
- User tower: the user's recent item vectors, most recent first, each scored by a learned
  query plus a learned bias per position (recency), softmax-pooled, then a residual linear
  map -> L2-normalised ``dim``-d user vector. Order matters through the position bias, and
  which items matter through the query.

The ONNX graphs in :mod:`nrtrec.inference.export` compute exactly these functions; training
(:mod:`nrtrec.inference.training`) fits the same weights with jax.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

TEXT_DIM = 384  # all-MiniLM-L6-v2
EPS = 1e-12
MASKED = -1e9


@dataclass(frozen=True)
class TrainingRun:
    """Where a pair of towers came from: enough to train it again."""

    seed: int
    data_version: str
    command: str
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TowerWeights:
    # item head
    w1: np.ndarray  # [TEXT_DIM, hidden]
    b1: np.ndarray  # [hidden]
    w2: np.ndarray  # [hidden, dim]
    b2: np.ndarray  # [dim]
    # user tower
    query: np.ndarray  # [dim]
    position_bias: np.ndarray  # [max_history]
    wu: np.ndarray  # [dim, dim]
    bu: np.ndarray  # [dim]
    run: TrainingRun | None = None

    @property
    def dim(self) -> int:
        return int(self.w2.shape[1])

    @property
    def max_history(self) -> int:
        return int(self.position_bias.shape[0])

    ARRAYS = ("w1", "b1", "w2", "b2", "query", "position_bias", "wu", "bu")

    def save(self, path: Path) -> None:
        arrays = {name: np.asarray(getattr(self, name), np.float32) for name in self.ARRAYS}
        meta = json.dumps(asdict(self.run) if self.run else None)
        np.savez(path, meta=np.array(meta), **arrays)

    @classmethod
    def load(cls, path: Path) -> TowerWeights:
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {name: f[name].astype(np.float32) for name in cls.ARRAYS}
        return cls(**arrays, run=TrainingRun(**meta) if meta else None)

    @classmethod
    def initial(cls, rng: np.random.Generator, dim: int, hidden: int, max_history: int):
        """Random item head, and a user tower that starts as recency-weighted mean pooling."""
        return cls(
            w1=(rng.standard_normal((TEXT_DIM, hidden)) / np.sqrt(TEXT_DIM)).astype(np.float32),
            b1=np.zeros(hidden, np.float32),
            w2=(rng.standard_normal((hidden, dim)) / np.sqrt(hidden)).astype(np.float32),
            b2=np.zeros(dim, np.float32),
            query=np.zeros(dim, np.float32),
            position_bias=-0.1 * np.arange(max_history, dtype=np.float32),
            wu=np.zeros((dim, dim), np.float32),
            bu=np.zeros(dim, np.float32),
        )


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def item_head(w: TowerWeights, text_vectors: np.ndarray) -> np.ndarray:
    """[n, TEXT_DIM] normalised MiniLM vectors -> [n, dim] item vectors."""
    hidden = np.maximum(text_vectors @ w.w1 + w.b1, 0.0)
    return normalize(hidden @ w.w2 + w.b2)


def user_tower(w: TowerWeights, history: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n, max_history, dim] item vectors (most recent first) and [n, max_history] 0/1 mask."""
    scores = history @ w.query + w.position_bias + (1.0 - mask) * MASKED
    scores = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    weights = weights / weights.sum(axis=1, keepdims=True)
    pooled = np.einsum("bn,bnd->bd", weights, history)
    return normalize(pooled + pooled @ w.wu + w.bu)


def mean_pool(last_hidden_state: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence-transformers' pooling for all-MiniLM-L6-v2: masked mean, then L2 norm."""
    mask = attention_mask[..., None].astype(np.float32)
    summed = (last_hidden_state * mask).sum(axis=1)
    return normalize(summed / np.maximum(mask.sum(axis=1), EPS))
