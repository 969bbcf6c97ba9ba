"""Train, evaluate and register one encoder pair: what ``nrtrec models train`` runs."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nrtrec.core.datasets import load_movielens
from nrtrec.inference.repository import ModelRepository
from nrtrec.inference.towers import TowerWeights
from nrtrec.inference.training.data import next_item_examples, split, target_seconds
from nrtrec.inference.training.evaluate import evaluate
from nrtrec.inference.training.text_vectors import text_vectors
from nrtrec.inference.training.train import TrainConfig, recency_weights, train


@dataclass(frozen=True)
class TrainResult:
    version: int | None
    weights: TowerWeights
    evaluation: dict[str, dict]
    seconds: dict[str, float]


def train_pair(
    config: TrainConfig,
    max_tokens: int,
    repository: ModelRepository | None = None,
    version: int | None = None,
    eval_out: Path | None = None,
    progress=None,
    command: str | None = None,
) -> TrainResult:
    """Train on the past of MovieLens-100k, evaluate on each user's later events, then register
    the pair in ``repository`` (when given) and write the evaluation to ``eval_out``."""
    command = command or " ".join(shlex.quote(a) for a in ["nrtrec", *sys.argv[1:]])
    seconds = {}
    t = time.perf_counter()
    data = load_movielens()
    held_out = split(data)
    text = text_vectors(held_out.texts, max_tokens)
    seconds["text_vectors"] = time.perf_counter() - t

    t = time.perf_counter()
    rows, mask, targets = next_item_examples(held_out.train, config.max_history)
    example_weights = recency_weights(target_seconds(held_out.train_ts), config.half_life_days)
    weights = train(
        text, rows, mask, targets, config,
        data_version=data.version, command=command, example_weights=example_weights,
        progress=progress,
    )  # fmt: skip
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    evaluation = evaluate(weights, text, held_out)
    seconds["evaluate"] = time.perf_counter() - t
    weights = replace(
        weights,
        run=replace(
            weights.run,
            metrics={**weights.run.metrics, **{
                f"two_tower_{k}": round(v, 5) for k, v in evaluation["two_tower"].items()
            }},
        ),
    )  # fmt: skip

    registered = repository.register(weights, version) if repository is not None else None
    if eval_out is not None:
        eval_out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": command,
            "data": data.version,
            "split": "per user, time-ordered: the last 20% of each user's events are held out",
            "config": asdict(config),
            "examples": len(targets),
            "items": held_out.n_items,
            "model_version": registered,
            "machine": {"platform": platform.platform(), "processor": platform.processor()},
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "train_loss": weights.run.metrics,
            "evaluation": evaluation,
        }
        eval_out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return TrainResult(registered, weights, evaluation, seconds)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {value!r}")
