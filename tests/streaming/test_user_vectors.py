"""The user job's writer on real parts: the trained encoders of versions 1 and 2 (onnxruntime,
the files Triton serves), a real query node holding both versions' item vectors, and the real
Redis store. The record read back after every put keeps ``UserVectors``' contract: its recent
items are those its newest vector was made from."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from nrtrec.core.datasets import load_movielens
from nrtrec.core.settings import Settings
from nrtrec.inference.client import LocalEncoder
from nrtrec.query_node import create_app
from nrtrec.query_node.client import BlockingQueryClient
from nrtrec.schemas import UserVector, UserVectors
from nrtrec.streaming.history import History
from nrtrec.streaming.item_lookup import ItemVectorLookup
from nrtrec.streaming.serving_versions import ServingVersions
from nrtrec.streaming.user_vectors import UserVectorWriter
from nrtrec.user_store import UserVectorStore, open_store
from tests.query_node.helpers import serving
from tests.user_store.conftest import backend_settings

INDEX = "items"
N_ITEMS = 12


class ReadBackAfterEveryPut:
    """The real store, and the record as a reader sees it right after each put."""

    def __init__(self, store: UserVectorStore):
        self.store = store
        self.seen: list[UserVectors] = []

    def put(self, record: UserVector, **options: Any) -> bool:
        written = self.store.put(record, **options)
        stored = self.store.get(record.user_id)
        assert stored is not None
        self.seen.append(stored)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture(scope="module")
def catalogue(trained_models, test_settings: Settings) -> dict[int, dict[str, np.ndarray]]:
    """Each version's item vectors, by item id, as the item tower gives them."""
    listings = [m.listing(1_000 + i) for i, m in enumerate(load_movielens().movies.values())]
    listings = listings[:N_ITEMS]
    encoder = LocalEncoder(test_settings.inference, trained_models.repository)
    ids = [x.item_id for x in listings]
    try:
        return {
            v: dict(zip(ids, encoder.encode_listings(listings, v).vectors, strict=True))
            for v in (1, 2)
        }
    finally:
        encoder.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory, test_settings: Settings, catalogue) -> Iterator[str]:
    """A query node serving both versions' indexes of the catalogue."""
    data_dir = tmp_path_factory.mktemp("user-vectors-node")
    qn = test_settings.query_node.model_copy(update={"data_dir": data_dir})
    with serving(create_app(test_settings.model_copy(update={"query_node": qn}))) as url:
        auth = {"Authorization": f"Bearer {test_settings.token}"}
        for version, vectors in catalogue.items():
            dim = len(next(iter(vectors.values())))
            spec = {"dim": dim, "metric": "cosine", "model_version": version}
            r = httpx.put(f"{url}/v1/indexes/{INDEX}", json=spec, headers=auth)
            assert r.status_code == 201, r.text
            items = [{"id": i, "vector": v.tolist()} for i, v in vectors.items()]
            r = httpx.post(
                f"{url}/v1/indexes/{INDEX}/upsert",
                json={"items": items, "model_version": version},
                headers=auth,
            )
            assert r.status_code == 200, r.text
        yield url


def test_each_record_read_after_a_put_has_its_newest_vector_made_from_its_recent_items(
    trained_models, test_settings: Settings, stack, node: str, catalogue
):
    settings = backend_settings(
        test_settings, stack, "redis", key_prefix=f"test-{uuid.uuid4().hex[:12]}:"
    )
    store = ReadBackAfterEveryPut(open_store(settings))
    encoder = LocalEncoder(settings.inference, trained_models.repository)

    def client() -> BlockingQueryClient:
        return BlockingQueryClient(node, token=settings.token, timeout_s=10.0, retries=0)

    versions = ServingVersions(encoder, client(), INDEX, ttl_s=0)
    items = ItemVectorLookup(client(), INDEX, ttl_s=0)
    writer = UserVectorWriter(encoder, store, items, versions)  # type: ignore[arg-type]
    try:
        # Two versions written, or the order of their puts could not matter.
        assert versions.current() == [1, 2]
        ids = list(catalogue[2])
        # Three views, then three more: the second batch replaces a stored record.
        first = History(tuple((ids[j], 10_000 + 100 * j) for j in reversed(range(3))))
        second = History(tuple((ids[j], 10_000 + 100 * j) for j in reversed(range(6))))
        writer.write({"user-0": first})
        writer.write({"user-0": second})

        assert [r.recent_items for r in store.seen][-1] == second.item_ids
        for n, record in enumerate(store.seen, 1):
            newest = record.versions[0]
            history = np.stack([catalogue[newest.model_version][i] for i in record.recent_items])
            made_from = encoder.encode_users([history], newest.model_version).vectors[0]
            np.testing.assert_allclose(
                newest.vector,
                made_from,
                atol=1e-5,
                err_msg=f"put {n} of {len(store.seen)}: the newest vector (v"
                f"{newest.model_version}) is not the tower over the record's recent items "
                f"{record.recent_items}",
            )
    finally:
        items.close()
        versions.client.close()
        encoder.close()
        store.close()
