"""The encoder pairs on disk: one Triton model repository, one integer version per pair.

A version is registered by exporting both towers of one training run into it::

    item_encoder/<v>/model.onnx   MiniLM + mean pooling + item head
    user_encoder/<v>/model.onnx   user tower
    user_encoder/<v>/training.json  seed, data version, command, metrics of the run

Triton serves the same files (see ``triton_repository``); :class:`LocalEncoder` reads them
in-process. A version is usable only when both towers are present.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from nrtrec.inference import export
from nrtrec.inference.errors import UnknownModelVersion
from nrtrec.inference.towers import TowerWeights
from nrtrec.inference.triton_repository import Backend, TensorSpec, add_onnx_model

ITEM_ENCODER = "item_encoder"
USER_ENCODER = "user_encoder"
ENCODERS = (ITEM_ENCODER, USER_ENCODER)
MAX_BATCH = 256


def item_tensors(dim: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return (
        [TensorSpec("input_ids", "int64", [-1]), TensorSpec("attention_mask", "int64", [-1])],
        [TensorSpec("embedding", "float32", [dim])],
    )


def user_tensors(dim: int, max_history: int) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return (
        [
            TensorSpec("history", "float32", [max_history, dim]),
            TensorSpec("mask", "float32", [max_history]),
        ],
        [TensorSpec("embedding", "float32", [dim])],
    )


class ModelRepository:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def versions(self) -> list[int]:
        """Versions whose item and user towers are both present, oldest first."""
        found = [
            {int(p.parent.name) for p in (self.path / name).glob("*/model.onnx")}
            for name in ENCODERS
        ]
        return sorted(found[0] & found[1])

    def newest(self) -> int:
        versions = self.versions()
        if not versions:
            raise UnknownModelVersion(
                f"no encoder pair in {self.path}; train one with `nrtrec models train`"
            )
        return versions[-1]

    def onnx_path(self, name: str, version: int) -> Path:
        path = self.path / name / str(int(version)) / "model.onnx"
        if not path.is_file() or version not in self.versions():
            raise UnknownModelVersion(
                f"model version {version} is not registered in {self.path} "
                f"(registered: {self.versions() or 'none'})"
            )
        return path

    def remove(self, version: int) -> None:
        """Delete ``version``'s files (unload it from Triton first); the user tower goes first,
        so a reader never sees a half-removed pair as a version."""
        import shutil

        for name in (USER_ENCODER, ITEM_ENCODER):
            shutil.rmtree(self.path / name / str(int(version)), ignore_errors=True)

    def training_run(self, version: int) -> dict | None:
        path = self.path / USER_ENCODER / str(int(version)) / "training.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def register(
        self,
        weights: TowerWeights,
        version: int | None = None,
        *,
        backend: Backend = "python",
        gpu: bool = False,
        minilm: Path | None = None,
    ) -> int:
        """Export both towers as ``version`` (default: one past the newest) and return it.

        The user tower goes in last, so a reader never sees a half-registered pair.
        """
        if version is None:
            versions = self.versions()
            version = versions[-1] + 1 if versions else 1
        options = {"backend": backend, "gpu": gpu, "max_queue_delay_us": 500}
        with tempfile.TemporaryDirectory() as tmp:
            item_file = Path(tmp) / "item.onnx"
            user_file = Path(tmp) / "user.onnx"
            item_file.write_bytes(export.item_encoder(weights, minilm).SerializeToString())
            user_file.write_bytes(export.user_encoder(weights).SerializeToString())
            add_onnx_model(
                self.path, ITEM_ENCODER, version, item_file, *item_tensors(weights.dim),
                max_batch_size=MAX_BATCH, **options,
            )  # fmt: skip
            user_dir = add_onnx_model(
                self.path, USER_ENCODER, version, user_file,
                *user_tensors(weights.dim, weights.max_history),
                max_batch_size=MAX_BATCH, **options,
            )  # fmt: skip
        if weights.run is not None:
            (user_dir / "training.json").write_text(json.dumps(asdict(weights.run), indent=2))
        return version
