"""Triton Python-backend model that runs an ONNX file through onnxruntime.

The wheel of ``nvidia-pytriton`` ships Triton with the Python backend only, so every encoder is
served by this one file, copied as ``<repository>/<model>/<version>/model.py`` next to that
version's ``model.onnx`` (see ``nrtrec.inference.triton_repository.add_onnx_model``).

It runs inside Triton's Python stub process, not in nrtrec: it imports nothing of nrtrec, only
numpy, onnxruntime and Triton's ``triton_python_backend_utils``.

Behaviour:
- Loads ``<model_repository>/<model_version>/model.onnx`` (a version's own file, so versions
  1 and 2 of one model name run side by side with different weights).
- Triton tensor names map to ONNX names through the config parameter ``onnx_names`` (a JSON
  object ``{"triton name": "onnx name"}``); names not in it are the same on both sides.
- With ``max_batch_size > 0`` the requests that Triton's dynamic batcher hands over in one
  ``execute`` call are concatenated along axis 0 into a single ``session.run`` and the outputs
  split back per request. Requests whose non-batch dimensions differ run one by one.
- A failure answers the affected requests with an error instead of crashing the stub.
- Config parameters ``intra_op_num_threads`` / ``inter_op_num_threads`` size onnxruntime's
  thread pools (default 1 each: Triton already runs one model instance per configured count).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config: dict, key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if not path.is_file():
            raise pb_utils.TritonModelException(
                f"{self.model_name} version {args['model_version']}: no ONNX file at {path}"
            )

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "intra_op_num_threads", "1"))
        options.inter_op_num_threads = int(_parameter(config, "inter_op_num_threads", "1"))
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

        onnx_names = json.loads(_parameter(config, "onnx_names", "{}"))
        self.inputs = [(t["name"], onnx_names.get(t["name"], t["name"])) for t in config["input"]]
        self.outputs = [
            (
                t["name"],
                onnx_names.get(t["name"], t["name"]),
                pb_utils.triton_string_to_numpy(t["data_type"]),
            )
            for t in config["output"]
        ]
        session_inputs = {i.name for i in self.session.get_inputs()}
        session_outputs = {o.name for o in self.session.get_outputs()}
        missing = [o for _, o in self.inputs if o not in session_inputs]
        missing += [o for _, o, _ in self.outputs if o not in session_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.model_name} version {args['model_version']}: {path} has no tensor "
                f"named {missing}; its inputs are {sorted(session_inputs)} and outputs "
                f"{sorted(session_outputs)} (map names with the config parameter onnx_names)"
            )
        unfed = session_inputs - {o for _, o in self.inputs}
        if unfed:
            raise pb_utils.TritonModelException(
                f"{self.model_name}: ONNX inputs {sorted(unfed)} are not in the model config"
            )
        self.output_onnx_names = [o for _, o, _ in self.outputs]

    def execute(self, requests: list) -> list:
        try:
            feeds = [self._feed(r) for r in requests]
        except Exception as e:  # a request the backend cannot read: fail them one by one
            return [self._one(r) for r in requests] if len(requests) > 1 else [_error(e)]

        if self.batched and len(requests) > 1 and _stackable(feeds):
            sizes = [next(iter(f.values())).shape[0] for f in feeds]
            batch = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
            try:
                results = self.session.run(self.output_onnx_names, batch)
            except Exception:
                # One bad request must not fail its neighbours: retry them separately.
                return [self._run(f) for f in feeds]
            bounds = np.cumsum(sizes)[:-1]
            per_output = [np.split(r, bounds) for r in results]
            return [
                self._response([parts[i] for parts in per_output]) for i in range(len(requests))
            ]
        return [self._run(f) for f in feeds]

    def finalize(self) -> None:
        self.session = None

    # --- helpers ---------------------------------------------------------------------------

    def _feed(self, request) -> dict[str, np.ndarray]:
        feed = {}
        for triton_name, onnx_name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, triton_name)
            if tensor is None:
                raise ValueError(f"{self.model_name}: request lacks input {triton_name!r}")
            feed[onnx_name] = tensor.as_numpy()
        return feed

    def _one(self, request):
        try:
            return self._run(self._feed(request))
        except Exception as e:
            return _error(e)

    def _run(self, feed: dict[str, np.ndarray]):
        try:
            return self._response(self.session.run(self.output_onnx_names, feed))
        except Exception as e:
            return _error(e)

    def _response(self, arrays: list[np.ndarray]):
        tensors = [
            pb_utils.Tensor(triton_name, np.ascontiguousarray(a, dtype=dtype))
            for (triton_name, _, dtype), a in zip(self.outputs, arrays, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _stackable(feeds: list[dict[str, np.ndarray]]) -> bool:
    first = feeds[0]
    return all(
        f[name].shape[1:] == first[name].shape[1:] and f[name].dtype == first[name].dtype
        for f in feeds[1:]
        for name in first
    )


def _error(e: Exception):
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{type(e).__name__}: {e}")
    )
