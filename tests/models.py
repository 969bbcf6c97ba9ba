"""Real encoder pairs for tests: trained on MovieLens-100k (briefly) and registered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nrtrec.core.datasets import load_movielens
from nrtrec.inference.repository import ModelRepository
from nrtrec.inference.towers import TowerWeights
from nrtrec.inference.training.data import next_item_examples, split
from nrtrec.inference.training.text_vectors import text_vectors
from nrtrec.inference.training.train import TrainConfig, train

#: Two pairs from two training runs, so the tests can tell versions apart by their vectors.
RUNS = {1: TrainConfig(seed=0, epochs=2), 2: TrainConfig(seed=1, epochs=1)}


@dataclass(frozen=True)
class TrainedModels:
    repository: ModelRepository
    weights: dict[int, TowerWeights]


def train_test_models(path: Path, max_tokens: int = 64) -> TrainedModels:
    data = load_movielens()
    held_out = split(data)
    text = text_vectors(held_out.texts, max_tokens)
    repository = ModelRepository(path)
    weights = {}
    for version, config in RUNS.items():
        rows, mask, targets = next_item_examples(held_out.train, config.max_history)
        weights[version] = train(
            text, rows, mask, targets, config, data_version=data.version, command="tests"
        )
        repository.register(weights[version], version)
    return TrainedModels(repository, weights)
