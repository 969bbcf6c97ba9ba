"""The Couchbase-protocol server of the local runner, driven with the real Couchbase SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from couchbase.auth import PasswordAuthenticator
from couchbase.cluster import Cluster
from couchbase.collection import Collection
from couchbase.exceptions import CasMismatchException, DocumentNotFoundException
from couchbase.options import ClusterOptions, ClusterTimeoutOptions, MutateInOptions, ReplaceOptions
from couchbase.subdocument import upsert as subdoc_upsert

from nrtrec.schemas.records import UserVector, UserVectors
from tests.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collection(stack: Stack) -> Iterator[Collection]:
    endpoint = stack.couchbase()
    assert endpoint.connstr.startswith("couchbase://127.0.0.1:")
    timeout = timedelta(seconds=10)
    cluster = Cluster(
        endpoint.connstr,
        ClusterOptions(
            PasswordAuthenticator(endpoint.username, endpoint.password),
            timeout_options=ClusterTimeoutOptions(bootstrap_timeout=timeout, kv_timeout=timeout),
        ),
    )
    try:
        yield cluster.bucket(endpoint.bucket).default_collection()
    finally:
        cluster.close()


def _user_vectors(user_id: str, vector: list[float]) -> UserVectors:
    return UserVectors(
        user_id=user_id,
        versions=[
            UserVector(
                user_id=user_id,
                model_version=3,
                vector=vector,
                source_ts=1_700_000_000_000,
                updated_ts=1_700_000_000_250,
            )
        ],
    )


def _key() -> str:
    return f"user-{uuid.uuid4().hex}"


def test_user_vectors_round_trip(collection: Collection) -> None:
    record = _user_vectors(_key(), [0.25, -1.5, 3.0, 0.125])
    written = collection.upsert(record.user_id, record.model_dump(mode="json"))

    got = collection.get(record.user_id)

    assert got.cas == written.cas
    assert UserVectors.model_validate(got.content_as[dict]) == record
    # A second write is seen by the next read: the server stores, not echoes.
    newer = _user_vectors(record.user_id, [9.0, 8.0])
    collection.upsert(newer.user_id, newer.model_dump(mode="json"))
    assert UserVectors.model_validate(collection.get(record.user_id).content_as[dict]) == newer


def test_replace_with_stale_cas_is_rejected(collection: Collection) -> None:
    record = _user_vectors(_key(), [1.0, 2.0, 3.0])
    stale = collection.upsert(record.user_id, record.model_dump(mode="json")).cas
    fresh = collection.upsert(record.user_id, record.model_dump(mode="json")).cas
    assert fresh != stale

    changed = _user_vectors(record.user_id, [7.0])
    with pytest.raises(CasMismatchException):
        collection.replace(
            record.user_id, changed.model_dump(mode="json"), ReplaceOptions(cas=stale)
        )
    with pytest.raises(CasMismatchException):
        collection.mutate_in(
            record.user_id, [subdoc_upsert("user_id", "someone-else")], MutateInOptions(cas=stale)
        )
    # Neither rejected write landed; the current CAS still wins.
    assert UserVectors.model_validate(collection.get(record.user_id).content_as[dict]) == record
    collection.replace(record.user_id, changed.model_dump(mode="json"), ReplaceOptions(cas=fresh))
    assert UserVectors.model_validate(collection.get(record.user_id).content_as[dict]) == changed


def test_missing_user_is_document_not_found(collection: Collection) -> None:
    with pytest.raises(DocumentNotFoundException):
        collection.get(_key())
