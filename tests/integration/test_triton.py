"""Triton from the nvidia-pytriton wheel serving our ONNX runner through the Python backend.

A tiny real ONNX model (y = L2-normalise(x @ W)) goes into the test model repository as
versions 1 and 2 with different W; Triton loads both side by side and each version must give
exactly what onnxruntime gives in-process for its own file.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nrtrec.core.access import triton_admin_headers
from nrtrec.core.settings import Settings
from nrtrec.inference.triton_repository import TensorSpec, add_onnx_model
from tests.waiting import poll

pytestmark = pytest.mark.integration

MODEL = "toy_embed"
BATCHED = "toy_embed_batched"  # same files, a long queue delay so requests get batched
DIM_IN, DIM_OUT = 8, 4
INPUTS = [TensorSpec("x", np.float32, [DIM_IN])]
OUTPUTS = [TensorSpec("y", np.float32, [DIM_OUT])]


def weights(version: int) -> np.ndarray:
    return np.random.default_rng(version).standard_normal((DIM_IN, DIM_OUT)).astype(np.float32)


def build_onnx(path: Path, w: np.ndarray) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM_IN])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", DIM_OUT])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("LpNormalization", ["h"], ["y"], axis=-1, p=2),
        ],
        "toy_embed",
        [x],
        [y],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[
        0
    ]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {v: build_onnx(d / f"toy_v{v}.onnx", weights(v)) for v in (1, 2)}


@pytest.fixture(scope="module")
def triton(stack, test_settings: Settings, onnx_files: dict[int, Path]):
    repo = test_settings.triton.model_repository
    for version, path in onnx_files.items():
        add_onnx_model(repo, MODEL, version, path, INPUTS, OUTPUTS, max_batch_size=16)
        add_onnx_model(
            repo, BATCHED, version, path, INPUTS, OUTPUTS, max_batch_size=16,
            max_queue_delay_us=300_000,
        )  # fmt: skip
    return stack.triton()


# Over HTTP only: tritonclient >= 2.50 refuses at import the grpcio that apache-beam (a PyFlink
# dependency) pins below 1.66 in the same environment. Issue 4's client settles the protocol.
@pytest.fixture
def tc():
    """The tritonclient module of the protocol under test."""
    import tritonclient.http as httpclient

    return httpclient


@pytest.fixture
def client(tc, triton):
    url = triton.http_url.removeprefix("http://")
    c = tc.InferenceServerClient(url)
    yield c
    c.close()


@pytest.fixture
def admin(test_settings) -> dict[str, str]:
    """Model control is an admin API: it wants the key derived from the run's token."""
    return triton_admin_headers(test_settings.token, "http")


@pytest.fixture
def loaded(client, admin):
    for name in (MODEL, BATCHED):
        if not client.is_model_ready(name, "1") or not client.is_model_ready(name, "2"):
            client.load_model(name, headers=admin)
    return client


def infer(tc, client, x: np.ndarray, version: str = "", model: str = MODEL) -> np.ndarray:
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(
        model, [inp], model_version=version, outputs=[tc.InferRequestedOutput("y")]
    )
    return result.as_numpy("y")


# --- tests --------------------------------------------------------------------------------


def test_batch_matches_onnxruntime_in_process(tc, loaded, onnx_files):
    x = np.random.default_rng(7).standard_normal((5, DIM_IN)).astype(np.float32)
    y = infer(tc, loaded, x, "1")
    assert y.shape == (5, DIM_OUT) and y.dtype == np.float32
    assert np.allclose(y, reference(onnx_files[1], x), atol=1e-6)
    h = x @ weights(1)
    assert np.allclose(y, h / np.linalg.norm(h, axis=1, keepdims=True), atol=1e-5)


def test_versions_are_served_side_by_side(tc, loaded, onnx_files):
    assert loaded.is_model_ready(MODEL, "1") and loaded.is_model_ready(MODEL, "2")
    x = np.random.default_rng(8).standard_normal((3, DIM_IN)).astype(np.float32)
    y1, y2 = infer(tc, loaded, x, "1"), infer(tc, loaded, x, "2")
    assert np.allclose(y1, reference(onnx_files[1], x), atol=1e-6)
    assert np.allclose(y2, reference(onnx_files[2], x), atol=1e-6)
    assert not np.allclose(y1, y2, atol=1e-3)
    # No version asked for: Triton serves the newest.
    assert np.allclose(infer(tc, loaded, x), y2, atol=1e-6)


def test_concurrent_requests_are_batched_and_split_back(tc, triton, loaded, onnx_files):
    """Several requests of different batch sizes reach one execute(); each gets its own rows."""
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((n, DIM_IN)).astype(np.float32) for n in (1, 3, 2, 4)]
    before = _stats(loaded, BATCHED, "1")
    start = threading.Barrier(len(xs))
    url = triton.http_url.removeprefix("http://")

    def call(x):
        c = tc.InferenceServerClient(url)
        try:
            start.wait()
            return infer(tc, c, x, "1", model=BATCHED)
        finally:
            c.close()

    with ThreadPoolExecutor(len(xs)) as pool:
        ys = list(pool.map(call, xs))
    for x, y in zip(xs, ys, strict=True):
        assert np.allclose(y, reference(onnx_files[1], x), atol=1e-6)
    after = _stats(loaded, BATCHED, "1")
    requests = after["success"] - before["success"]
    executions = after["executions"] - before["executions"]
    assert requests == len(xs)
    assert after["inferences"] - before["inferences"] == sum(len(x) for x in xs)
    assert executions < requests, "the dynamic batcher never merged requests"


def test_wrong_shape_is_rejected_with_a_clear_message(tc, loaded):
    from tritonclient.utils import InferenceServerException

    x = np.zeros((2, DIM_IN + 1), dtype=np.float32)
    with pytest.raises(InferenceServerException) as e:
        infer(tc, loaded, x, "1")
    message = str(e.value)
    assert "unexpected shape for input 'x'" in message
    assert f"Expected [-1,{DIM_IN}], got [2,{DIM_IN + 1}]" in message


def test_model_control_without_the_run_key_is_refused(tc, loaded, admin):
    from tritonclient.utils import InferenceServerException

    for call in (loaded.unload_model, loaded.load_model):
        with pytest.raises(InferenceServerException, match="restricted"):
            call(MODEL)
        with pytest.raises(InferenceServerException, match="restricted"):
            call(MODEL, headers={next(iter(admin)): "not-the-key"})
    assert loaded.is_model_ready(MODEL, "1")  # still served
    # Reads stay open: health, metadata and inference need no key.
    assert loaded.get_model_metadata(MODEL)["versions"]
    x = np.ones((1, DIM_IN), dtype=np.float32)
    assert infer(tc, loaded, x, "1").shape == (1, DIM_OUT)


def test_unload_and_load_again(tc, loaded, admin):
    from tritonclient.utils import InferenceServerException

    x = np.ones((1, DIM_IN), dtype=np.float32)
    loaded.unload_model(MODEL, headers=admin)
    assert _wait(lambda: not loaded.is_model_ready(MODEL, "1"))
    with pytest.raises(InferenceServerException, match=r"unknown model|not at ready state"):
        infer(tc, loaded, x, "1")
    loaded.load_model(MODEL, headers=admin)
    assert loaded.is_model_ready(MODEL, "1") and loaded.is_model_ready(MODEL, "2")
    assert infer(tc, loaded, x, "1").shape == (1, DIM_OUT)


def test_triton_names_map_to_onnx_names(tc, client, admin, test_settings, onnx_files):
    name = "toy_embed_renamed"
    add_onnx_model(
        test_settings.triton.model_repository, name, 1, onnx_files[2],
        [TensorSpec("features", np.float32, [DIM_IN], onnx_name="x")],
        [TensorSpec("embedding", np.float32, [DIM_OUT], onnx_name="y")],
        max_batch_size=8,
    )  # fmt: skip
    client.load_model(name, headers=admin)
    x = np.random.default_rng(10).standard_normal((2, DIM_IN)).astype(np.float32)
    inp = tc.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    y = client.infer(name, [inp]).as_numpy("embedding")
    assert np.allclose(y, reference(onnx_files[2], x), atol=1e-6)
    client.unload_model(name, headers=admin)


def test_a_config_that_does_not_fit_the_onnx_file_fails_to_load(
    client, admin, test_settings, tmp_path
):
    from tritonclient.utils import InferenceServerException

    name = "toy_embed_misnamed"
    path = build_onnx(tmp_path / "misnamed.onnx", weights(1))
    add_onnx_model(
        test_settings.triton.model_repository, name, 1, path,
        [TensorSpec("features", np.float32, [DIM_IN])], OUTPUTS, max_batch_size=8,
    )  # fmt: skip
    with pytest.raises(InferenceServerException) as e:
        client.load_model(name, headers=admin)
    assert "has no tensor named ['features']" in str(e.value)
    assert not client.is_model_ready(name)


def test_a_version_must_keep_the_shared_config(test_settings, onnx_files):
    with pytest.raises(ValueError, match="shares"):
        add_onnx_model(
            test_settings.triton.model_repository, MODEL, 3, onnx_files[1], INPUTS, OUTPUTS,
            max_batch_size=32,
        )  # fmt: skip
    assert not (test_settings.triton.model_repository / MODEL / "3").exists()


# --- helpers ------------------------------------------------------------------------------


def _stats(client, model: str, version: str) -> dict[str, int]:
    try:
        raw = client.get_inference_statistics(model, version, as_json=True)  # gRPC
    except TypeError:
        raw = client.get_inference_statistics(model, version)  # HTTP
    stats = raw["model_stats"][0]
    return {
        "inferences": int(stats.get("inference_count", 0)),
        "executions": int(stats.get("execution_count", 0)),
        "success": int(stats["inference_stats"].get("success", {}).get("count", 0)),
    }


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    return poll(predicate, timeout_s) is None
