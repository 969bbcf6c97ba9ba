"""The user tower's encode time per click, against one numpy matmul of the same size.

A click makes the streaming job re-encode one user: one batch-1 call of the exported
``user_encoder`` graph (the history's item vectors already looked up). Timed in process with
onnxruntime on one thread, as a Triton model instance runs it, beside:

- ``numpy_user_tower``: the numpy reference forward of the same weights (``towers.user_tower``);
- ``numpy_matmul_baseline``: one ``[max_history, dim] @ [dim, dim]`` float32 matmul, the size
  of the tower's input times its square weight: the floor of any call from Python.

All three take the same user's history per call, in rotating order (``timed_rounds``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import percentiles, timed_rounds
from nrtrec.inference.towers import TowerWeights, item_head, user_tower
from nrtrec.inference.training.data import histories


def user_tower_latency(
    weights: TowerWeights,
    text: np.ndarray,
    user_histories: list[np.ndarray],
    calls: int,
    warmup: int,
) -> dict[str, Any]:
    import onnxruntime as ort

    from nrtrec.inference.export import user_encoder

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        user_encoder(weights).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    items = item_head(weights, text).astype(np.float32)
    rows, mask = histories(user_histories, weights.max_history)
    history = (items[rows] * mask[..., None]).astype(np.float32)
    n = len(history)
    inputs = [({"history": history[i : i + 1], "mask": mask[i : i + 1]}) for i in range(n)]
    wu = np.ascontiguousarray(weights.wu, np.float32)

    paths = {
        "onnxruntime_user_tower": lambda i: session.run(["embedding"], inputs[i % n])[0],
        "numpy_user_tower": lambda i: user_tower(
            weights, inputs[i % n]["history"], inputs[i % n]["mask"]
        ),
        "numpy_matmul_baseline": lambda i: inputs[i % n]["history"][0] @ wu,
    }
    times, answers = timed_rounds(paths, calls, warmup)
    gap = max(
        float(np.abs(a - b).max())
        for a, b in zip(answers["onnxruntime_user_tower"], answers["numpy_user_tower"], strict=True)
    )
    out: dict[str, Any] = {name: percentiles(ns) for name, ns in times.items()}
    base = out["numpy_matmul_baseline"]["p50_ms"]
    return {
        "what": "one batch-1 user-tower call per click (history vectors given), one thread",
        "shape": {
            "history": [1, weights.max_history, weights.dim],
            "baseline_matmul": [[weights.max_history, weights.dim], [weights.dim, weights.dim]],
        },
        "calls": calls,
        "warmup": warmup,
        "paths": out,
        "p50_over_baseline": {name: v["p50_ms"] / base for name, v in out.items()},
        "max_abs_diff_onnx_vs_numpy": gap,
    }
