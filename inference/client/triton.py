"""The encoders on Triton, over gRPC (tritonclient), with client-side batching and retries.

A call's rows are cut into requests of ``batch_size`` rows, sent together (async gRPC) so that
Triton's dynamic batcher and model instances can work on them at once. A request that fails
for a transient reason (server unavailable, deadline) is retried with backoff; one that the
server rejects (bad shape, unknown version) fails at once with the server's reason.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tritonclient.utils import InferenceServerException

from nrtrec.core.settings import InferenceSettings
from nrtrec.inference.client.base import Encoder, UserTowerShape
from nrtrec.inference.errors import (
    BadEncoderInput,
    EncoderUnavailable,
    InferenceError,
    UnknownModelVersion,
)
from nrtrec.inference.repository import ITEM_ENCODER, USER_ENCODER
from nrtrec.inference.text import Tokens

_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED")
# How long the served-version list is cached (public: a rollout waits it out after a load).
VERSIONS_TTL_S = 1.0


class TritonEncoder(Encoder):
    def __init__(self, settings: InferenceSettings, url: str):
        super().__init__(settings)
        self.url = url
        self.client = grpcclient.InferenceServerClient(url=url)
        self._versions: tuple[float, list[int]] | None = None
        self._shapes: dict[int, UserTowerShape] = {}
        self._lock = threading.Lock()
        self._call = retry(
            retry=retry_if_exception_type(EncoderUnavailable),
            stop=stop_after_attempt(settings.retries + 1),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        )(self._infer_all)

    # --- versions ----------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Versions whose item and user encoders are both READY on the server."""
        with self._lock:
            if self._versions and time.monotonic() - self._versions[0] < VERSIONS_TTL_S:
                return self._versions[1]
        try:
            versions = sorted(ready_versions(self.client))
        except InferenceServerException as e:
            raise _translate(e, "listing models") from e
        with self._lock:
            self._versions = (time.monotonic(), versions)
        return versions

    def forget_versions(self) -> None:
        """Drop the cached version list (after a load or unload)."""
        with self._lock:
            self._versions = None

    def _user_shape(self, version: int) -> UserTowerShape:
        if version not in self._shapes:
            try:
                meta = self.client.get_model_metadata(USER_ENCODER, str(version), as_json=True)
            except InferenceServerException as e:
                raise _translate(e, f"{USER_ENCODER} version {version}") from e
            history = next(t for t in meta["inputs"] if t["name"] == "history")
            _, n, d = (int(x) for x in history["shape"])
            self._shapes[version] = UserTowerShape(max_history=n, dim=d)
        return self._shapes[version]

    # --- inference ---------------------------------------------------------------------------

    def _run_items(self, tokens: Tokens, version: int) -> np.ndarray:
        inputs = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
        return self._call(ITEM_ENCODER, version, inputs)

    def _run_users(self, history: np.ndarray, mask: np.ndarray, version: int) -> np.ndarray:
        return self._call(USER_ENCODER, version, {"history": history, "mask": mask})

    def _infer_all(self, name: str, version: int, arrays: dict[str, np.ndarray]) -> np.ndarray:
        rows = next(iter(arrays.values())).shape[0]
        step = self.settings.batch_size
        starts = list(range(0, rows, step))
        done: queue.Queue = queue.Queue()
        for i, start in enumerate(starts):
            inputs = []
            for tensor_name, array in arrays.items():
                part = np.ascontiguousarray(array[start : start + step])
                tensor = grpcclient.InferInput(tensor_name, list(part.shape), _dtype(part))
                tensor.set_data_from_numpy(part)
                inputs.append(tensor)
            self.client.async_infer(
                name,
                inputs,
                callback=lambda result, error, i=i: done.put((i, result, error)),
                model_version=str(version),
                outputs=[grpcclient.InferRequestedOutput("embedding")],
                client_timeout=self.settings.timeout_s,
            )
        parts: list[np.ndarray | None] = [None] * len(starts)
        failure = None
        for _ in starts:
            try:
                i, result, error = done.get(timeout=self.settings.timeout_s + 1.0)
            except queue.Empty:
                raise EncoderUnavailable(
                    f"{name} version {version} on {self.url}: no answer within "
                    f"{self.settings.timeout_s} s"
                ) from None
            if error is not None:
                failure = failure or error
            else:
                parts[i] = result.as_numpy("embedding")
        if failure is not None:
            raise _translate(failure, f"{name} version {version}")
        return np.concatenate(parts)

    def close(self) -> None:
        self.client.close()


def ready_versions(client: grpcclient.InferenceServerClient) -> set[int]:
    """Versions whose item and user encoders are both served (READY).

    Read from each model's metadata (its ``versions``: those available), an open API: the
    repository index is an admin one, behind the run's key (``core.access``).
    """
    served = []
    for name in (ITEM_ENCODER, USER_ENCODER):
        try:
            metadata = client.get_model_metadata(name, as_json=True)
        except InferenceServerException as e:
            if "unknown model" in (e.message() or "").lower() or "not found" in str(e).lower():
                return set()  # not loaded at all
            raise
        served.append({int(v) for v in metadata.get("versions", [])})
    return served[0] & served[1]


def _dtype(array: np.ndarray) -> str:
    return {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[array.dtype]


def _translate(error: InferenceServerException, what: str) -> InferenceError:
    status = str(error.status() or "")
    message = error.message() or str(error)
    if any(code in status for code in _TRANSIENT) or "failed to connect" in message.lower():
        return EncoderUnavailable(f"Triton: {what}: {message}")
    lowered = message.lower()
    if "unknown model" in lowered or "is not found" in lowered or "not ready" in lowered:
        return UnknownModelVersion(f"Triton: {what}: {message}")
    if "INVALID_ARG" in status or "unexpected shape" in lowered or "expected" in lowered:
        return BadEncoderInput(f"Triton: {what}: {message}")
    return InferenceError(f"Triton: {what}: {message}")
