"""The two towers as ONNX graphs, with the tensor names that Triton's config uses.

``item_encoder``: ``input_ids``, ``attention_mask`` (int64 [batch, length]) -> ``embedding``
(float32 [batch, dim]). MiniLM's own graph, followed by mean pooling and the item head.

``user_encoder``: ``history`` (float32 [batch, max_history, dim], most recent first, zero rows
after the last item) and ``mask`` (float32 [batch, max_history], 1 where a row holds an item)
-> ``embedding`` (float32 [batch, dim]).

Both are plain ONNX (opset 17), so the same files run on the local Triton's Python backend and
on Triton's native onnxruntime backend, and in-process with onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nrtrec.inference.text import minilm_onnx_path
from nrtrec.inference.towers import EPS, MASKED, TowerWeights

OPSET = 17


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _l2_normalize(x: str, out: str, prefix: str) -> list[onnx.NodeProto]:
    """``out = x / max(||x||, EPS)`` along the last axis."""
    return [
        helper.make_node("ReduceL2", [x], [f"{prefix}_norm"], axes=[-1], keepdims=1),
        helper.make_node("Max", [f"{prefix}_norm", "eps"], [f"{prefix}_safe_norm"]),
        helper.make_node("Div", [x, f"{prefix}_safe_norm"], [out]),
    ]


def _shared_constants() -> list[onnx.TensorProto]:
    return [_const("eps", np.float32(EPS)), _const("axis1", np.array([1], np.int64))]


def item_encoder(weights: TowerWeights, minilm: Path | None = None) -> onnx.ModelProto:
    model = onnx.load(str(minilm or minilm_onnx_path()))
    graph = model.graph
    _rename_internal(graph, {"embedding", "token_type_ids", "eps", "axis1", "minus1"})
    # MiniLM wants token_type_ids; single-segment text has them all zero, so derive them here
    # rather than make every client send a tensor of zeros.
    kept = [i for i in graph.input if i.name != "token_type_ids"]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(
        [
            *_shared_constants(),
            _const("zero_i64", np.int64(0)),
            _const("item_w1", weights.w1),
            _const("item_b1", weights.b1),
            _const("item_w2", weights.w2),
            _const("item_b2", weights.b2),
        ]
    )
    hidden_state = graph.output[0].name  # last_hidden_state [batch, length, 384]
    graph.node.insert(0, helper.make_node("Mul", ["input_ids", "zero_i64"], ["token_type_ids"]))
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "minus1"], ["mask_3d"]),
        helper.make_node("Mul", [hidden_state, "mask_3d"], ["masked_states"]),
        helper.make_node("ReduceSum", ["masked_states", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["counts"], keepdims=1),
        helper.make_node("Max", ["counts", "eps"], ["safe_counts"]),
        helper.make_node("Div", ["summed", "safe_counts"], ["mean_pooled"]),
        *_l2_normalize("mean_pooled", "text_vector", "text"),
        helper.make_node("MatMul", ["text_vector", "item_w1"], ["h1"]),
        helper.make_node("Add", ["h1", "item_b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["h1r"]),
        helper.make_node("MatMul", ["h1r", "item_w2"], ["h2"]),
        helper.make_node("Add", ["h2", "item_b2"], ["h2b"]),
        *_l2_normalize("h2b", "embedding", "item"),
    ]
    graph.initializer.append(_const("minus1", np.array([-1], np.int64)))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", weights.dim])
    )
    graph.name = "nrtrec_item_encoder"
    onnx.checker.check_model(model)
    return model


def _rename_internal(graph: onnx.GraphProto, names: set[str]) -> None:
    """Move MiniLM's own tensors out of the way of the names this module adds."""
    clash = names & (
        {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer}
    )
    for node in graph.node:
        node.input[:] = [f"minilm/{x}" if x in clash else x for x in node.input]
        node.output[:] = [f"minilm/{x}" if x in clash else x for x in node.output]
    for init in graph.initializer:
        if init.name in clash:
            init.name = f"minilm/{init.name}"


def user_encoder(weights: TowerWeights) -> onnx.ModelProto:
    n, d = weights.max_history, weights.dim
    initializers = [
        *_shared_constants(),
        _const("user_query", weights.query.reshape(d, 1)),
        _const("position_bias", weights.position_bias),
        _const("user_wu", weights.wu),
        _const("user_bu", weights.bu),
        _const("one", np.float32(1.0)),
        _const("masked", np.float32(MASKED)),
        _const("minus1", np.array([-1], np.int64)),
    ]
    nodes = [
        # scores[b, t] = history[b, t] . query + position_bias[t], -1e9 where mask is 0
        helper.make_node("MatMul", ["history", "user_query"], ["scores_3d"]),
        helper.make_node("Squeeze", ["scores_3d", "minus1"], ["scores_raw"]),
        helper.make_node("Add", ["scores_raw", "position_bias"], ["scores_pos"]),
        helper.make_node("Sub", ["one", "mask"], ["unmask"]),
        helper.make_node("Mul", ["unmask", "masked"], ["mask_penalty"]),
        helper.make_node("Add", ["scores_pos", "mask_penalty"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["attention"], axis=1),
        # pooled[b] = sum_t attention[b, t] * history[b, t]
        helper.make_node("Unsqueeze", ["attention", "axis1"], ["attention_3d"]),
        helper.make_node("MatMul", ["attention_3d", "history"], ["pooled_3d"]),
        helper.make_node("Squeeze", ["pooled_3d", "axis1"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "user_wu"], ["mapped"]),
        helper.make_node("Add", ["mapped", "user_bu"], ["mapped_b"]),
        helper.make_node("Add", ["pooled", "mapped_b"], ["residual"]),
        *_l2_normalize("residual", "embedding", "user"),
    ]
    graph = helper.make_graph(
        nodes,
        "nrtrec_user_encoder",
        inputs=[
            helper.make_tensor_value_info("history", TensorProto.FLOAT, ["batch", n, d]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", n]),
        ],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", d])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
