"""Write ONNX encoders into a Triton model repository, served by the Python backend.

Layout that :func:`add_onnx_model` produces (one model name, its versions side by side)::

    <repository>/<name>/config.pbtxt        backend "python", dynamic batching, every version
    <repository>/<name>/<version>/model.py  nrtrec's onnxruntime runner (triton_python/model.py)
    <repository>/<name>/<version>/model.onnx

Triton's integer model version is the embedding ``model_version``. All versions of one name
share ``config.pbtxt``, so they must share input and output names, types and dims.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Backend = Literal["python", "onnxruntime"]

#: The Python-backend model that every ONNX version runs under.
PYTHON_MODEL = Path(__file__).resolve().parent / "triton_python" / "model.py"

#: The repository that ships with nrtrec; the default of ``TritonSettings.model_repository``.
SHIPPED_REPOSITORY = Path(__file__).resolve().parent / "model_repository"

_TRITON_TYPES = {
    np.dtype(np.bool_): "TYPE_BOOL",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.uint16): "TYPE_UINT16",
    np.dtype(np.uint32): "TYPE_UINT32",
    np.dtype(np.uint64): "TYPE_UINT64",
    np.dtype(np.int8): "TYPE_INT8",
    np.dtype(np.int16): "TYPE_INT16",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float64): "TYPE_FP64",
    np.dtype(np.object_): "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it.

    ``dims`` leave out the batch dimension when the model batches (``max_batch_size > 0``);
    -1 marks a variable dimension. ``onnx_name`` is the tensor's name inside the ONNX file
    when it differs from the Triton name.
    """

    name: str
    dtype: np.dtype | type | str
    dims: Sequence[int]
    onnx_name: str | None = None

    @property
    def triton_type(self) -> str:
        try:
            return _TRITON_TYPES[np.dtype(self.dtype)]
        except (KeyError, TypeError) as e:
            raise ValueError(
                f"tensor {self.name!r}: no Triton type for dtype {self.dtype!r}"
            ) from e


def model_config(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    *,
    max_queue_delay_us: int = 0,
    instances: int = 1,
    intra_op_num_threads: int = 1,
    parameters: Mapping[str, str] | None = None,
    backend: Backend = "python",
    gpu: bool = False,
    versions: Sequence[int] | None = None,
) -> str:
    """The ``config.pbtxt`` text (protobuf text format, Triton 2.51's ModelConfig).

    ``backend="python"`` runs the version's ONNX file through nrtrec's onnxruntime runner (the
    only backend in the pytriton wheel); ``"onnxruntime"`` is Triton's native backend (NGC
    image, GPU with ``gpu=True``), which reads the same ``<version>/model.onnx``. ``versions``
    limits which version directories are served; None serves all of them.
    """
    if max_batch_size < 0:
        raise ValueError("max_batch_size must be >= 0 (0: the model does not batch)")
    params = {"intra_op_num_threads": str(intra_op_num_threads)}
    renames = {t.name: t.onnx_name for t in (*inputs, *outputs) if t.onnx_name}
    if renames:
        params["onnx_names"] = json.dumps(renames, sort_keys=True)
    params.update(parameters or {})

    if backend == "onnxruntime" and renames:
        raise ValueError("the native onnxruntime backend needs Triton names equal to ONNX names")
    if gpu and backend != "onnxruntime":
        raise ValueError("GPU serving needs backend='onnxruntime' (the Python runner is CPU-only)")
    lines = [
        f"name: {_quote(name)}",
        'backend: "python"' if backend == "python" else 'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        _tensors("input", inputs),
        _tensors("output", outputs),
        version_policy(versions),
        f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]",
    ]
    if max_batch_size > 0:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}")
    for key, value in sorted(params.items()):
        lines.append(
            f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}"
        )
    return "\n".join(lines) + "\n"


def version_policy(versions: Sequence[int] | None) -> str:
    """Which version directories Triton serves; None: all of them, side by side (Triton's own
    default is the latest only)."""
    if versions is None:
        return "version_policy: { all: {} }"
    listed = ", ".join(str(int(v)) for v in sorted(set(versions)))
    return f"version_policy: {{ specific: {{ versions: [ {listed} ] }} }}"


def set_served_versions(
    repository: str | os.PathLike, name: str, versions: Sequence[int] | None
) -> None:
    """Rewrite ``name``'s version policy; Triton applies it on the next ``load_model``."""
    config_file = Path(repository) / name / "config.pbtxt"
    if not config_file.is_file():
        raise FileNotFoundError(f"no model {name!r} in {repository}")
    lines = [
        version_policy(versions) if line.startswith("version_policy:") else line
        for line in config_file.read_text().splitlines()
    ]
    _write_atomic(config_file, "\n".join(lines) + "\n")


def _without_policy(config_text: str) -> str:
    return "\n".join(
        line for line in config_text.splitlines() if not line.startswith("version_policy:")
    )


def add_onnx_model(
    repository: str | os.PathLike,
    name: str,
    version: int,
    onnx_path: str | os.PathLike,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int,
    **config_options,
) -> Path:
    """Add ``onnx_path`` as ``version`` of model ``name`` and return the version directory.

    Writes ``config.pbtxt`` when the model is new; a later version must come with the same
    config (it is shared) or this raises ``ValueError``. An existing version directory is
    replaced. ``config_options`` go to :func:`model_config`. Triton in explicit model-control
    mode picks the files up on the next ``load_model`` of ``name``.
    """
    if int(version) < 1:
        raise ValueError(f"model version must be a positive integer, got {version!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {onnx_path}")
    model_dir = Path(repository) / name
    config_text = model_config(name, inputs, outputs, max_batch_size, **config_options)
    config_file = model_dir / "config.pbtxt"
    if config_file.exists() and _without_policy(config_file.read_text()) != _without_policy(
        config_text
    ):
        raise ValueError(
            f"{config_file} already holds a different config; every version of {name!r} shares "
            "it, so a version with other tensors or batching needs a new model name"
        )
    model_dir.mkdir(parents=True, exist_ok=True)

    # Build the version next to its final place and swap it in, so that a load racing this
    # call never sees a half-copied directory.
    final = model_dir / str(int(version))
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=model_dir))
    try:
        if config_options.get("backend", "python") == "python":
            shutil.copyfile(PYTHON_MODEL, staging / "model.py")
        shutil.copyfile(onnx_path, staging / "model.onnx")
        staging.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not config_file.exists():
        _write_atomic(config_file, config_text)
    return final


def _tensors(kind: str, specs: Sequence[TensorSpec]) -> str:
    if not specs:
        raise ValueError(f"a model needs at least one {kind}")
    entries = [
        f"  {{ name: {_quote(t.name)} data_type: {t.triton_type} "
        f"dims: [ {', '.join(str(int(d)) for d in t.dims)} ] }}"
        for t in specs
    ]
    return f"{kind} [\n" + ",\n".join(entries) + "\n]"


def _quote(value: str) -> str:
    # A JSON string literal (raw UTF-8, escapes like \" and \n) is a protobuf text-format one.
    return json.dumps(value, ensure_ascii=False)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
