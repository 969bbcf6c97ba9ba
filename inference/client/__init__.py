"""Encoder clients: :class:`TritonEncoder` (gRPC) and :class:`LocalEncoder` (onnxruntime)."""

from __future__ import annotations

from nrtrec.inference.client.base import Embeddings, Encoder, UserTowerShape, pad_histories
from nrtrec.inference.client.local import LocalEncoder
from nrtrec.settings import Settings

__all__ = [
    "Embeddings",
    "Encoder",
    "LocalEncoder",
    "UserTowerShape",
    "open_encoder",
    "pad_histories",
]


def open_encoder(settings: Settings) -> Encoder:
    """The encoder that ``settings.inference.backend`` names."""
    from nrtrec.inference.repository import ModelRepository

    if settings.inference.backend == "local":
        return LocalEncoder(settings.inference, ModelRepository(model_repository(settings)))
    from nrtrec.inference.client.triton import TritonEncoder

    return TritonEncoder(settings.inference, settings.triton.grpc_url)


def model_repository(settings: Settings):
    """Where encoder versions live: inference.repository, else Triton's repository."""
    from nrtrec.inference.triton_repository import SHIPPED_REPOSITORY

    return settings.inference.repository or settings.triton.model_repository or SHIPPED_REPOSITORY
