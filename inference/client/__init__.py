"""Encoder clients: :class:`TritonEncoder` (gRPC) and :class:`LocalEncoder` (onnxruntime).

What other packages use of the encoders comes from here: ``open_encoder``, the errors its calls
raise, and ``listing_text`` (the text of a listing that the item tower reads)."""

from __future__ import annotations

from nrtrec.core.settings import Settings
from nrtrec.inference.client.base import Embeddings, Encoder, UserTowerShape, pad_histories
from nrtrec.inference.client.local import LocalEncoder
from nrtrec.inference.errors import (
    BadEncoderInput,
    EncoderUnavailable,
    InferenceError,
    UnknownModelVersion,
)
from nrtrec.inference.text import listing_text

__all__ = [
    "BadEncoderInput",
    "Embeddings",
    "Encoder",
    "EncoderUnavailable",
    "InferenceError",
    "LocalEncoder",
    "UnknownModelVersion",
    "UserTowerShape",
    "listing_text",
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
