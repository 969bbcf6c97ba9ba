"""One encoder interface; Triton and in-process onnxruntime implement it.

Both take the same inputs and return the same vectors (tested): listing texts for the item
tower, and per user the recent item vectors (most recent first) for the user tower. Input
checks live here so that both implementations reject the same things with the same words.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nrtrec.core.settings import InferenceSettings
from nrtrec.inference.errors import BadEncoderInput, UnknownModelVersion
from nrtrec.inference.text import Tokenizer, Tokens, listing_text
from nrtrec.schemas import ListingEvent

#: One user's recent item vectors, most recent first: [n, dim].
History = np.ndarray | Sequence[Sequence[float]]


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dim], L2-normalised
    model_version: int


@dataclass(frozen=True)
class UserTowerShape:
    max_history: int
    dim: int


class Encoder(ABC):
    """Item and user towers of one or more registered model versions."""

    def __init__(self, settings: InferenceSettings):
        self.settings = settings
        self._tokenizer: Tokenizer | None = None

    # --- what implementations provide ------------------------------------------------------

    @abstractmethod
    def versions(self) -> list[int]:
        """Model versions this encoder can run now, oldest first."""

    @abstractmethod
    def _run_items(self, tokens: Tokens, version: int) -> np.ndarray: ...

    @abstractmethod
    def _run_users(self, history: np.ndarray, mask: np.ndarray, version: int) -> np.ndarray: ...

    @abstractmethod
    def _user_shape(self, version: int) -> UserTowerShape: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or sessions."""

    # --- the interface ---------------------------------------------------------------------

    def resolve(self, version: int | None) -> int:
        """``version``, else the configured one, else the newest available."""
        available = self.versions()
        wanted = version if version is not None else self.settings.model_version
        if wanted is None:
            if not available:
                raise UnknownModelVersion("no encoder version is available")
            return available[-1]
        if wanted not in available:
            raise UnknownModelVersion(
                f"model version {wanted} is not available (available: {available or 'none'})"
            )
        return wanted

    def encode_texts(self, texts: Sequence[str], version: int | None = None) -> Embeddings:
        if not texts:
            raise BadEncoderInput("no listing texts to encode")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise BadEncoderInput(f"text {i} is empty")
        version = self.resolve(version)
        out = []
        for start in range(0, len(texts), self.settings.batch_size):
            tokens = self.tokenizer(texts[start : start + self.settings.batch_size])
            out.append(self._run_items(tokens, version))
        return Embeddings(np.concatenate(out).astype(np.float32), version)

    def encode_listings(
        self, listings: Sequence[ListingEvent], version: int | None = None
    ) -> Embeddings:
        texts = [listing_text(x.title, x.category, x.aspects) for x in listings]
        return self.encode_texts(texts, version)

    def encode_users(
        self,
        histories: Sequence[np.ndarray | Sequence[Sequence[float]]],
        version: int | None = None,
    ) -> Embeddings:
        """Each history: the user's recent item vectors, most recent first (at least one)."""
        if not histories:
            raise BadEncoderInput("no user histories to encode")
        version = self.resolve(version)
        shape = self._user_shape(version)
        history, mask = pad_histories(histories, shape)
        out = []
        step = self.settings.batch_size
        for start in range(0, len(history), step):
            out.append(
                self._run_users(history[start : start + step], mask[start : start + step], version)
            )
        return Embeddings(np.concatenate(out).astype(np.float32), version)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.settings.max_tokens)
        return self._tokenizer

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pad_histories(
    histories: Sequence[History], shape: UserTowerShape
) -> tuple[np.ndarray, np.ndarray]:
    """[n, max_history, dim] histories (older items past ``max_history`` dropped) and mask."""
    history = np.zeros((len(histories), shape.max_history, shape.dim), np.float32)
    mask = np.zeros((len(histories), shape.max_history), np.float32)
    for i, h in enumerate(histories):
        a = np.asarray(h, dtype=np.float32)
        if a.ndim != 2 or a.shape[0] == 0:
            raise BadEncoderInput(
                f"history {i}: expected a non-empty list of item vectors, got shape {a.shape}"
            )
        if a.shape[1] != shape.dim:
            raise BadEncoderInput(
                f"history {i}: item vectors have dimension {a.shape[1]}, the user tower of "
                f"this version reads {shape.dim}"
            )
        if not np.isfinite(a).all():
            raise BadEncoderInput(f"history {i}: item vectors must be finite")
        a = a[: shape.max_history]
        history[i, : len(a)] = a
        mask[i, : len(a)] = 1.0
    return history, mask
