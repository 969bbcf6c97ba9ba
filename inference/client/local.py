"""The encoders in this process, through onnxruntime: for jobs and tests without a server."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from nrtrec.core.settings import InferenceSettings
from nrtrec.inference.client.base import Encoder, UserTowerShape
from nrtrec.inference.errors import BadEncoderInput
from nrtrec.inference.repository import ITEM_ENCODER, USER_ENCODER, ModelRepository
from nrtrec.inference.text import Tokens


class LocalEncoder(Encoder):
    def __init__(self, settings: InferenceSettings, repository: ModelRepository):
        super().__init__(settings)
        self.repository = repository
        self._sessions: dict[tuple[str, int], ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def versions(self) -> list[int]:
        return self.repository.versions()

    def _session(self, name: str, version: int) -> ort.InferenceSession:
        key = (name, version)
        with self._lock:
            if key not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.settings.intra_op_num_threads
                options.inter_op_num_threads = 1
                self._sessions[key] = ort.InferenceSession(
                    str(self.repository.onnx_path(name, version)),
                    sess_options=options,
                    providers=_providers(),
                )
            return self._sessions[key]

    def _run_items(self, tokens: Tokens, version: int) -> np.ndarray:
        session = self._session(ITEM_ENCODER, version)
        feed = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
        return session.run(["embedding"], feed)[0]

    def _run_users(self, history: np.ndarray, mask: np.ndarray, version: int) -> np.ndarray:
        session = self._session(USER_ENCODER, version)
        try:
            return session.run(["embedding"], {"history": history, "mask": mask})[0]
        except Exception as e:  # onnxruntime's own shape errors, said in our words
            raise BadEncoderInput(f"user tower rejected the input: {e}") from e

    def _user_shape(self, version: int) -> UserTowerShape:
        shape = self._session(USER_ENCODER, version).get_inputs()[0].shape
        return UserTowerShape(max_history=int(shape[1]), dim=int(shape[2]))

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()


def _providers() -> list[str]:
    # onnxruntime-gpu exposes CUDA when a GPU is there; the CPU provider is always the fallback.
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
