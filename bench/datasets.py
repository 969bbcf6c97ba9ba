"""Data sets that do not flatter an ANN index, shared by ``bench.backends`` and
``bench.query_node``:

- ``uniform_data``: unit vectors drawn uniformly on the sphere, queries from the same
  distribution: nothing for a graph to exploit;
- ``tower_data``: the item tower's own vectors of the whole MovieLens-100k catalogue (1,682
  items; a pair trained here), queried by the user tower's vectors of sampled users' last 20
  views (at most 943 queries: one per user);
- ``tower_like``: any number of items and users drawn from Gaussians with the mean and
  covariance of those two towers' vectors: the towers' geometry at a catalogue's size.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.common import unit

# The MovieLens-100k catalogue and its users: the tower data set's size and most queries.
TOWER_ITEMS = 1_682
TOWER_USERS = 943
# A user's query vector is the user tower over their most recent views, most recent first.
TOWER_HISTORY = 20


def uniform_data(n: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` and ``queries`` unit vectors drawn uniformly on the sphere, as float32."""
    rng = np.random.default_rng(seed)
    return unit(rng.standard_normal((n, dim))), unit(rng.standard_normal((queries, dim)))


def tower_data(epochs: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Item-tower vectors of the MovieLens catalogue; user-tower vectors of sampled users."""
    from nrtrec.core.datasets import load_movielens
    from nrtrec.core.settings import InferenceSettings
    from nrtrec.inference.client import LocalEncoder
    from nrtrec.inference.repository import ModelRepository
    from nrtrec.inference.training.pipeline import train_pair
    from nrtrec.inference.training.train import TrainConfig

    movielens = load_movielens()
    settings = InferenceSettings()
    with tempfile.TemporaryDirectory(prefix="nrtrec-bench-") as tmp:
        repo = ModelRepository(Path(tmp) / "models")
        repo.path.mkdir()
        config = TrainConfig(epochs=epochs)
        train_pair(config, settings.max_tokens, repository=repo, version=1, command="bench")
        with LocalEncoder(settings, repo) as encoder:
            listings = movielens.listings()
            items = encoder.encode_listings(listings, 1).vectors
            row_of = {listing.item_id: row for row, listing in enumerate(listings)}
            users = sorted(movielens.by_user.items())
            picked = np.random.default_rng(seed).permutation(len(users))[:queries]
            histories = []
            for u in picked:
                recent = sorted(users[u][1], key=lambda x: x.ts_ms, reverse=True)[:TOWER_HISTORY]
                histories.append(items[[row_of[x.item_id] for x in recent]])
            queries_ = encoder.encode_users(histories, 1).vectors
    return unit(items), unit(queries_)


def tower_like(n: int, queries: int, epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items and ``queries`` users drawn from Gaussians fitted to the towers' vectors."""
    items, users = tower_data(epochs, 943, seed)
    rng = np.random.default_rng(seed)

    def draw(fit: np.ndarray, count: int) -> np.ndarray:
        return unit(rng.multivariate_normal(fit.mean(0), np.cov(fit.T), count, method="cholesky"))

    return draw(items, n), draw(users, queries)
