"""MiniLM sentence vectors of the catalogue: the frozen input of the item head."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from nrtrec.inference.text import Tokenizer, minilm_onnx_path
from nrtrec.inference.towers import mean_pool


def text_vectors(texts: list[str], max_tokens: int, batch: int = 64) -> np.ndarray:
    tokenizer = Tokenizer(max_tokens)
    session = ort.InferenceSession(str(minilm_onnx_path()), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start : start + batch])
        (states,) = session.run(
            ["last_hidden_state"],
            {
                "input_ids": tokens.input_ids,
                "attention_mask": tokens.attention_mask,
                "token_type_ids": np.zeros_like(tokens.input_ids),
            },
        )
        out.append(mean_pool(states, tokens.attention_mask))
    return np.concatenate(out).astype(np.float32)
