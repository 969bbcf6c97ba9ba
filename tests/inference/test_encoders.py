"""The encoder interface, on Triton (gRPC) and in-process: same vectors, versions, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from nrtrec.core.access import triton_admin_headers
from nrtrec.core.settings import InferenceSettings, Settings
from nrtrec.inference.client import LocalEncoder
from nrtrec.inference.client.triton import TritonEncoder
from nrtrec.inference.errors import BadEncoderInput, UnknownModelVersion
from nrtrec.inference.lifecycle import ModelLifecycle
from nrtrec.inference.repository import ModelRepository
from nrtrec.inference.text import listing_text
from nrtrec.inference.towers import item_head, mean_pool, user_tower

TEXTS = [
    listing_text("Toy Story", "Animation", {"genres": ["Animation", "Comedy"], "year": 1995}),
    listing_text("GoldenEye", "Action", {"year": 1995}),
    listing_text("Four Rooms", "Thriller"),
    "Heat",
] * 20  # 80 rows: more than one client-side batch


@pytest.fixture(scope="module")
def local(trained_models) -> LocalEncoder:
    encoder = LocalEncoder(InferenceSettings(batch_size=32), trained_models.repository)
    yield encoder
    encoder.close()


@pytest.fixture(scope="module")
def histories(local: LocalEncoder) -> list[np.ndarray]:
    items = local.encode_texts(TEXTS[:4], version=1).vectors
    return [items[:1], items[:3], items[[3, 2, 1, 0]], np.tile(items, (8, 1))]  # 32 > max_history


@pytest.mark.integration
class TestTriton:
    @pytest.fixture(scope="class")
    def triton(self, stack, trained_models, test_settings: Settings) -> TritonEncoder:
        endpoint = stack.triton()
        headers = triton_admin_headers(test_settings.token)
        lifecycle = ModelLifecycle(trained_models.repository, endpoint.grpc_url, headers)
        lifecycle.load(1)
        lifecycle.load(2)
        encoder = TritonEncoder(InferenceSettings(batch_size=32), endpoint.grpc_url)
        yield encoder
        encoder.close()
        lifecycle.close()

    def test_both_versions_are_served_side_by_side(self, triton: TritonEncoder) -> None:
        assert triton.versions() == [1, 2]
        assert triton.resolve(None) == 2

    @pytest.mark.parametrize("version", [1, 2])
    def test_triton_and_in_process_give_the_same_item_vectors(
        self, triton: TritonEncoder, local: LocalEncoder, version: int
    ) -> None:
        remote = triton.encode_texts(TEXTS, version=version)
        here = local.encode_texts(TEXTS, version=version)
        assert remote.model_version == here.model_version == version
        assert remote.vectors.shape == (len(TEXTS), 64)
        np.testing.assert_allclose(remote.vectors, here.vectors, atol=1e-5)

    @pytest.mark.parametrize("version", [1, 2])
    def test_triton_and_in_process_give_the_same_user_vectors(
        self, triton: TritonEncoder, local: LocalEncoder, histories, version: int
    ) -> None:
        remote = triton.encode_users(histories, version=version)
        here = local.encode_users(histories, version=version)
        np.testing.assert_allclose(remote.vectors, here.vectors, atol=1e-5)

    def test_each_version_gives_its_own_vectors(
        self, triton: TritonEncoder, trained_models, histories
    ) -> None:
        v1 = triton.encode_texts(TEXTS[:4], version=1).vectors
        v2 = triton.encode_texts(TEXTS[:4], version=2).vectors
        assert not np.allclose(v1, v2, atol=1e-2)
        # And each is what its own training run's weights compute.
        tokens = triton.tokenizer(TEXTS[:4])
        import onnxruntime as ort

        from nrtrec.inference.text import minilm_onnx_path

        states = ort.InferenceSession(str(minilm_onnx_path())).run(
            None,
            {
                "input_ids": tokens.input_ids,
                "attention_mask": tokens.attention_mask,
                "token_type_ids": np.zeros_like(tokens.input_ids),
            },
        )[0]
        text = mean_pool(states, tokens.attention_mask)
        for version, got in ((1, v1), (2, v2)):
            expected = item_head(trained_models.weights[version], text)
            np.testing.assert_allclose(got, expected, atol=1e-4)
        u1 = triton.encode_users(histories[:2], version=1).vectors
        u2 = triton.encode_users(histories[:2], version=2).vectors
        assert not np.allclose(u1, u2, atol=1e-2)

    def test_unknown_version_is_a_clear_error(self, triton: TritonEncoder) -> None:
        with pytest.raises(UnknownModelVersion, match="version 9 is not available"):
            triton.encode_texts(TEXTS[:1], version=9)

    def test_bad_user_input_is_rejected_before_the_server(
        self, triton: TritonEncoder, histories
    ) -> None:
        with pytest.raises(BadEncoderInput, match="non-empty list of item vectors"):
            triton.encode_users([histories[0], np.zeros((0, 64), np.float32)])
        with pytest.raises(BadEncoderInput, match="dimension 8"):
            triton.encode_users([np.ones((3, 8), np.float32)])
        with pytest.raises(BadEncoderInput, match="finite"):
            triton.encode_users([np.full((2, 64), np.nan, np.float32)])
        with pytest.raises(BadEncoderInput, match="text 1 is empty"):
            triton.encode_texts(["Heat", "  "])

    def test_the_server_itself_rejects_a_wrong_shape_with_a_reason(
        self, stack, trained_models
    ) -> None:
        client = grpcclient.InferenceServerClient(stack.triton().grpc_url)
        bad = grpcclient.InferInput("history", [1, 3, 64], "FP32")  # the tower reads 20 rows
        bad.set_data_from_numpy(np.zeros((1, 3, 64), np.float32))
        mask = grpcclient.InferInput("mask", [1, 3], "FP32")
        mask.set_data_from_numpy(np.ones((1, 3), np.float32))
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="unexpected shape"):
            client.infer("user_encoder", [bad, mask], model_version="1")
        client.close()

    def test_register_load_and_unload_a_version_while_serving(
        self, stack, trained_models, triton: TritonEncoder
    ) -> None:
        headers = triton_admin_headers(stack.settings.token)
        lifecycle = ModelLifecycle(trained_models.repository, stack.triton().grpc_url, headers)
        try:
            version = lifecycle.register(trained_models.weights[1])
            assert version == 3
            assert lifecycle.served() == {1, 2}  # registered is not served
            lifecycle.load(version)
            triton.forget_versions()
            assert triton.versions() == [1, 2, 3]
            np.testing.assert_allclose(
                triton.encode_texts(TEXTS[:2], version=3).vectors,
                triton.encode_texts(TEXTS[:2], version=1).vectors,
                atol=1e-5,
            )  # same weights as version 1
            lifecycle.unload(1)
            triton.forget_versions()
            assert triton.versions() == [2, 3]
            with pytest.raises(UnknownModelVersion):
                triton.encode_texts(TEXTS[:1], version=1)
            lifecycle.load(1)
            lifecycle.unload(3)
            triton.forget_versions()
            assert triton.versions() == [1, 2]
        finally:
            # Later tests share this repository and expect exactly versions 1 and 2.
            if 3 in lifecycle.served():
                lifecycle.unload(3)
            trained_models.repository.remove(3)
            lifecycle.close()
        assert trained_models.repository.versions() == [1, 2]


class TestInProcess:
    def test_versions_come_from_the_repository(self, local: LocalEncoder) -> None:
        assert local.versions()[:2] == [1, 2]

    def test_user_vector_is_the_tower_over_the_most_recent_items(
        self, local: LocalEncoder, trained_models, histories
    ) -> None:
        got = local.encode_users(histories, version=1).vectors
        weights = trained_models.weights[1]
        long = histories[3][: weights.max_history]
        mask = np.ones((1, weights.max_history), np.float32)
        expected = user_tower(weights, long[None], mask)[0]
        np.testing.assert_allclose(got[3], expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    def test_unknown_version(self, local: LocalEncoder) -> None:
        with pytest.raises(UnknownModelVersion, match="not available"):
            local.encode_texts(["Heat"], version=42)

    def test_empty_inputs(self, local: LocalEncoder) -> None:
        with pytest.raises(BadEncoderInput):
            local.encode_texts([])
        with pytest.raises(BadEncoderInput):
            local.encode_users([])

    def test_empty_repository_says_how_to_fill_it(self, tmp_path) -> None:
        encoder = LocalEncoder(InferenceSettings(), ModelRepository(tmp_path))
        with pytest.raises(UnknownModelVersion, match="no encoder version"):
            encoder.encode_texts(["Heat"])
        with pytest.raises(UnknownModelVersion, match="nrtrec models train"):
            ModelRepository(tmp_path).newest()
