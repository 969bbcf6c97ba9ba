"""The exported ONNX towers compute exactly the numpy reference of each tower."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from nrtrec.inference.export import item_encoder, user_encoder
from nrtrec.inference.text import Tokenizer, listing_text, minilm_onnx_path
from nrtrec.inference.towers import TowerWeights, item_head, mean_pool, normalize, user_tower


@pytest.fixture(scope="module")
def weights() -> TowerWeights:
    rng = np.random.default_rng(7)
    w = TowerWeights.initial(rng, dim=16, hidden=32, max_history=5)
    # Non-trivial user-tower weights, so that a wrong graph cannot agree by accident.
    return TowerWeights(
        **{n: getattr(w, n) for n in ("w1", "b1", "w2", "b2")},
        query=rng.standard_normal(16).astype(np.float32),
        position_bias=rng.standard_normal(5).astype(np.float32),
        wu=(0.3 * rng.standard_normal((16, 16))).astype(np.float32),
        bu=(0.1 * rng.standard_normal(16)).astype(np.float32),
    )


def test_item_encoder_is_minilm_mean_pool_then_the_item_head(weights: TowerWeights) -> None:
    texts = [
        listing_text("Toy Story", "Animation", {"genres": ["Animation", "Comedy"], "year": 1995}),
        listing_text("GoldenEye", "Action"),
        listing_text("A much longer title " * 8, "Drama"),
    ]
    tokens = Tokenizer(64)(texts)
    session = ort.InferenceSession(item_encoder(weights).SerializeToString())
    got = session.run(
        ["embedding"], {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
    )[0]

    minilm = ort.InferenceSession(str(minilm_onnx_path()))
    states = minilm.run(
        None,
        {
            "input_ids": tokens.input_ids,
            "attention_mask": tokens.attention_mask,
            "token_type_ids": np.zeros_like(tokens.input_ids),
        },
    )[0]
    expected = item_head(weights, mean_pool(states, tokens.attention_mask))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_an_item_vector(weights: TowerWeights) -> None:
    session = ort.InferenceSession(item_encoder(weights).SerializeToString())
    tokenizer = Tokenizer(64)
    alone = tokenizer(["Heat. Action"])
    padded = tokenizer(["Heat. Action", "a title long enough to need a longer bucket " * 3])
    run = lambda t: session.run(  # noqa: E731
        ["embedding"], {"input_ids": t.input_ids, "attention_mask": t.attention_mask}
    )[0]
    assert padded.input_ids.shape[1] > alone.input_ids.shape[1]
    np.testing.assert_allclose(run(alone)[0], run(padded)[0], atol=1e-5)


def test_user_encoder_matches_the_reference_and_ignores_padding(weights: TowerWeights) -> None:
    rng = np.random.default_rng(0)
    history = normalize(rng.standard_normal((4, 5, 16)).astype(np.float32))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], "f4")
    history = history * mask[..., None]
    session = ort.InferenceSession(user_encoder(weights).SerializeToString())
    got = session.run(["embedding"], {"history": history, "mask": mask})[0]
    np.testing.assert_allclose(got, user_tower(weights, history, mask), atol=1e-5)

    # What sits in a masked row must not matter.
    noisy = history.copy()
    noisy[1, 2:] = 5.0
    again = session.run(["embedding"], {"history": noisy, "mask": mask})[0]
    np.testing.assert_allclose(again[1], got[1], atol=1e-6)


def test_order_matters_to_the_user_tower(weights: TowerWeights) -> None:
    rng = np.random.default_rng(1)
    history = normalize(rng.standard_normal((1, 5, 16)).astype(np.float32))
    mask = np.ones((1, 5), np.float32)
    session = ort.InferenceSession(user_encoder(weights).SerializeToString())
    forward = session.run(["embedding"], {"history": history, "mask": mask})[0]
    backward = session.run(["embedding"], {"history": history[:, ::-1].copy(), "mask": mask})[0]
    assert not np.allclose(forward, backward, atol=1e-3)


def test_weights_round_trip_through_a_file(weights: TowerWeights, tmp_path) -> None:
    weights.save(tmp_path / "w.npz")
    loaded = TowerWeights.load(tmp_path / "w.npz")
    for name in TowerWeights.ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(weights, name))
