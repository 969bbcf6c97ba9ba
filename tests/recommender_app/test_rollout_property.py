"""A property of the model lifecycle, on the real query nodes, gateway, store and app: whatever
order a rollout's and a retire's steps come in (a version's index created building and filled,
user vectors written for it, promoted; an older one held back, then dropped and its user vectors
removed), and whichever request path runs between them, no request fails and no answer searches
a user's (or an item's) vector of one version against the index of another. Hypothesis drives
the steps; every answer's scores are checked against the cosines of the version it names.
"""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from nrtrec.core.settings import Settings
from nrtrec.recommender_app import create_app
from nrtrec.schemas import UserVector
from nrtrec.user_store import UserVectorStore, open_store
from tests.recommender_app.cluster import AUTH, DIM, Cluster

pytestmark = pytest.mark.integration

N_ITEMS = 40
USERS = [f"u{i}" for i in range(4)]
ATOL = 1e-4


def cosines(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))


class Lifecycle(RuleBasedStateMachine):
    """One index name per run; the model of it: which versions are building, serving, gone."""

    gateway_url: str
    app_settings: Settings

    def __init__(self) -> None:
        super().__init__()
        self.index = f"roll-{uuid.uuid4().hex[:8]}"
        app = self.app_settings.app.model_copy(
            update={"index_name": self.index, "versions_ttl_s": 0.2}
        )
        s = self.app_settings.model_copy(update={"app": app})
        self.store: UserVectorStore = open_store(s)
        self.client = TestClient(create_app(s, store=self.store))
        self.client.__enter__()
        self.gateway = httpx.Client(base_url=self.gateway_url, headers=AUTH, timeout=30)
        self.ids = [f"i{i}" for i in range(N_ITEMS)]
        self.items: dict[int, np.ndarray] = {}  # version -> vectors (rows: self.ids)
        self.users: dict[str, dict[int, np.ndarray]] = {u: {} for u in USERS}
        self.building: set[int] = set()
        self.serving: set[int] = set()
        self.held: set[int] = set()  # held back by a retire, not dropped yet
        self.next_version = 1
        self.answers = 0

    def teardown(self) -> None:
        self.gateway.delete(f"/v1/indexes/{self.index}")
        for user in USERS:
            self.store.delete(user)
        self.client.__exit__(None, None, None)
        self.gateway.close()
        self.store.close()

    # ---- the steps of a rollout and a retire --------------------------------------------------

    def _create(self, seed: int, serving: bool) -> int:
        version = self.next_version
        self.next_version += 1
        spec = {"dim": DIM, "metric": "cosine", "model_version": version, "serving": serving}
        self.gateway.put(f"/v1/indexes/{self.index}", json=spec).raise_for_status()
        vectors = np.random.default_rng(seed).standard_normal((N_ITEMS, DIM)).astype(np.float32)
        items = [{"id": i, "vector": v.tolist()} for i, v in zip(self.ids, vectors, strict=True)]
        body = {"items": items, "model_version": version}
        self.gateway.post(f"/v1/indexes/{self.index}/upsert", json=body).raise_for_status()
        self.items[version] = vectors
        (self.serving if serving else self.building).add(version)
        return version

    @initialize(seed=st.integers(0, 2**16))
    def first_version(self, seed: int) -> None:
        """The deployment as ``nrtrec up`` leaves it: one serving version, users on it."""
        version = self._create(seed, serving=True)
        for user in USERS[:3]:
            self._put_user(user, version, seed)

    @rule(seed=st.integers(0, 2**16))
    @precondition(lambda self: len(self.building) + len(self.serving) + len(self.held) < 3)
    def start_rollout(self, seed: int) -> None:
        self._create(seed, serving=False)

    @rule(data=st.data(), user=st.sampled_from(USERS), seed=st.integers(0, 2**16))
    @precondition(lambda self: self.building or self.serving)
    def write_user_vector(self, data: st.DataObject, user: str, seed: int) -> None:
        """The rollout's user pass (a building version) or the user job (a serving one)."""
        version = data.draw(st.sampled_from(sorted(self.building | self.serving)))
        self._put_user(user, version, seed)

    def _put_user(self, user: str, version: int, seed: int) -> None:
        vector = np.random.default_rng(seed + version).standard_normal(DIM).astype(np.float32)
        now = time.time_ns() // 1_000_000
        record = UserVector(
            user_id=user,
            model_version=version,
            vector=vector.tolist(),
            source_ts=now,
            updated_ts=now,
        )
        if self.store.put(record, recent_items=self.ids[:2]):
            self.users[user][version] = np.asarray(record.vector, np.float32)
            stored = self.store.get(user)
            assert stored is not None
            kept = {v.model_version for v in stored.versions}
            self.users[user] = {v: x for v, x in self.users[user].items() if v in kept}

    @rule(data=st.data())
    @precondition(lambda self: self.building)
    def promote(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.building)))
        r = self.gateway.post(f"/v1/indexes/{self.index}/promote", json={"model_version": version})
        assert r.status_code == 200 and r.json()["serving"] is True, r.text
        self.building.discard(version)
        self.serving.add(version)

    @rule(data=st.data())
    @precondition(lambda self: len(self.serving) > 1)
    def hold_back(self, data: st.DataObject) -> None:
        """A retire's first step; answers from the version stop within the app's cache TTL."""
        version = data.draw(st.sampled_from(sorted(self.serving)))
        body = {"model_version": version}
        r = self.gateway.post(f"/v1/indexes/{self.index}/hold-back", json=body)
        assert r.status_code == 200 and r.json()["serving"] is False, r.text
        self.serving.discard(version)
        self.held.add(version)

    @rule(data=st.data())
    @precondition(lambda self: self.held)
    def retire(self, data: st.DataObject) -> None:
        """The rest of it: dropped, and each user's vector of it removed where one of a newer
        serving version replaces it (``rollout.users.drop_user_vectors``)."""
        version = data.draw(st.sampled_from(sorted(self.held)))
        r = self.gateway.delete(f"/v1/indexes/{self.index}", params={"model_version": version})
        assert r.status_code == 200, r.text
        self.held.discard(version)
        for user, vectors in self.users.items():
            newer = any(v > version for v in vectors if v in self.serving)
            if version in vectors and newer and self.store.drop_version(user, version):
                vectors.pop(version)

    # ---- the request paths ----------------------------------------------------------------------

    @rule(user=st.sampled_from([*USERS, "stranger"]), k=st.integers(1, 8))
    def recommendations(self, user: str, k: int) -> None:
        answer, version = self._get(f"/v1/users/{user}/recommendations", {"k": k})
        if version is None:
            return
        query = self.users[user][version]
        self._check_scores(answer, version, cosines(query, self.items[version]))

    @rule(item=st.integers(0, N_ITEMS - 1))
    def similar(self, item: int) -> None:
        answer, version = self._get(f"/v1/items/{self.ids[item]}/similar", {"k": 5})
        if version is None:
            return
        vectors = self.items[version]
        self._check_scores(answer, version, cosines(vectors[item], vectors))

    @rule(user=st.sampled_from(USERS))
    def recent_views(self, user: str) -> None:
        r = self.client.get(f"/v1/users/{user}/recent-views")
        assert r.status_code == 200, r.text

    def _get(self, path: str, params: dict) -> tuple[dict, int | None]:
        """The answer, and its version: None (popular items) or one serving now (or held back
        by a retire since the app last listed the versions)."""
        r = self.client.get(path, params=params)
        assert r.status_code == 200, r.text
        answer = r.json()
        version = answer["model_version"]
        served = self.serving | self.held
        assert version is None or version in served, (answer, self.serving, self.building)
        return answer, version

    def _check_scores(self, answer: dict, version: int, expected: np.ndarray) -> None:
        for hit in answer["items"]:
            want = float(expected[self.ids.index(hit["id"])])
            similarity = hit.get("similarity", hit["score"])  # a popularity prior adds to it
            assert abs(similarity - want) <= ATOL, (version, hit, want)
        self.answers += 1

    @invariant()
    def something_always_serves(self) -> None:
        assert self.serving, "a retire left no serving version"


def test_no_request_fails_or_mixes_versions_through_rollouts_and_retires(
    cluster: Cluster, settings: Settings
) -> None:
    """Twice (``settings``): the app reading through the gateway, and from the shards."""
    Lifecycle.gateway_url = cluster.gateway.url
    Lifecycle.app_settings = settings
    run_state_machine_as_test(
        Lifecycle,
        settings=hypothesis_settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
