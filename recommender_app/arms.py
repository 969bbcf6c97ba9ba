"""Experiment arms: which arm of ``settings.experiment`` a user is in.

The draw is a stable hash of (experiment name, user id) — BLAKE2b, not Python's ``hash()``,
which is salted per process — mapped onto [0, 1) and cut by the arms' weights. So a user sees
the same arm on every request, from every app replica and after restarts, and a new experiment
name is a new, independent draw. No experiment: every user is in the ``default`` arm, which is
the app's behaviour without experiments.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from itertools import accumulate

from nrtrec.core.settings import ExperimentSettings
from nrtrec.recommender_app.models import DEFAULT_ARM


@dataclass(frozen=True)
class Arm:
    name: str
    # The version tried first; None: newest first, as without an experiment.
    model_version: int | None = None
    # The control: the non-personalized (popular) list, whatever the user's vectors.
    control: bool = False


DEFAULT = Arm(DEFAULT_ARM)


def draw(experiment: str, user_id: str) -> float:
    """The user's point in [0, 1) for ``experiment``: 64 bits of BLAKE2b over both names (a NUL
    between them, which neither a name nor an id may hold, so no two pairs collide)."""
    digest = hashlib.blake2b(f"{experiment}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Arms:
    def __init__(self, experiment: ExperimentSettings):
        self.experiment = experiment.name
        self._arms = [
            Arm(a.name, a.model_version, control=a.model_version is None) for a in experiment.arms
        ]
        total = sum(a.weight for a in experiment.arms)
        # Upper bounds of each arm's share of [0, 1); the last is 1 whatever the rounding.
        self._bounds = [w / total for w in accumulate(a.weight for a in experiment.arms)]
        if self._bounds:
            self._bounds[-1] = 1.0

    def assign(self, user_id: str) -> Arm:
        if self.experiment is None:
            return DEFAULT
        index = bisect.bisect_right(self._bounds, draw(self.experiment, user_id))
        return self._arms[min(index, len(self._arms) - 1)]
