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

from nrtrec.inference.towers import TowerWeights, normalize, user_tower
from nrtrec.inference.training.data import histories
from nrtrec.inference.training.train import TrainConfig, fit_towers


@dataclass(frozen=True)
class IdTowers:
    weights: TowerWeights
    ids: np.ndarray  # [items, dim], zero rows for items unseen in training
    text: np.ndarray  # [items, 384] MiniLM vectors

    def item_vectors(self) -> np.ndarray:
        w = self.weights
        hidden = np.maximum(self.text @ w.w1 + w.b1, 0.0)
        return normalize(hidden @ w.w2 + w.b2 + self.ids)

    def scores(
        self,
        history: Sequence[np.ndarray],
        history_ts: Sequence[np.ndarray],
        at: np.ndarray | None = None,
    ) -> np.ndarray:
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
    example_weights: np.ndarray | None = None,
) -> IdTowers:
    """``train.train`` with the id table; ``seen[item]``: the item has a training event."""
    fitted = fit_towers(
        text, rows, mask, targets, config, example_weights=example_weights, seen=seen
    )
    assert fitted.ids is not None
    return IdTowers(fitted.weights, fitted.ids, text)
