"""A new encoder version rolled out and the old one retired on the real stack, while clicks and
recommendation requests flow: ``nrtrec models train`` makes version 2, ``nrtrec models rollout
2`` (killed with SIGKILL once, then rerun) builds its index and every user's vector while
version 1 serves, users move to version 2 without clicking again, ``nrtrec models retire 1``
takes version 1 away (and ``nrtrec up`` does not bring it back); version 1 is then rolled out
and retired again. No request fails, and no answer searched a user's vector of one version
against the items of another: every personalized score is the cosine of the user's vector and
the item's vector of the version the answer names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Producer

from nrtrec.cli.up import ensure_models
from nrtrec.core.datasets import load_movielens
from nrtrec.core.settings import SETTINGS_FILE_ENV, Settings, write_settings_file
from nrtrec.inference.repository import ModelRepository
from nrtrec.rollout.journal import JournalFile, rollout_dir, rollout_snapshots_dir
from nrtrec.rollout.retired import RetiredVersions
from nrtrec.schemas import ClickEvent, encode
from nrtrec.schemas.partitioning import PRODUCER_CONFIG
from nrtrec.user_store import open_store
from tests.conftest import free_port
from tests.pipeline import Pipeline, running_pipeline
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

N_ITEMS = 80
QUIET = [f"quiet-{u}" for u in range(8)]  # click before the rollout only
CLICKERS = [f"clicker-{u}" for u in range(3)]  # click all along
# Two cosines this close are the same (Triton's floats against numpy's).
ATOL = 1e-4


@pytest.fixture(scope="module")
def pipeline(
    stack, test_settings: Settings, trained_models, tmp_path_factory
) -> Iterator[Pipeline]:
    """A pipeline whose Triton serves a repository holding version 1 only."""
    run_dir = tmp_path_factory.mktemp("rollout")
    repository = ModelRepository(run_dir / "models")
    repository.register(trained_models.weights[1], 1)
    triton = test_settings.triton.model_copy(
        update={
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "model_repository": repository.path,
        }
    )
    settings = test_settings.model_copy(update={"triton": triton})
    with running_pipeline(stack, settings, run_dir, app=True, own_triton=True, versions=(1,)) as p:
        yield p


def nrtrec(pipeline: Pipeline, *args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("nrtrec")), *args],
        env=cli_env(pipeline),
        capture_output=True,
        text=True,
        **options,
    )


def cli_env(pipeline: Pipeline) -> dict[str, str]:
    path = write_settings_file(pipeline.settings, pipeline.settings.run_dir / "cli-settings.json")
    return {**os.environ, SETTINGS_FILE_ENV: str(path)}


def produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = Producer({**PRODUCER_CONFIG, "bootstrap.servers": settings.kafka.bootstrap_servers})
    for key, value in records:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(30) == 0


def item_vectors(settings: Settings, ids: list[str], version: int) -> dict[str, np.ndarray]:
    r = httpx.post(
        f"{settings.gateway.url}/v1/indexes/items/items",
        json={"ids": ids, "model_version": version},
        timeout=10,
    )
    r.raise_for_status()
    return {i["id"]: np.asarray(i["vector"]) for i in r.json()["items"]}


def user_vectors(settings: Settings, users: list[str]) -> dict[str, dict[int, np.ndarray]]:
    with open_store(settings) as store:
        records = {u: store.get(u) for u in users}
    return {
        u: {v.model_version: np.asarray(v.vector) for v in r.versions} if r else {}
        for u, r in records.items()
    }


def index_versions(settings: Settings) -> dict[int, bool]:
    listing = httpx.get(f"{settings.gateway.url}/v1/indexes", timeout=10).json()
    return {i["model_version"]: i["serving"] for i in listing if i["name"] == "items"}


@dataclass
class Traffic:
    """Requests on every path of the app, and clicks, from a thread, until stopped."""

    app_url: str
    items: list[str]
    answers: list[tuple[float, str, int, dict]] = field(default_factory=list)  # t, user, status
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.app_url, timeout=10) as client:
            while not self.stop.is_set():
                n += 1
                for user in [*QUIET, *CLICKERS]:
                    self._get(client, user, f"/v1/users/{user}/recommendations?k=5")
                self._get(client, "-", f"/v1/items/{self.items[n % len(self.items)]}/similar?k=5")
                self._get(client, "-", f"/v1/users/{QUIET[n % len(QUIET)]}/recent-views")
                clicker = CLICKERS[n % len(CLICKERS)]
                item = self.items[(7 * n) % len(self.items)]
                r = client.post("/v1/events", json={"user_id": clicker, "item_id": item})
                if r.status_code != 202:
                    self.failures.append(f"click: {r.status_code} {r.text}")
                time.sleep(0.05)

    def _get(self, client: httpx.Client, user: str, path: str) -> None:
        try:
            r = client.get(path)
        except httpx.HTTPError as e:
            self.failures.append(f"{path}: {e!r}")
            return
        if r.status_code != 200:
            self.failures.append(f"{path}: {r.status_code} {r.text}")
        elif path.endswith("/recommendations?k=5"):
            self.answers.append((time.monotonic(), user, r.status_code, r.json()))


def test_roll_out_version_2_and_retire_version_1_while_traffic_flows(pipeline: Pipeline) -> None:
    settings, topics = pipeline.settings, pipeline.topics
    movies = list(load_movielens().movies.values())[:N_ITEMS]
    ids = [m.item_id for m in movies]
    produce(settings, topics["listings"], [(m.item_id, encode(m.listing(1_000))) for m in movies])
    wait_until(
        "every listing indexed in v1",
        lambda: len(item_vectors(settings, ids, 1)) == N_ITEMS,
        120,
    )
    rng = np.random.default_rng(3)
    clicks = [
        ClickEvent(
            event_id=f"c-{u}-{j}", user_id=u, item_id=ids[int(i)], action="view", ts=10_000 + j
        )
        for u in [*QUIET, *CLICKERS]
        for j, i in enumerate(rng.choice(N_ITEMS, size=5, replace=False))
    ]
    produce(settings, topics["clicks"], [(c.user_id, encode(c)) for c in clicks])
    wait_until(
        "every user has a v1 vector",
        lambda: all(1 in v for v in user_vectors(settings, [*QUIET, *CLICKERS]).values()),
        120,
    )

    # Version 2: trained for real, registered in this Triton's repository, not served yet.
    trained = nrtrec(pipeline, "models", "train", "--epochs", "1", "--seed", "7", timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert ModelRepository(settings.triton.model_repository).versions() == [1, 2]

    v1_items = item_vectors(settings, ids, 1)
    v1_users = user_vectors(settings, QUIET)
    traffic = Traffic(pipeline.app_url, ids)
    thread = threading.Thread(target=traffic.run, daemon=True)
    thread.start()
    try:
        # Killed mid-way (once its bulk embedding is done), then rerun: it resumes.
        env = cli_env(pipeline)
        command = [str(Path(sys.executable).with_name("nrtrec")), "models", "rollout", "2"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        journal = lambda: JournalFile(settings, 2).journal  # noqa: E731 - read afresh each time
        wait_until("the rollout's bulk step done", lambda: journal().has("bulk"), 300)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        assert not journal().has("promoted")
        assert index_versions(settings) == {1: True, 2: False}, "v2 served before its rollout"
        resumed = nrtrec(pipeline, "models", "rollout", "2", timeout=600)
        assert resumed.returncode == 0, resumed.stderr + resumed.stdout
        assert "resuming the rollout of v2" in resumed.stdout + resumed.stderr
        assert '"complete": true' in resumed.stdout
        assert index_versions(settings) == {1: True, 2: True}

        # The quiet users have not clicked since: the rollout gave them their v2 vectors.
        v2_users = user_vectors(settings, QUIET)
        assert all(set(v) == {1, 2} for v in v2_users.values()), v2_users
        v2_items = item_vectors(settings, ids, 2)
        assert len(v2_items) == N_ITEMS

        def quiet_on_v2() -> bool:
            recent = [a for t, u, _, a in traffic.answers[-3 * len(QUIET) :] if u in QUIET]
            return bool(recent) and all(
                a["model_version"] == 2 and a["source"] == "personalized" for a in recent
            )

        wait_until("the quiet users answered from v2", quiet_on_v2, 60)

        unknown = nrtrec(pipeline, "models", "rollout", "9", timeout=120)
        assert unknown.returncode == 1 and "version 9 is not registered" in unknown.stderr
        # Where a retire killed mid-way leaves things: v1 unloaded from Triton, its index and
        # user vectors still there. The retire run then finishes the job.
        unloaded = nrtrec(pipeline, "models", "unload", "1", timeout=120)
        assert unloaded.returncode == 0 and '"served": [2]' in unloaded.stdout, unloaded.stderr
        retired = nrtrec(pipeline, "models", "retire", "1", timeout=300)
        assert retired.returncode == 0, retired.stderr + retired.stdout
        retired_at = time.monotonic()
        assert index_versions(settings) == {2: True}
        last = nrtrec(pipeline, "models", "retire", "2", timeout=120)
        assert last.returncode == 1 and "the only serving version" in last.stderr, last.stderr
        assert all(set(v) == {2} for v in user_vectors(settings, QUIET).values())
        wait_until(
            "answers after the retire",
            lambda: any(t > retired_at + 3 for t, *_ in traffic.answers),
            60,
        )
        # `nrtrec up` again: a retired version is neither loaded on Triton nor indexed again.
        assert ensure_models(settings) == [2]
        assert index_versions(settings) == {2: True}

        # Rolled out again (a retire undone) and retired again: every step is redone from the
        # start, and the second retire leaves no journal or snapshots of it behind.
        again = nrtrec(pipeline, "models", "rollout", "1", timeout=600)
        assert again.returncode == 0, again.stderr + again.stdout
        assert "resuming" not in again.stdout + again.stderr
        assert '"complete": true' in again.stdout
        assert index_versions(settings) == {1: True, 2: True}
        assert all(set(v) == {1, 2} for v in user_vectors(settings, QUIET).values())
        assert 1 not in RetiredVersions(settings).versions()
        retired = nrtrec(pipeline, "models", "retire", "1", timeout=300)
        assert retired.returncode == 0, retired.stderr + retired.stdout
        assert index_versions(settings) == {2: True}
        assert RetiredVersions(settings).versions() == {1}
        assert not rollout_dir(settings, 1).exists()
        assert not rollout_snapshots_dir(settings, 1).exists()
        assert rollout_snapshots_dir(settings, 2).exists()
    finally:
        traffic.stop.set()
        thread.join(30)

    assert traffic.failures == []
    vectors = {1: (v1_users, v1_items), 2: (v2_users, v2_items)}
    personalized = 0
    for t, user, _, answer in traffic.answers:
        version = answer["model_version"]
        if version is not None:
            assert answer["source"] in ("personalized", "older-version"), answer
        if user not in QUIET or version is None:
            continue
        users, items = vectors[version]
        query = users[user][version]
        for hit in answer["items"]:
            item = items[hit["id"]]
            cosine = float(query @ item / (np.linalg.norm(query) * np.linalg.norm(item)))
            # With a popularity prior (a user past the session gap) the score adds to it.
            similarity = hit.get("similarity", hit["score"])
            assert abs(similarity - cosine) <= ATOL, (user, version, hit, cosine)
        personalized += 1
        if t > retired_at + 3:
            assert version == 2, answer
    assert personalized > 0
    # The clickers' vectors of v2 come from the user job too, once v2 was promoted.
    assert all(2 in v for v in user_vectors(settings, CLICKERS).values())
